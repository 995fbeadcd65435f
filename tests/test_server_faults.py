"""Bad input, dead and slow clients, resource exhaustion and shutdown, over real sockets."""
from __future__ import annotations

import resource
import signal
import socket
import struct

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.codec import encode_frame
from chatcore.errors import ErrorCode
from chatcore.events import Reason
from chatcore.protocol import encode_event


def _expect_error(client: ChatClient, code: ErrorCode, fatal: bool) -> ev.Error:
    error = client.wait_for(ev.Error)
    assert (ErrorCode(error.code), error.fatal) == (code, fatal), error
    assert error.message
    return error


def _expect_closed(client: ChatClient) -> None:
    with pytest.raises(ConnectionClosed):
        client.wait_for(lambda e: False, timeout=5)


@pytest.fixture
def bystander(connect):
    """A user chatting in a room throughout, to show others are unaffected."""
    client = connect("bystander")
    client.join("calm")
    return client


def _still_served(bystander: ChatClient) -> None:
    ack = bystander.send_room("calm", "still fine")
    assert bystander.wait_for(ev.RoomMessage).msg_id == ack.msg_id


def _raw(server) -> ChatClient:
    client = ChatClient("127.0.0.1", server.port, timeout=10)
    client.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return client


@pytest.mark.parametrize("garbage, code", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.FRAME_TOO_LARGE),
    (b"\xff\xff\xff\xff" + b"x" * 100, ErrorCode.FRAME_TOO_LARGE),
    (b"\x00\x00\x00\x02ab", ErrorCode.BAD_FRAME),
])
def test_garbage_gets_a_fatal_error_then_close(server, bystander, garbage, code):
    with _raw(server) as client:
        client.send_raw(garbage)
        _expect_error(client, code, fatal=True)
        _expect_closed(client)
    _still_served(bystander)


def test_anything_before_hello_is_refused(server, bystander):
    with _raw(server) as client:
        client.send_raw(encode_event(ev.JoinRoom("calm", request_id=9)))
        error = _expect_error(client, ErrorCode.HANDSHAKE_REQUIRED, fatal=True)
        assert error.request_id == 9
        _expect_closed(client)
    _still_served(bystander)


def test_unsupported_version_is_fatal(server):
    with _raw(server) as client:
        client.send_raw(encode_event(ev.Hello(99, "alice", "test", request_id=1)))
        error = _expect_error(client, ErrorCode.UNSUPPORTED_VERSION, fatal=True)
        assert "99" in error.message
        _expect_closed(client)


def test_oversize_frame_after_handshake_is_fatal(connect, bystander):
    alice = connect("alice")
    alice.send_raw(struct.pack(">I", 65537) + b"\x22")
    _expect_error(alice, ErrorCode.FRAME_TOO_LARGE, fatal=True)
    _expect_closed(alice)
    _still_served(bystander)


@pytest.mark.parametrize("frame, code", [
    (encode_frame(0x7E, 5, b"whatever"), ErrorCode.UNKNOWN_TYPE),
    (encode_frame(0x81, 5, b""), ErrorCode.UNKNOWN_TYPE),            # a server-only type
    (encode_frame(0x20, 5, b"\x00\x09abc"), ErrorCode.BAD_FRAME),     # str runs past the end
    (encode_frame(0x31, 5, b"extra"), ErrorCode.BAD_FRAME),           # trailing bytes
    (encode_frame(0x22, 5, b"\x00\x04calm\xff\xfe"), ErrorCode.BAD_UTF8),
    (encode_frame(0x01, 5, b"\x00\x01\x00\x03bob\x00\x00"), ErrorCode.ALREADY_GREETED),
    (encode_frame(0x22, 5, b"\x00\x04calm" + b"x" * 9000), ErrorCode.TEXT_INVALID),
])
def test_malformed_frames_get_an_error_and_the_connection_stays(connect, bystander, frame,
                                                                code):
    alice = connect("alice")
    alice.join("calm")
    alice.send_raw(frame)
    error = _expect_error(alice, code, fatal=False)
    assert error.request_id == 5
    assert alice.list_rooms().total == 1
    _still_served(bystander)


