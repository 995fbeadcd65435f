"""The Prometheus page (--metrics-port): real HTTP requests against a real server process."""
from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ChatError, ErrorCode
from chatcore.protocol import encode_event
from chatcore.stats import Histogram
from tests.serverproc import SERVER_PY
from tests.test_resume import reset, wait_until_held

METRICS_FLAGS = ("--metrics-port", "0")


def metrics_port(server) -> int:
    return int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics",
                         server.wait_for_log("metrics on")).group(1))


def scrape(server, path: str = "/metrics") -> dict:
    """Every sample on the page: {(name, (label, value) pairs): value}."""
    url = f"http://127.0.0.1:{metrics_port(server)}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def answer_one_ping(client: ChatClient) -> None:
    """Wait for the server's ping, answer it, and make sure the server has read the answer
    (the Pong of our own ping comes back after the server handled what we sent before)."""
    ping = client.wait_for(ev.Ping)
    client.send(ev.Pong(ping.token, ping.request_id))
    client.ping()


def test_the_page_is_off_by_default(server):
    assert "metrics on" not in server.log


def test_chat_traffic_moves_the_counters(start_server):
    server = start_server(*METRICS_FLAGS)
    before = scrape(server)
    assert before[("chatcore_connections", (("transport", "plain"),))] == 0
    assert before[("chatcore_users", ())] == 0
    assert before[("chatcore_messages_total", (("kind", "room"),))] == 0

    alice = ChatClient("127.0.0.1", server.port, auto_pong=False)
    bob = ChatClient("127.0.0.1", server.port)
    with alice, bob:
        alice.connect("alice")
        bob.connect("bob")
        alice.join("lobby")
        bob.join("lobby")
        alice.send_room("lobby", "hello, room")
        bob.wait_for(ev.RoomMessage)
        alice.send_direct("bob", "hello, bob")
        bob.wait_for(ev.DirectMessage)
        alice.call(ev.SendRoomAction("lobby", "waves"))     # /me: a message too
        bob.wait_for(ev.RoomAction)
        answer_one_ping(alice)
        during = scrape(server)

    assert during[("chatcore_connections", (("transport", "plain"),))] == 2
    assert during[("chatcore_connections", (("transport", "tls"),))] == 0
    assert during[("chatcore_connections_accepted_total", ())] == 2
    assert during[("chatcore_users", ())] == 2
    assert during[("chatcore_rooms", ())] == 1
    assert during[("chatcore_messages_total", (("kind", "room"),))] == 2
    assert during[("chatcore_messages_total", (("kind", "direct"),))] == 1
    # the room message to both members, the direct one to bob, and the join notices
    assert during[("chatcore_deliveries_total", ())] >= 3
    for name in ("chatcore_received_bytes_total", "chatcore_sent_bytes_total",
                 "chatcore_loop_turn_seconds_count"):
        assert during[(name, ())] > before[(name, ())], name
    assert during[("chatcore_rtt_seconds_count", ())] >= 1
    assert during[("chatcore_rtt_seconds_bucket", (("le", "+Inf"),))] >= 1
    assert during[("chatcore_output_queue_bytes", ())] >= 0
    assert ("process_resident_memory_bytes", ()) in during


def test_a_user_held_after_a_blip_is_counted(start_server):
    server = start_server(*METRICS_FLAGS)
    alice = ChatClient("127.0.0.1", server.port)
    alice.connect("alice")
    reset(alice)
    wait_until_held(server, "alice")
    page = scrape(server)
    assert (page[("chatcore_users", ())], page[("chatcore_held_users", ())]) == (1, 1)


def test_drops_are_counted_by_reason(start_server):
    server = start_server(*METRICS_FLAGS, "--idle-timeout-seconds", "0.5",
                          "--handshake-timeout-seconds", "0.5")
    before = scrape(server)
    for reason in ("idle", "handshake_timeout", "protocol_error", "slow_reader"):
        assert before[("chatcore_drops_total", (("reason", reason),))] == 0

    with ChatClient("127.0.0.1", server.port, auto_pong=False) as silent:
        silent.connect("silent")
        error = silent.wait_for(lambda e: type(e) is ev.Error and e.fatal)
        assert "nothing received" in error.message
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as mute:
        assert _read_until_closed(mute)         # the handshake timeout's error, then EOF
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as garbage:
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert _read_until_closed(garbage)

    after = scrape(server)
    for reason in ("idle", "handshake_timeout", "protocol_error"):
        assert after[("chatcore_drops_total", (("reason", reason),))] == 1, reason
    assert after[("chatcore_drops_total", (("reason", "slow_reader"),))] == 0


