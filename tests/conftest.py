"""Shared fixtures. Each part of chatcore keeps its fixtures in its own block below."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Hypothesis' per-example deadline measures the machine, not the code: CI and development
# machines here are shared and noisy, so examples are bounded by pytest-timeout instead.
settings.register_profile("chatcore", deadline=None)
settings.load_profile("chatcore")

# --------------------------------------------------------------------------------------------
# Hot path (chatcore.codec): the pure-Python specification and its compiled twin.
#
# ``codec`` runs a test once per implementation (ids "python" and "cython"). The cython run is
# skipped when chatcore._speedups was not built, unless CHATCORE_REQUIRE_EXTENSIONS is set
# (CI): then a missing extension fails every cython test instead of hiding behind a skip.
# --------------------------------------------------------------------------------------------
from chatcore.codec import codec_c, codec_py

REQUIRE_EXTENSIONS = bool(os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"))

_CYTHON_MISSING = codec_c is None and not REQUIRE_EXTENSIONS


@pytest.fixture(scope="session", params=[
    pytest.param("python", id="python"),
    pytest.param("cython", id="cython", marks=pytest.mark.skipif(
        _CYTHON_MISSING, reason="chatcore._speedups is not built")),
])
def codec(request):
    """One implementation module of the hot path: ``chatcore._codec_py`` or ``_speedups``."""
    if request.param == "python":
        return codec_py
    if codec_c is None:
        pytest.fail("CHATCORE_REQUIRE_EXTENSIONS is set but chatcore._speedups is not built "
                    "(run `pip install -e .` with a compiler and Cython)", pytrace=False)
    return codec_c

# -------------------------------------------------------------------------- end of hot path --


# --------------------------------------------------------------------------------------------
# Server (chatcore.serve): real server processes on 127.0.0.1 and ephemeral ports.
# --------------------------------------------------------------------------------------------
from chatcore.client import ChatClient  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402

# Fast pings so RTT values appear within a test's time; generous idle timeout; loopback
# exempt from flood control and the per-address limit (tests of those pass
# ``--limit-exempt ""``: the last flag wins).
TEST_SERVER_FLAGS = ("--ping-interval-seconds", "0.2", "--idle-timeout-seconds", "10",
                     "--log-level", "DEBUG", "--limit-exempt", "127.0.0.0/8,::1")


@pytest.fixture
def start_server():
    """Start servers with extra flags; all are stopped (SIGTERM) after the test."""
    started = []

    def start(*flags, **kwargs) -> ServerProcess:
        server = ServerProcess(*TEST_SERVER_FLAGS, *flags, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


@pytest.fixture
def connect(server):
    """``connect(name)`` -> a handshaken ChatClient on ``server``; closed after the test."""
    clients = []

    def make(name: str = "", **kwargs) -> ChatClient:
        client = ChatClient("127.0.0.1", server.port, timeout=10, **kwargs)
        clients.append(client)
        client.connect(name)
        return client

    yield make
    for client in clients:
        client.close()

# --------------------------------------------------------------------------- end of server --


# --------------------------------------------------------------------------------------------
# Redis (chatcore.broker, chatcore.cluster): real redis-server processes on 127.0.0.1.
#
# ``redis_server`` is one instance for the whole session; tests that stop or reconfigure Redis
# start their own with ``start_redis``. Without redis-server installed these tests skip, except
# under CI (CI=true), where .ci/run installs it and a missing one must fail.
# --------------------------------------------------------------------------------------------
import itertools  # noqa: E402

from tests.redisproc import REDIS_SERVER, RedisProcess  # noqa: E402

_needs_redis = pytest.mark.skipif(REDIS_SERVER is None and not os.environ.get("CI"),
                                  reason="redis-server is not installed")


def _require_redis() -> None:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)", pytrace=False)


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session (no persistence); stopped at the end."""
    _require_redis()
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture
def start_redis():
    """Start dedicated redis-servers (for tests that stop them); all stopped after the test."""
    _require_redis()
    started = []

    def start(*args: str) -> RedisProcess:
        server = RedisProcess(*args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


_cluster_numbers = itertools.count(1)


@pytest.fixture
def cluster_name() -> str:
    """A cluster name of this test alone: keys and channels of other tests never mix in."""
    return f"test{os.getpid()}-{next(_cluster_numbers)}"


# Cluster nodes announce fast in tests, so joins and deaths show within a test's time.
ANNOUNCE_SECONDS = 0.3
SILENCE_SECONDS = 1.0


@pytest.fixture
def start_node(start_server, redis_server, cluster_name):
    """``start_node(name, *flags)``: a server in this test's cluster (on the session's Redis
    unless ``redis_url`` says otherwise), once it is connected to Redis."""

    def start(name: str, *flags: str, redis_url: str | None = None, **kwargs) -> ServerProcess:
        node = start_server("--redis", redis_url or redis_server.url,
                            "--cluster-name", cluster_name, "--server-name", name,
                            "--node-announce-seconds", str(ANNOUNCE_SECONDS),
                            "--node-silence-seconds", str(SILENCE_SECONDS), *flags, **kwargs)
        node.wait_for_log("connected to Redis")
        return node

    return start


@pytest.fixture
def clients():
    """``clients(node, name="")`` -> a handshaken ChatClient on that node; closed after."""
    opened = []

    def connect(node: ServerProcess, name: str = "") -> ChatClient:
        client = ChatClient("127.0.0.1", node.port, timeout=10)
        opened.append(client)
        client.connect(name)
        return client

    yield connect
    for client in opened:
        client.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if {"redis_server", "start_redis"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(_needs_redis)

# ---------------------------------------------------------------------------- end of redis --


# --------------------------------------------------------------------------------------------
# TLS: a throwaway CA and a server certificate for 127.0.0.1 and localhost, made by trustme at
# test time (no private key is committed); ``server_flags`` are the flags that use them.
# --------------------------------------------------------------------------------------------
import dataclasses  # noqa: E402


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    ca: str          # PEM: the CA that signed the server certificate (what clients trust)
    cert: str        # PEM: the server certificate chain
    key: str         # PEM: its private key

    @property
    def server_flags(self) -> tuple:
        return ("--tls-port", "0", "--tls-cert", self.cert, "--tls-key", self.key)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TlsFiles:
    import trustme
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(str(directory / "ca.pem"), str(directory / "cert.pem"),
                     str(directory / "key.pem"))
    ca.cert_pem.write_to_path(files.ca)
    issued.private_key_pem.write_to_path(files.key)
    with open(files.cert, "wb") as f:
        for pem in issued.cert_chain_pems:
            f.write(pem.bytes())
    return files

# ------------------------------------------------------------------------------ end of TLS --


# --------------------------------------------------------------------------------------------
# IRC front end: a server with --irc-port 0 and raw IRC clients on it.
# --------------------------------------------------------------------------------------------
from tests.irchelpers import RawIrc, irc_port  # noqa: E402


@pytest.fixture
def start_irc_server(start_server):
    """Start a server with an IRC listener (and extra flags); ``irc_port`` is set on it."""
    def start(*flags) -> ServerProcess:
        server = start_server("--irc-port", "0", *flags)
        server.irc_port = irc_port(server)
        return server
    return start


@pytest.fixture
def irc_server(start_irc_server) -> ServerProcess:
    return start_irc_server()


@pytest.fixture
def irc_on():
    """``irc_on(server, nick)`` -> a RawIrc client on ``server`` (registered unless
    ``nick`` is None); closed after the test."""
    clients = []

    def make(server, nick: str | None = None, caps: str = "") -> RawIrc:
        client = RawIrc(server.irc_port)
        clients.append(client)
        if nick is not None:
            client.register(nick, caps)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def irc(irc_server, irc_on):
    """``irc(nick)`` -> a registered RawIrc client (``irc()``: connected only)."""
    return lambda nick=None, caps="": irc_on(irc_server, nick, caps)


@pytest.fixture
def native(irc_server):
    """``native(name)`` -> a handshaken native ChatClient on the IRC test server."""
    clients = []

    def make(name: str = "") -> ChatClient:
        client = ChatClient("127.0.0.1", irc_server.port, timeout=10)
        clients.append(client)
        client.connect(name)
        return client

    yield make
    for client in clients:
        client.close()

# ------------------------------------------------------------------------------ end of IRC --


# --------------------------------------------------------------------------------------------
# CLI (chatcore.cli): client processes in pseudo-terminals (tests/cli_helpers.py).
# --------------------------------------------------------------------------------------------

@pytest.fixture
def terminals():
    """``terminals(term)`` keeps a started Terminal; every one is closed after the test."""
    opened = []

    def track(term):
        opened.append(term)
        return term

    yield track
    for term in opened:
        term.close()

# ------------------------------------------------------------------------------ end of CLI --