def test_a_frame_written_one_byte_per_send_is_reassembled(connect):
    alice = connect("alice")
    frame = encode_event(ev.JoinRoom("slowly", request_id=77))
    for byte in frame:
        alice.send_raw(bytes([byte]))
    assert alice.wait_for(ev.Ok).request_id == 77


def test_handshake_timeout(start_server):
    server = start_server("--handshake-timeout-seconds", "0.3")
    with _raw(server) as client:
        _expect_error(client, ErrorCode.HANDSHAKE_TIMEOUT, fatal=True)
        _expect_closed(client)


def test_silent_client_is_dropped_and_its_room_is_told(start_server):
    server = start_server("--idle-timeout-seconds", "0.6", "--resume-grace-seconds", "0")
    with ChatClient("127.0.0.1", server.port) as watcher, \
            ChatClient("127.0.0.1", server.port, auto_pong=False) as silent:
        watcher.connect("watcher")
        silent.connect("silent")
        silent.join("room")
        watcher.join("room")
        watcher.send_direct("silent", "hello?")
        left = watcher.wait_for(ev.UserLeft)
        assert (left.name, left.reason) == ("silent", Reason.TIMED_OUT)
        closed = watcher.wait_for(ev.ChatClosed)
        assert (closed.peer, closed.reason) == ("silent", Reason.TIMED_OUT)
        _expect_error(silent, ErrorCode.PING_TIMEOUT, fatal=True)
        server.wait_for_log("silent: idle timeout")


def test_slow_reader_is_dropped_and_nobody_else_loses_anything(start_server):
    server = start_server("--max-output-bytes", "65536", "--resume-grace-seconds", "0")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(encode_event(ev.Hello(1, "slow", request_id=1)) +
                 encode_event(ev.JoinRoom("busy", request_id=2)))
    with ChatClient("127.0.0.1", server.port) as sender, \
            ChatClient("127.0.0.1", server.port) as reader:
        sender.connect("sender")
        reader.connect("reader")
        sender.join("busy")
        reader.join("busy")
        text = "x" * 4000
        batch, batches = 10, 250    # 10 MB in all: past the kernel's buffers and the queue
        slow_left = False
        for round_ in range(batches):
            for i in range(batch):
                sender.send(ev.SendRoom("busy", f"{round_}.{i} {text}"))
            for client in (sender, reader):     # both keep reading: neither falls behind
                got = 0
                while got < batch:
                    event = client.next_event()
                    if isinstance(event, ev.RoomMessage):
                        assert event.text.startswith(f"{round_}.{got} ")
                        got += 1
                    elif isinstance(event, ev.UserLeft):
                        assert (event.name, event.reason) == ("slow", Reason.TOO_SLOW)
                        slow_left = True
        assert slow_left
        server.wait_for_log("slow: output queue passed 65536 bytes")
        assert [u.name for u in reader.list_users().users] == ["reader", "sender"]
    slow.close()


def test_half_closed_client_still_gets_its_replies(connect, server):
    alice = connect("alice")
    alice.join("lobby")
    alice.send(ev.ListRooms(request_id=42))
    alice.sock.shutdown(socket.SHUT_WR)
    rooms = alice.wait_for(ev.RoomList)
    assert rooms.request_id == 42 and rooms.rooms == (ev.RoomInfo("lobby", 1),)
    _expect_closed(alice)


def test_quit_closes_after_flushing(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("r")
    bob.join("r")
    bob.send(ev.Quit("gone fishing"))
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason) == ("bob", Reason.QUIT)
    _expect_closed(bob)


def test_server_full(start_server):
    server = start_server("--max-clients", "2")
    with ChatClient("127.0.0.1", server.port) as a, ChatClient("127.0.0.1", server.port) as b:
        a.connect("a")
        b.connect("b")
        with _raw(server) as third:
            _expect_error(third, ErrorCode.SERVER_FULL, fatal=True)
            _expect_closed(third)


def _limit_files(count: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))
    return apply