def test_tls_connections_and_handshake_drops(start_server, tls_files):
    server = start_server(*METRICS_FLAGS, *tls_files.server_flags,
                          "--tls-handshake-timeout-seconds", "0.5")
    with ChatClient("127.0.0.1", server.tls_port, tls_ca=tls_files.ca) as alice:
        alice.connect("alice")
        with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as silent:
            assert silent.recv(1) == b""        # no ClientHello: dropped at the timeout
        with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as plain:
            plain.sendall(b"not a TLS record at all\r\n")
            _read_until_closed(plain)
        server.wait_for_log("TLS handshake failed")
        page = scrape(server)
    assert page[("chatcore_connections", (("transport", "tls"),))] == 1
    assert page[("chatcore_drops_total", (("reason", "tls_handshake_timeout"),))] == 1
    assert page[("chatcore_drops_total", (("reason", "tls_handshake_failed"),))] == 1
    assert page[("chatcore_tls_handshakes", ())] == 0


def test_flood_and_per_address_drops_are_counted(start_server):
    server = start_server(*METRICS_FLAGS, "--limit-exempt", "", "--max-flood-lag-seconds",
                          "0.5", "--flood-chat-burst-messages", "2",
                          "--max-connections-per-address", "2")
    with ChatClient("127.0.0.1", server.port) as flooder:
        flooder.connect("flooder")
        flooder.join("lobby")
        flooder.send_raw(b"".join(encode_event(ev.SendRoom("lobby", f"flood {i}", i + 10))
                                  for i in range(200)))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                flooder.next_event(timeout=20)
        assert closed.value.error.code == ErrorCode.EXCESS_FLOOD
    server.wait_for_log("disconnected for flooding")
    with ChatClient("127.0.0.1", server.port) as alice, \
            ChatClient("127.0.0.1", server.port) as bob, \
            ChatClient("127.0.0.1", server.port) as carol:
        alice.connect("alice")
        bob.connect("bob")
        with pytest.raises((ChatError, ConnectionClosed)):
            carol.connect("carol")          # a third from 127.0.0.1
        page = scrape(server)
    assert page[("chatcore_drops_total", (("reason", "flood"),))] == 1
    assert page[("chatcore_drops_total", (("reason", "per_address_limit"),))] == 1
    assert page[("chatcore_drops_total", (("reason", "input_budget"),))] == 0


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_http_details(start_server):
    server = start_server(*METRICS_FLAGS)
    port = metrics_port(server)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):                          # keep-alive: two scrapes, one connection
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and b"chatcore_users 0.0" in response.read()
    connection.request("HEAD", "/metrics")
    response = connection.getresponse()
    assert response.status == 200 and int(response.headers["content-length"]) > 0
    assert response.read() == b""
    connection.request("GET", "/")
    response = connection.getresponse()
    assert (response.status, response.read()) == (404, b"the metrics are at /metrics\n")
    connection.request("POST", "/metrics", body=b"x")
    response = connection.getresponse()
    assert response.status == 405 and response.headers["allow"] == "GET, HEAD"
    response.read()
    connection.close()

    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.read().endswith(b"# EOF\n")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        raw.sendall(request + b"\r\n" + request + b"\r\n" + request + b"Connection: close\r\n\r\n")
        assert _read_until_closed(raw).count(b"HTTP/1.1 200 OK\r\n") == 3   # pipelined
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000)   # no end
        raw.shutdown(socket.SHUT_WR)
        assert _read_until_closed(raw).startswith(b"HTTP/1.1 431 Request Header Fields Too")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert _read_until_closed(raw).startswith(b"HTTP/1.1 400 Bad Request")
    with ChatClient("127.0.0.1", server.port) as alice:
        alice.connect("alice")
        assert alice.ping() < 5                 # the chat is served as before


def test_idle_and_surplus_http_connections_are_closed(start_server):
    server = start_server(*METRICS_FLAGS, "--metrics-timeout-seconds", "0.5",
                          "--max-metrics-connections", "2")
    port = metrics_port(server)
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    second = socket.create_connection(("127.0.0.1", port), timeout=10)
    with first, second, socket.create_connection(("127.0.0.1", port), timeout=10) as third:
        assert third.recv(1) == b""             # over max_metrics_connections: closed at once
        assert first.recv(1) == b""             # idle past metrics_timeout_seconds: closed
        assert second.recv(1) == b""
    assert scrape(server)[("chatcore_users", ())] == 0


def test_metrics_configuration_errors(server):
    result = subprocess.run([sys.executable, SERVER_PY, "--port", "7000", "--metrics-port",
                             "7000"], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "metrics_port and port are both 7000" in result.stderr
    result = subprocess.run([sys.executable, SERVER_PY, "--port", "0", "--metrics-port",
                             str(server.port)], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{server.port}" in result.stderr


def test_histogram_buckets_are_cumulative_with_inclusive_bounds():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert histogram.count == 5 and histogram.sum == pytest.approx(8.65)
