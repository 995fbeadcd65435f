"""A name claim is one Redis round trip (real server processes, a real redis-server): the
claim script writes the arriving user's records too, so a Hello costs one script; names stay
unique when several nodes claim them at once, a refused claim writes nothing, and a killed
node's names (and records) are taken over within the default lease."""
from __future__ import annotations

import signal
import socket
import time

import hiredis

from chatcore import events as ev
from chatcore.broker import RedisAddress, run_blocking
from chatcore.client import ChatClient
from chatcore.cluster import key_prefix
from chatcore.errors import ChatError, ErrorCode
from chatcore.protocol import PROTOCOL_VERSION, encode_event
from tests.test_cluster_names import welcomed_when_free
from tests.test_cluster_nodes import eventually


class Monitor:
    """Redis's MONITOR on a raw connection: every command Redis runs, as it runs it."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.reader = hiredis.Reader()
        self.sock.sendall(hiredis.pack_command(("MONITOR",)))
        assert self._next(10) == b"OK"

    def _next(self, timeout: float):
        deadline = time.monotonic() + timeout
        while (reply := self.reader.gets()) is False:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "Redis closed the monitor"
            self.reader.feed(data)
        return reply

    def lines_until(self, needle: str, timeout: float = 10.0) -> list[str]:
        """Monitored commands up to and including the first one containing ``needle``."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._next(deadline - time.monotonic()).decode("utf-8", "replace")
            lines.append(line)
            if needle in line:
                return lines

    def close(self) -> None:
        self.sock.close()


def redis_command(url: str, *command):
    return run_blocking(RedisAddress.parse(url), [command], 5.0)[0]


def test_a_hello_is_one_script_that_writes_the_records_too(redis_server, start_node,
                                                            cluster_name):
    start_node("alpha")
    prefix = key_prefix(cluster_name)
    monitor = Monitor(redis_server.port)
    try:
        with ChatClient("127.0.0.1", start_node("beta").port, timeout=10) as zed:
            zed.connect("Zed")
            # A marker after the Welcome: everything the claim cost was monitored before it.
            redis_command(redis_server.url, "ECHO", "after-zed")
            lines = monitor.lines_until("after-zed")
            record = redis_command(redis_server.url, "HGET", f"{prefix}:userinfo", "zed")
            assert b'"node": "beta"' in record and b'"name": "Zed"' in record
            instance = redis_command(redis_server.url, "GET", f"{prefix}:name:zed")
            assert redis_command(redis_server.url, "HEXISTS",
                                 f"{prefix}:sessions:{instance.decode()}", "zed") == 1
    finally:
        monitor.close()
    def about_zed(line: str) -> bool:
        return ":zed" in line or '"zed"' in line

    sent = [line.split('"')[1] for line in lines if about_zed(line) and "[0 lua]" not in line]
    # One EVAL (claim + records) and the SUBSCRIBE of the user's channel, in one round trip.
    assert sorted(sent) == ["EVAL", "SUBSCRIBE"], sent
    scripted = {line.split('"')[1] for line in lines if about_zed(line) and "[0 lua]" in line}
    assert {"SET", "HSET", "ZADD", "SADD"} <= scripted, scripted


def hello_at_once(ports: list[int], names: list[str]) -> list[ChatClient]:
    """One client per port, their Hellos (``names``, one per port) written back to back."""
    racers = []
    for port in ports:
        client = ChatClient("127.0.0.1", port, timeout=10)
        client._open_socket()
        racers.append(client)
    for client, name in zip(racers, names):
        client.send_raw(encode_event(ev.Hello(PROTOCOL_VERSION, name, "race", 1)))
    return racers


def test_names_claimed_on_three_nodes_at_once_go_to_one_user_each(start_node, clients):
    nodes = [start_node(name) for name in ("alpha", "beta", "gamma")]
    names = [f"racer{i}" for i in range(15)]
    winners = {}
    opened = []
    for name in names:
        # The name in a different case per node: the claim is of the casefolded name.
        racers = hello_at_once([node.port for node in nodes],
                               [name, name.upper(), name.title()])
        opened += racers
        outcomes = [c.wait_for(lambda e: getattr(e, "request_id", 0) == 1) for c in racers]
        welcomed = [i for i, o in enumerate(outcomes) if isinstance(o, ev.Welcome)]
        refused = [o for o in outcomes if isinstance(o, ev.Error)]
        assert len(welcomed) == 1, outcomes
        assert {e.code for e in refused} == {ErrorCode.NAME_TAKEN}
        winners[name] = ("alpha", "beta", "gamma")[welcomed[0]]
    viewer = clients(nodes[0], "viewer")
    for name, node_name in winners.items():
        assert viewer.whois(name).server == node_name          # the winner's record only
    listed = [u for u in viewer.iter_users(pattern="racer*")]
    assert sorted(u.name.casefold() for u in listed) == sorted(names)
    assert {u.name.casefold(): u.server for u in listed} == winners
    for client in opened:
        client.close()


def test_a_refused_claim_leaves_the_holders_records(redis_server, start_node, clients,
                                                    cluster_name):
    alpha, beta = start_node("alpha"), start_node("beta")
    clients(alpha, "yara")
    prefix = key_prefix(cluster_name)
    before = redis_command(redis_server.url, "HGET", f"{prefix}:userinfo", "yara")
    try:
        clients(beta, "YARA")
        raise AssertionError("a taken name was granted")
    except ChatError as refused:
        assert refused.code == ErrorCode.NAME_TAKEN
    assert redis_command(redis_server.url, "HGET", f"{prefix}:userinfo", "yara") == before
    assert b'"node": "alpha"' in before


def test_a_killed_node_frees_its_names_within_the_default_lease(start_node, clients):
    # The defaults (announce 2 s, silence 6 s): the aim is at most 10 s.
    defaults = ("--node-announce-seconds", "2", "--node-silence-seconds", "6")
    alpha, beta = start_node("alpha", *defaults), start_node("beta", *defaults)
    clients(beta, "wren")
    viewer = clients(alpha, "viewer")
    assert viewer.whois("wren").server == "beta"
    beta.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wren, _ = welcomed_when_free(alpha, "wren", timeout=15)
    seconds = time.monotonic() - killed_at
    assert seconds <= 10, seconds
    # The new holder's records replaced the dead node's at once (the claim wrote them).
    assert viewer.whois("wren").server == "alpha"
    eventually(lambda: [u.server for u in viewer.iter_users(pattern="wren")],
               lambda servers: servers == ["alpha"])
    wren.close()
