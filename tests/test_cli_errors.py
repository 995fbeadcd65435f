"""Connection errors a person understands: each with its one-line message and exit status,
in the interactive client (a pseudo-terminal) and in scriptable mode (stderr)."""
from __future__ import annotations

import socket

import pytest

from chatcore.cli import exitcodes
from tests.cli_helpers import FakeServer, Terminal, client_env, run_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake_servers():
    started: list[FakeServer] = []

    def start(handle) -> FakeServer:
        server = FakeServer(handle)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def quick(tmp_path):
    """A config file with short connect and handshake timeouts."""
    path = tmp_path / "client.toml"
    path.write_text("connect_timeout_seconds = 1\nhandshake_timeout_seconds = 1\n")
    return str(path)


def says_nothing(sock) -> None:
    while sock.recv(4096):
        pass


def answers_http(sock) -> None:
    sock.recv(4096)
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                 b"Connection: close\r\n\r\nBad Request")


def interactive_error(*args: str) -> tuple[int, str]:
    term = Terminal(*args, "--name", "alice", env=client_env())
    try:
        status = term.wait_exit(timeout=30)
        return status, term.text
    finally:
        term.close()


def test_a_port_that_accepts_and_says_nothing(fake_servers, quick):
    fake = fake_servers(says_nothing)
    result = run_client("--port", str(fake.port), "--name", "alice", "--config", quick)
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr == (f"chatcore-client: 127.0.0.1:{fake.port} accepted the connection "
                             f"but did not answer the handshake within 1s (is it a chatcore "
                             f"server?)\n")
    status, text = interactive_error("--port", str(fake.port), "--config", quick)
    assert status == exitcodes.UNAVAILABLE
    assert f"127.0.0.1:{fake.port} accepted the connection but did not answer" in text


def test_an_http_server(fake_servers, quick):
    fake = fake_servers(answers_http)
    result = run_client("--port", str(fake.port), "--name", "alice", "--config", quick)
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr == (f"chatcore-client: 127.0.0.1:{fake.port} is not a chatcore "
                             f"server (it sent `HTTP/1.1 400 Bad Request`)\n")
    status, text = interactive_error("--port", str(fake.port), "--config", quick)
    assert status == exitcodes.UNAVAILABLE
    assert "is not a chatcore server (it sent `HTTP/1.1 400 Bad Request`)" in text


def test_a_connect_that_times_out(quick):
    # A listener that never accepts: once its queue is full the kernel drops new SYNs.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(16):
                filler = socket.socket()
                filler.settimeout(0.5)
                fillers.append(filler)
                try:
                    filler.connect(("127.0.0.1", port))
                except TimeoutError:
                    break                       # the queue is full
            else:
                pytest.skip("the kernel kept accepting connections into a full queue")
            result = run_client("--port", str(port), "--name", "alice", "--config", quick)
        finally:
            for filler in fillers:
                filler.close()
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr == (f"chatcore-client: cannot connect to 127.0.0.1:{port}: "
                             f"no answer within 1s\n")


def test_no_such_host():
    result = run_client("--host", "no-such-host.invalid", "--name", "alice")
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr in ("chatcore-client: no such host no-such-host.invalid\n",
                             # a machine without any resolver answers "try again" instead
                             "chatcore-client: cannot look up the host no-such-host.invalid: "
                             "Temporary failure in name resolution\n")
    status, text = interactive_error("--host", "no-such-host.invalid")
    assert status == exitcodes.UNAVAILABLE
    assert "no-such-host.invalid" in text and "Unknown error" not in text


def test_local_port_in_use(server):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_client("--port", str(server.port), "--name", "alice",
                            "--local-port", str(port))
        status, text = interactive_error("--port", str(server.port), "--local-port",
                                         str(port))
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr == (f"chatcore-client: local port {port} is in use (choose another "
                             f"--local-port)\n")
    assert status == exitcodes.UNAVAILABLE
    assert f"local port {port} is in use" in text


def test_local_port_used_by_another_connection_to_the_same_server(server):
    # Bound (SO_REUSEADDR lets the bind pass) but the connect finds the 4-tuple taken.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("", 0))
        port = other.getsockname()[1]
        other.connect(("127.0.0.1", server.port))
        result = run_client("--port", str(server.port), "--name", "alice",
                            "--local-port", str(port))
    assert result.returncode == exitcodes.UNAVAILABLE
    assert f"local port {port} is in use" in result.stderr
