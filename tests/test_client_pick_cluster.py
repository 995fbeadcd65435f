"""The CLI client on a cluster (real server processes, a real redis-server): it learns the
nodes from the first one it reaches and moves to a clearly closer one; when its node is
killed it fails over to the next-best and chats on, with its name, rooms and chats.

Each node advertises the address of a delaying proxy in front of it (``--advertise``), so
the server list hands out "near" and "far" nodes."""
from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.delayproxy import DelayProxy
from tests.pick_helpers import json_clients, pick_config  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def far_nodes(start_node):
    """``far_nodes(name, delay_seconds)``: a node behind a delaying proxy, advertising the
    proxy's address; returns (node, proxy)."""
    proxies = []

    def start(name: str, delay_seconds: float = 0.0):
        port = _free_port()
        proxy = DelayProxy(port, delay_seconds)
        proxies.append(proxy)
        node = start_node(name, "--advertise", f"127.0.0.1:{proxy.port}", port=port)
        return node, proxy

    yield start
    for proxy in proxies:
        proxy.close()


def test_it_learns_the_nodes_from_its_server_and_moves_to_a_closer_one(
        far_nodes, json_clients, tmp_path):
    alpha, alpha_proxy = far_nodes("alpha", 0.1)
    beta, beta_proxy = far_nodes("beta")
    bob = json_clients("--name", "bob", "--port", str(alpha.port))
    bob.record("connected")
    alice = json_clients("--name", "alice", "--config", pick_config(tmp_path),
                         "--port", str(alpha_proxy.port), "--room", "lobby")
    assert alice.record("connected")["server"] == "alpha"
    alice.record("joined", name="alice")
    alice.write("/msg bob hello from alpha")
    bob.record("message", text="hello from alpha")
    moved = alice.record("moved", timeout=30)
    assert (moved["server"], moved["port"], moved["why"]) == ("beta", beta_proxy.port,
                                                              "closer")
    assert moved["old_server"] == "alpha"
    assert moved["rtt_ms"] * 1.5 < moved["old_rtt_ms"]
    alice.back_in("lobby")
    alice.write("/msg bob hello from beta")
    bob.record("message", text="hello from beta")
    closed = [line for line in bob.lines if '"chat_closed"' in line]
    # Resumed across nodes, the chat goes on unseen; a Quit and a Hello close and reopen it.
    assert not closed or "moving to a closer server" in closed[0]
    alice.write("/servers")
    rows = {s["name"]: s for s in alice.record("servers")["servers"]}
    assert set(rows) == {"alpha", "beta"}
    assert rows["beta"]["current"] and rows["alpha"]["rtt_ms"] >= 200
    assert rows["alpha"]["node_rtt_ms"] is not None            # beta's RTT to alpha


def test_a_killed_node_fails_over_to_the_next_best_and_chats_on(
        far_nodes, json_clients, tmp_path):
    alpha, alpha_proxy = far_nodes("alpha")
    beta, beta_proxy = far_nodes("beta", 0.01)
    gamma, gamma_proxy = far_nodes("gamma", 0.05)
    bob = json_clients("--name", "bob", "--port", str(gamma.port))
    bob.record("connected")
    alice = json_clients("--name", "alice", "--config", pick_config(tmp_path),
                         "--server", f"127.0.0.1:{alpha_proxy.port}", "--room", "lobby")
    assert alice.record("connected")["server"] == "alpha"
    alice.record("joined", name="alice")
    alice.write("/chat bob")
    alice.record("chat", to="bob")
    alice.write("before")
    alice.record("sent", text="before")
    assert bob.record("message", text="before")["from"] == "alice"
    time.sleep(1.0)                         # a few probe rounds: beta and gamma measured

    alpha.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    moved = alice.record("moved", timeout=30)
    assert (moved["why"], moved["server"], moved["name"]) == ("lost", "beta", "alice")
    assert moved["rooms"] == ["lobby"] and moved["chats"] == ["bob"]
    alice.back_in("lobby")
    alice.write("after")
    alice.record("sent", text="after")
    message = bob.record("message", text="after")
    print(f"failover: SIGKILL -> delivered on beta in {time.monotonic() - killed_at:.2f}s")
    assert message["from"] == "alice"
    assert not [line for line in alice.lines if '"not_delivered"' in line]