def test_running_out_of_file_descriptors_is_survived(start_server):
    server = start_server(preexec_fn=_limit_files(32))
    clients = [ChatClient("127.0.0.1", server.port, timeout=10) for _ in range(40)]
    try:
        for client in clients:      # connect() succeeds: the kernel completes the handshake
            client.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            client.send(ev.Hello(1, ""))
        server.wait_for_log("cannot accept (Too many open files)")
        welcomed = [c for c in clients[:10] if isinstance(c.next_event(), ev.Welcome)]
        assert len(welcomed) == 10
        for client in clients[:20]:
            client.quit()
        # The ones that waited in the backlog are accepted once descriptors are free again.
        for client in clients[-5:]:
            assert isinstance(client.wait_for(ev.Welcome, timeout=10), ev.Welcome)
    finally:
        for client in clients:
            client.close()
    assert server.proc.poll() is None


def test_sigterm_tells_clients_and_exits_zero(start_server):
    server = start_server()
    with ChatClient("127.0.0.1", server.port) as alice, \
            ChatClient("127.0.0.1", server.port) as bob:
        alice.connect("alice")
        bob.connect("bob")
        alice.join("r")
        server.signal(signal.SIGTERM)
        for client in (alice, bob):
            _expect_error(client, ErrorCode.SERVER_SHUTDOWN, fatal=True)
            _expect_closed(client)
    assert server.proc.wait(10) == 0
    server.wait_for_log("stopped")


def test_sigint_with_a_client_that_never_reads_closes_it_after_the_grace_period(
        start_server):
    server = start_server("--shutdown-grace-seconds", "0.5",
                          "--max-output-bytes", str(64 << 20))
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(encode_event(ev.Hello(1, "stuck", request_id=1)))
    with ChatClient("127.0.0.1", server.port) as alice:
        alice.connect("alice")
        text = "x" * 8000
        for _ in range(1000):           # 8 MB: far more than the kernel buffers hold
            alice.send(ev.SendDirect("stuck", text))
        alice.wait_for(lambda e: isinstance(e, ev.Ack) and e.request_id == 1001)
        server.signal(signal.SIGINT)
        _expect_error(alice, ErrorCode.SERVER_SHUTDOWN, fatal=True)
        server.wait_for_log("connections that did not finish in time")
    assert server.proc.wait(10) == 0
    stuck.close()


def test_pipelined_requests_without_reading_are_cut_off(start_server):
    server = start_server("--max-output-bytes", "65536", "--resume-grace-seconds", "0")
    with ChatClient("127.0.0.1", server.port) as bystander, \
            ChatClient("127.0.0.1", server.port) as greedy:
        bystander.connect("bystander")
        for i in range(100):
            bystander.join(f"room-{i}")
        greedy.connect("greedy")
        greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Each reply lists 100 rooms: ~1.5 KB. 5000 of them would be 7.5 MB of output.
        greedy.send_raw(b"".join(encode_event(ev.ListRooms(request_id=i + 1))
                                 for i in range(5000)))
        server.wait_for_log("greedy: output queue passed 65536 bytes")
        assert bystander.ping() < 1
        assert [u.name for u in bystander.list_users().users] == ["bystander"]


def test_errors_quote_huge_client_text_briefly(connect):
    alice = connect("alice")
    request_id = alice.send(ev.SendDirect("x" * 50_000, "hello?"))
    error = alice.wait_for(ev.Error)
    assert (error.code, error.request_id) == (ErrorCode.NO_SUCH_USER, request_id)
    assert len(error.message) < 100


def test_a_large_frame_before_the_handshake_is_refused(server):
    with _raw(server) as client:
        client.send_raw(encode_event(ev.Hello(1, "x" * 2000, request_id=1)))
        error = _expect_error(client, ErrorCode.FRAME_TOO_LARGE, fatal=True)
        assert "1024" in error.message
        _expect_closed(client)


def test_ipv6_loopback(start_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = start_server("--host", "::1")
    with ChatClient("::1", server.port) as alice:
        assert alice.connect("alice").server == f"chatcore@[::1]:{server.port}"
        assert alice.list_servers().servers[0].host == "::1"
