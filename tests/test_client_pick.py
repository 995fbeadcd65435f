"""The CLI client choosing among plain servers (real server processes; a delaying proxy
makes one of them "far"): the lowest RTT at start, a move only after the sustained period,
no move on a short spike, /servers, and a single server as before."""
from __future__ import annotations

import signal
import socket
import time

import pytest

from chatcore import events as ev
from chatcore.cli import exitcodes
from chatcore.client import ChatClient
from tests.cli_helpers import ScriptClient, login, run_client
from tests.pick_helpers import SUSTAIN_SECONDS, json_clients, pick_config, proxies  # noqa: F401

pytestmark = pytest.mark.timeout(90)

FAR_SECONDS = 0.1                   # each way: a far server's RTT is 200 ms more


def at(proxy_or_server) -> str:
    return f"127.0.0.1:{proxy_or_server.port}"


def test_it_connects_to_the_lowest_rtt_server_whatever_the_order(start_server, proxies,
                                                                 json_clients, tmp_path):
    near, far = start_server(), start_server()
    far_proxy = proxies(far, FAR_SECONDS)
    alice = json_clients("--name", "alice", "--config", pick_config(tmp_path),
                         "--server", at(far_proxy), "--server", at(near))
    measured = alice.record("measured")
    assert measured["using"] == at(near)
    rtts = {s["port"]: s["rtt_ms"] for s in measured["servers"]}
    assert rtts[far_proxy.port] >= 2 * FAR_SECONDS * 1000 > rtts[near.port]
    connected = alice.record("connected")
    assert (connected["port"], connected["name"]) == (near.port, "alice")
    assert far.wait_for_log("closing (peer closed its side)")     # the probe: no name taken
    assert "alice" not in far.log


def test_a_single_server_without_a_list_is_used_as_before(server, json_clients, tmp_path):
    alice = json_clients("--name", "alice", "--port", str(server.port),
                         "--config", pick_config(tmp_path))
    assert alice.record("connected")["port"] == server.port
    alice.write("/servers")
    listed = alice.record("servers")
    assert [(s["port"], s["current"]) for s in listed["servers"]] == [(server.port, True)]
    assert not alice.records("measured") and not alice.records("moved")


def test_it_moves_only_after_the_sustained_period(start_server, proxies, json_clients,
                                                  tmp_path):
    first, second = start_server(), start_server()
    first_proxy, second_proxy = proxies(first), proxies(second, 0.02)
    bob = json_clients("--name", "bob", "--port", str(first.port), "--room", "lobby")
    bob.record("joined", name="bob")
    alice = json_clients("--name", "alice", "--config", pick_config(tmp_path),
                         "--server", at(first_proxy), "--server", at(second_proxy),
                         "--room", "lobby")
    assert alice.record("connected")["port"] == first_proxy.port
    alice.record("joined", name="alice")

    first_proxy.delay_seconds = FAR_SECONDS
    slowed_at = time.monotonic()
    moved = alice.record("moved", timeout=30)
    assert time.monotonic() - slowed_at >= SUSTAIN_SECONDS
    assert (moved["why"], moved["port"], moved["name"]) == ("closer", second_proxy.port,
                                                            "alice")
    assert moved["rooms"] == ["lobby"]
    alice.back_in("lobby")          # rejoined on the new one
    bob.record("left", name="alice", message="moving to a closer server")
    alice.write("still here")
    assert alice.record("sent")["text"] == "still here"
    assert second.wait_for_log("alice")


def test_a_short_spike_does_not_move_it(start_server, proxies, json_clients, tmp_path):
    first, second = start_server(), start_server()
    first_proxy, second_proxy = proxies(first), proxies(second, 0.02)
    alice = json_clients("--name", "alice", "--config",
                         pick_config(tmp_path, move_sustain_seconds=4.0),
                         "--server", at(first_proxy), "--server", at(second_proxy))
    assert alice.record("connected")["port"] == first_proxy.port
    first_proxy.delay_seconds = FAR_SECONDS                     # a spike of 1 s ...
    time.sleep(1.0)
    first_proxy.delay_seconds = 0.0                             # ... and it is over
    accepted = second_proxy.accepted
    deadline = time.monotonic() + 6.0                           # past the sustained period
    while time.monotonic() < deadline:
        alice.write("/ping")
        alice.record("pong")
        time.sleep(0.5)
    assert second_proxy.accepted > accepted                     # it kept measuring ...
    assert not alice.records("moved")                           # ... and stayed


