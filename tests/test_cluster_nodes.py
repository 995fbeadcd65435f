"""Cluster nodes with real server processes and a real redis-server: the server list on every
node, node RTT through the broker, nodes dropped after the silence, start-up errors."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from chatcore import events as ev
from tests.conftest import ANNOUNCE_SECONDS, SILENCE_SECONDS
from tests.serverproc import ROOT


def eventually(probe, condition, timeout: float = 10.0):
    """Ask ``probe()`` until ``condition(answer)`` holds: another process's announcements
    give this process nothing to wait on but the answers themselves."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if condition(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"still {answer!r} after {timeout}s")
        time.sleep(0.05)


def servers_by_name(client) -> dict[str, ev.ServerInfo]:
    return {s.name: s for s in client.list_servers().servers}


def test_every_node_lists_every_node_with_users_and_rtt(start_node, clients):
    nodes = {name: start_node(name) for name in ("alpha", "beta", "gamma")}
    viewers = {}
    for count, (name, node) in enumerate(nodes.items()):    # 1, 2 and 3 users
        viewers[name] = clients(node, f"viewer-{name}")
        for i in range(count):
            clients(node, f"{name}-user{i}")
    expected_users = {"alpha": 1, "beta": 2, "gamma": 3}
    for name, viewer in viewers.items():
        listed = eventually(
            lambda: viewer.list_servers().servers,
            lambda servers: {s.name: s.users for s in servers} == expected_users
            and all(s.rtt_us != ev.UNKNOWN_RTT for s in servers))
        assert listed[0].name == name and listed[0].rtt_us == 0     # itself first
        for entry in listed:
            assert (entry.host, entry.port) == ("127.0.0.1", nodes[entry.name].port)
        assert all(0 < s.rtt_us < 5_000_000 for s in listed[1:])
        assert [s.name for s in listed[1:]] == sorted(set(nodes) - {name})


def test_a_killed_node_is_dropped_after_the_silence(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    viewer = clients(alpha)
    eventually(lambda: servers_by_name(viewer), lambda servers: "beta" in servers)
    beta.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    alpha.wait_for_log("node 'beta' silent", timeout=10)
    # Dropped after the silence, noticed on an announcement tick: wide margin for the machine.
    assert time.monotonic() - killed_at <= 10 * (SILENCE_SECONDS + ANNOUNCE_SECONDS)
    assert list(servers_by_name(viewer)) == ["alpha"]


def test_a_node_that_stops_cleanly_leaves_at_once(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    viewer = clients(alpha)
    eventually(lambda: servers_by_name(viewer), lambda servers: "beta" in servers)
    assert beta.stop() == 0
    alpha.wait_for_log("node 'beta' left", timeout=5)
    assert list(servers_by_name(viewer)) == ["alpha"]


def test_a_killed_node_restarted_at_its_address_takes_its_name_back(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    port = beta.port
    beta.signal(signal.SIGKILL)
    beta.proc.wait()
    again = start_node("beta", port=port)          # before its key expired
    viewer = clients(alpha)
    eventually(lambda: servers_by_name(viewer),
               lambda servers: "beta" in servers and servers["beta"].port == again.port)


def test_the_second_node_of_a_name_exits_1_saying_why(start_node, redis_server,
                                                      cluster_name):
    start_node("alpha")
    result = run_server("--redis", redis_server.url, "--cluster-name", cluster_name,
                        "--server-name", "alpha")
    assert result.returncode == 1
    assert "server name 'alpha' is in use by the live node at 127.0.0.1:" in result.stderr


def test_redis_unreachable_at_start_exits_1_naming_the_url():
    result = run_server("--redis", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr


def test_bad_cluster_settings_are_refused():
    for flags, words in ((("--redis", "http://x"), "must start with redis://"),
                         (("--advertise", "0.0.0.0:7000"), "wildcard"),
                         (("--advertise", "nohost"), "HOST:PORT"),
                         (("--node-silence-seconds", "1", "--node-announce-seconds", "1"),
                          "twice")):
        result = run_server(*flags)
        assert result.returncode == 2, flags
        assert words in result.stderr


def test_nodes_find_each_other_again_after_redis_restarts(start_redis, start_node, clients):
    redis = start_redis()
    alpha = start_node("alpha", redis_url=redis.url)
    beta = start_node("beta", redis_url=redis.url)
    viewer = clients(alpha)
    eventually(lambda: servers_by_name(viewer), lambda servers: "beta" in servers)
    redis.stop()
    alpha.wait_for_log("Redis at", timeout=10)
    # Local chat goes on without Redis.
    assert viewer.ping() < 5
    redis.start()
    alpha.wait_for_log("reachable again", timeout=15)
    beta.wait_for_log("reachable again", timeout=15)
    eventually(lambda: servers_by_name(viewer), lambda servers: "beta" in servers
               and servers["beta"].rtt_us != ev.UNKNOWN_RTT)
    assert sum("is unreachable" in line for line in alpha.lines) == 1


def test_a_wildcard_bind_advertises_a_real_address(start_server, clients):
    node = start_server("--host", "0.0.0.0")
    [entry] = clients(node).list_servers().servers
    assert entry.host not in ("0.0.0.0", "") and entry.port == node.port
    named = start_server("--advertise", "chat.example.org:7000")
    [entry] = clients(named).list_servers().servers
    assert (entry.host, entry.port) == ("chat.example.org", 7000)


def test_a_server_without_redis_never_imports_hiredis():
    code = ("import sys, chatcore.serve, chatcore.server, chatcore.config as c; "
            "c.load(None, {}); assert 'hiredis' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=30)


def run_server(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "server.py", "--port", "0", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
