"""Probes (chatcore.probe): a Ping before the handshake is answered and claims nothing; the
blocking and asyncio probes against a real server, an older server and nothing at all."""
from __future__ import annotations

import asyncio
import socket

import pytest

from chatcore import events as ev
from chatcore.errors import ErrorCode
from chatcore.probe import ProbeFailed, probe, probe_async
from chatcore.protocol import NEED_DATA, NativeProtocol, Role, State, encode_event
from tests.cli_helpers import FakeServer
from tests.delayproxy import DelayProxy


def test_a_server_answers_a_ping_before_the_handshake_and_stays_in_it():
    protocol = NativeProtocol(Role.SERVER)
    protocol.receive_data(encode_event(ev.Ping(42, request_id=7)))
    assert protocol.next_event() == ev.Ping(42, request_id=7)
    assert protocol.state is State.AWAITING_HELLO
    protocol.receive_data(encode_event(ev.Pong(1, request_id=8)))     # anything else: not
    with pytest.raises(Exception) as refused:
        protocol.next_event()
    assert (refused.value.code, refused.value.fatal) == (ErrorCode.HANDSHAKE_REQUIRED, True)


def test_pings_then_hello_on_one_connection(server, connect):
    bystander = connect("bob")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        protocol = NativeProtocol(Role.CLIENT)
        sock.sendall(encode_event(ev.Ping(5, request_id=1)) +
                     encode_event(ev.Ping(6, request_id=2)))
        answers = []
        while len(answers) < 2:
            protocol.receive_data(sock.recv(4096))
            while (event := protocol.next_event()) is not NEED_DATA:
                answers.append(event)
        assert answers == [ev.Pong(5, request_id=1), ev.Pong(6, request_id=2)]
        assert [u.name for u in bystander.list_users().users] == ["bob"]    # nobody new
        sock.sendall(encode_event(ev.Hello(1, "carol", "test", request_id=3)))
        welcome = None
        while welcome is None:
            protocol.receive_data(sock.recv(4096))
            while (event := protocol.next_event()) is not NEED_DATA:
                if type(event) is ev.Welcome:
                    welcome = event
        assert welcome.name == "carol"


def test_probe_measures_a_server_without_taking_a_name(server, connect):
    viewer = connect("viewer")
    result = probe("127.0.0.1", server.port)
    assert len(result.samples) == 3 and result.rtt_seconds == min(result.samples)
    assert 0 < result.rtt_seconds < 2 and result.connect_seconds > 0
    async_result = asyncio.run(probe_async("127.0.0.1", server.port))
    assert len(async_result.samples) == 3
    assert [u.name for u in viewer.list_users().users] == ["viewer"]


def test_probe_sees_the_delay(server):
    proxy = DelayProxy(server.port, 0.05)
    try:
        assert probe("127.0.0.1", proxy.port).rtt_seconds >= 0.1
        assert asyncio.run(probe_async("127.0.0.1", proxy.port)).rtt_seconds >= 0.1
    finally:
        proxy.close()


def old_server(sock) -> None:
    """A server from before pings were answered in the handshake: the first frame gets the
    fatal HANDSHAKE_REQUIRED, then the connection closes."""
    data = sock.recv(4096)
    request_id = int.from_bytes(data[5:9], "big")
    sock.sendall(encode_event(ev.Error(int(ErrorCode.HANDSHAKE_REQUIRED), True,
                                       "expected Hello", request_id)))
    sock.close()


def test_an_older_server_gives_one_sample():
    fake = FakeServer(old_server)
    try:
        assert len(probe("127.0.0.1", fake.port).samples) == 1
        assert len(asyncio.run(probe_async("127.0.0.1", fake.port)).samples) == 1
    finally:
        fake.close()


def test_a_silent_port_and_a_closed_port_fail_the_probe():
    silent = FakeServer(lambda sock: sock.recv(10) and None)
    try:
        with pytest.raises(ProbeFailed):
            probe("127.0.0.1", silent.port, timeout=0.5)
        with pytest.raises(ProbeFailed):
            asyncio.run(probe_async("127.0.0.1", silent.port, timeout=0.5))
    finally:
        silent.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        probe("127.0.0.1", port)
    with pytest.raises(OSError):
        asyncio.run(probe_async("127.0.0.1", port))