def test_servers_shows_every_server_with_its_rtt_and_the_current_one(
        start_server, proxies, json_clients, tmp_path):
    near, far = start_server(), start_server()
    far_proxy = proxies(far, FAR_SECONDS)
    alice = json_clients("--name", "alice", "--config", pick_config(tmp_path),
                         "--server", at(near), "--server", at(far_proxy))
    alice.record("connected")
    alice.write("/servers")
    listed = alice.record("servers")
    rows = {s["port"]: s for s in listed["servers"]}
    assert set(rows) == {near.port, far_proxy.port}
    assert rows[near.port]["current"] and not rows[far_proxy.port]["current"]
    assert rows[near.port]["users"] == 1
    assert rows[far_proxy.port]["rtt_ms"] >= 2 * FAR_SECONDS * 1000
    assert listed["servers"][0]["current"]                      # the current one first


def test_servers_as_text(start_server, proxies, tmp_path):
    near, far = start_server(), start_server()
    far_proxy = proxies(far, FAR_SECONDS)
    alice = ScriptClient("--name", "alice", "--config", pick_config(tmp_path),
                         "--server", at(near), "--server", at(far_proxy))
    try:
        alice.expect(r"-- rtt to 127\.0\.0\.1:%d [\d.]+ ms, 127\.0\.0\.1:%d [\d.]+ ms: "
                     r"using 127\.0\.0\.1:%d$" % (near.port, far_proxy.port, near.port))
        alice.expect("connected to")
        alice.write("/servers")
        alice.expect(r"-- 2 servers: chatcore@127\.0\.0\.1:%d 127\.0\.0\.1:%d \(1 users, "
                     r"rtt [\d.]+ ms, connected\), 127\.0\.0\.1:%d 127\.0\.0\.1:%d "
                     r"\(rtt [\d.]+ ms\)$" % (near.port, near.port, far_proxy.port,
                                             far_proxy.port))
    finally:
        alice.close()


def test_send_goes_through_the_lowest_rtt_server(start_server, proxies, connect):
    near, far = start_server(), start_server()
    far_proxy = proxies(far, FAR_SECONDS)
    bob = ChatClient("127.0.0.1", near.port, timeout=10)
    try:
        bob.connect("bob")
        result = run_client("--name", "alice", "--server", at(far_proxy), "--server",
                            at(near), "--send", "bob", "hi from the near one")
        assert result.returncode == 0, result.stderr
        assert bob.wait_for(ev.DirectMessage).text == "hi from the near one"
    finally:
        bob.close()


def test_no_server_reachable_is_one_line_and_status_3(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    servers = [arg for port in ports for arg in ("--server", f"127.0.0.1:{port}")]
    result = run_client("--name", "alice", *servers, input="")
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stderr.count("\n") == 1
    assert "cannot connect to any of the 2 servers" in result.stderr
    sent = run_client("--name", "alice", *servers, "--send", "bob", "hi")
    assert sent.returncode == exitcodes.UNAVAILABLE
    assert "none of the 2 servers can be reached" in sent.stderr


def test_interactive_failover_is_told_in_a_line_and_the_chat_goes_on(start_server, terminals,
                                                                    tmp_path):
    first, second = start_server(), start_server()
    alice = terminals(login(first.port, "alice", "--config", pick_config(tmp_path),
                            "--server", at(first), "--server", at(second), "--room", "lobby"))
    alice.expect_literal("alice joined #lobby")
    on = first if f"chatcore@127.0.0.1:{first.port} as alice" in alice.text else second
    other = second if on is first else first
    on.signal(signal.SIGKILL)
    alice.expect(r"-- chatcore@127\.0\.0\.1:%d was lost: now on chatcore@127\.0\.0\.1:%d "
                 r"\(127\.0\.0\.1:%d\) after [\d.]+s, with #lobby" % (on.port, other.port,
                                                                    other.port))
    alice.expect_literal("alice joined #lobby")
    alice.sendline("still chatting")
    alice.expect_literal("alice -> #lobby: still chatting")
    alice.expect_screen(r"^ alice \| \[1:#lobby\]$")


def test_a_name_taken_on_every_other_server_is_said_once_after_the_lease(
        start_server, proxies, json_clients, tmp_path):
    first, second = start_server(), start_server()
    second_proxy = proxies(second, 0.02)
    impostor = ChatClient("127.0.0.1", second.port, timeout=10)
    try:
        impostor.connect("alice")                   # another user holds the name there
        alice = json_clients("--name", "alice", "--config",
                             pick_config(tmp_path, name_lease_seconds=1.0),
                             "--server", at(first), "--server", at(second_proxy))
        assert alice.record("connected")["port"] == first.port
        first.signal(signal.SIGKILL)
        error = alice.record("error", code="NAME_TAKEN", timeout=20)
        assert "the name alice is still taken on" in error["message"]
        assert "someone else may have it now" in error["message"]
        alice.record("reconnecting")                # and on with the backoff
        assert len([r for r in alice.records("error") if r["code"] == "NAME_TAKEN"]) == 1
    finally:
        impostor.close()
