"""Names survive a blip, over real sockets: after an unclean drop the session is held for
its grace period, and only a Resume with its token gets it back, rooms and chats included."""
from __future__ import annotations

import socket
import struct

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.protocol import PROTOCOL_VERSION, encode_event

LONG_GRACE = ("--resume-grace-seconds", "60")


def reset(client: ChatClient) -> None:
    """Drop the connection the way a network blip does: the server sees a reset."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def refused(call, code: ErrorCode) -> ChatError:
    with pytest.raises(ChatError) as error:
        call()
    assert error.value.code == code, error.value
    return error.value


@pytest.fixture
def clients():
    made = []

    def make(port: int, **kwargs) -> ChatClient:
        client = ChatClient("127.0.0.1", port, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def wait_until_held(server, name: str) -> None:
    """The server has noticed the drop (and holds the session): a Hello for it is refused."""
    probe = ChatClient("127.0.0.1", server.port)
    try:
        probe._open_socket()
        for _ in range(200):
            try:
                probe.hello(name)
            except ChatError as exc:
                if "reserved" in exc.message:
                    return
            else:
                raise AssertionError(f"{name} was given away")
        raise AssertionError(f"{name} was never reserved")
    finally:
        probe.close()


def test_welcome_comes_with_a_token(start_server, clients):
    server = start_server(*LONG_GRACE)
    alice, bob = clients(server.port), clients(server.port)
    alice.connect("alice")
    bob.connect("bob")
    assert len(alice.resume_token) >= 32 and alice.resume_grace_seconds == 60
    assert alice.resume_token != bob.resume_token


def test_a_reset_user_resumes_with_its_rooms_and_chats_and_nobody_sees_it_leave(
        start_server, clients):
    server = start_server(*LONG_GRACE)
    alice, bob, carol = (clients(server.port) for _ in range(3))
    alice.connect("alice")
    bob.connect("bob")
    carol.connect("carol")
    for client in (alice, bob):
        client.join("lobby")
        client.join("dev")
    alice.open_chat("carol")
    bob.drain()
    reset(alice)
    wait_until_held(server, "alice")
    # Held: still listed, still a member; a direct message says it did not arrive.
    assert [u.name for u in bob.iter_users("lobby")] == ["alice", "bob"]
    assert refused(lambda: bob.send_direct("alice", "there?"),
                   ErrorCode.USER_RECONNECTING).message.startswith("alice's connection")
    old_token = alice.resume_token
    welcome = alice.reconnect()
    assert alice.resumed and welcome.name == "alice"
    assert alice.resume_token not in ("", old_token)
    told = [alice.wait_for(ev.UserJoined), alice.wait_for(ev.UserJoined),
            alice.wait_for(ev.ChatOpened)]
    assert sorted(e.room for e in told[:2]) == ["dev", "lobby"] and told[2].peer == "carol"
    # Back in its rooms and chats: messages flow both ways again.
    bob.send_room("lobby", "welcome back")
    assert alice.wait_for(ev.RoomMessage).text == "welcome back"
    carol.send_direct("alice", "hi")
    assert alice.wait_for(ev.DirectMessage).text == "hi"
    alice.send_room("dev", "thanks")
    assert bob.wait_for(lambda e: type(e) is ev.RoomMessage and e.text == "thanks")
    # Nobody was told alice left or came back.
    assert not [e for e in bob.drain() + carol.drain()
                if type(e) in (ev.UserLeft, ev.UserJoined, ev.ChatClosed)]


def test_only_the_token_gets_a_held_name(start_server, clients):
    server = start_server(*LONG_GRACE)
    alice = clients(server.port)
    alice.connect("alice")
    token = alice.resume_token
    reset(alice)
    wait_until_held(server, "alice")
    thief = clients(server.port)
    thief._open_socket()
    error = refused(lambda: thief.hello("ALICE"), ErrorCode.NAME_TAKEN)
    assert "reserved" in error.message
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert "does not match" in refused(lambda: thief.resume("alice", wrong),
                                       ErrorCode.RESUME_REFUSED).message
    refused(lambda: thief.resume("alice", ""), ErrorCode.RESUME_REFUSED)
    refused(lambda: thief.resume("nobody", token), ErrorCode.RESUME_REFUSED)
    # Refusals leave the connection in the handshake: it may still say Hello.
    assert thief.hello("thief").name == "thief"
    assert alice.reconnect().name == "alice" and alice.resumed


def test_a_token_works_once(start_server, clients):
    server = start_server(*LONG_GRACE)
    alice = clients(server.port)
    alice.connect("alice")
    used = alice.resume_token
    reset(alice)
    alice.reconnect()
    assert alice.resumed
    replay = clients(server.port)
    replay._open_socket()
    refused(lambda: replay.resume("alice", used), ErrorCode.RESUME_REFUSED)
    alice.ping()                                # the session was not disturbed


def test_after_the_grace_period_the_usual_leave_with_the_original_reason(start_server,
                                                                         clients):
    server = start_server("--resume-grace-seconds", "1")
    alice, bob = clients(server.port), clients(server.port)
    alice.connect("alice")
    bob.connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    bob.open_chat("alice")
    token = alice.resume_token
    reset(alice)
    left = bob.wait_for(ev.UserLeft, timeout=10)
    assert (left.name, left.reason) == ("alice", Reason.DISCONNECTED)
    closed = bob.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("alice", Reason.DISCONNECTED)
    # The token has expired with the session; the name is free again.
    late = clients(server.port)
    late._open_socket()
    refused(lambda: late.resume("alice", token), ErrorCode.RESUME_REFUSED)
    assert late.hello("alice").name == "alice"
    assert [u.name for u in bob.iter_users("lobby")] == ["bob"]


def test_reconnect_after_expiry_falls_back_to_hello(start_server, clients):
    server = start_server("--resume-grace-seconds", "1")
    alice, bob = clients(server.port), clients(server.port)
    alice.connect("alice")
    bob.connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    reset(alice)
    bob.wait_for(ev.UserLeft, timeout=10)
    assert alice.reconnect().name == "alice"
    assert not alice.resumed
    assert alice.list_users_page("lobby").total == 1          # bob alone: alice must rejoin


def test_a_live_session_is_taken_over_by_its_token(start_server, clients):
    # The user noticed the dead connection before the server did (no reset reached it).
    server = start_server(*LONG_GRACE)
    old, bob = clients(server.port), clients(server.port)
    old.connect("alice")
    bob.connect("bob")
    old.join("lobby")
    bob.join("lobby")
    bob.drain()
    new = clients(server.port)
    new._open_socket()
    new.resume("alice", old.resume_token)
    assert new.wait_for(ev.UserJoined).room == "lobby"
    error = old.wait_for(ev.Error)
    assert (error.code, error.fatal) == (ErrorCode.SESSION_RESUMED, True)
    bob.send_room("lobby", "still here?")
    assert new.wait_for(ev.RoomMessage).text == "still here?"
    assert not [e for e in bob.drain() if type(e) in (ev.UserLeft, ev.UserJoined)]


def test_a_timed_out_user_is_held_and_resumes(start_server, clients):
    server = start_server("--idle-timeout-seconds", "0.6", *LONG_GRACE)
    silent, bob = clients(server.port, auto_pong=False), clients(server.port)
    silent.connect("silent")
    bob.connect("bob")
    silent.join("room")
    bob.join("room")
    while True:                                 # bob keeps talking, so only silent is idle
        bob.ping()
        try:
            server.wait_for_log("silent: idle timeout", timeout=0.1)
            break
        except TimeoutError:
            pass
    wait_until_held(server, "silent")
    silent.auto_pong = True
    silent.reconnect()
    assert silent.resumed and silent.wait_for(ev.UserJoined).room == "room"
    assert not [e for e in bob.drain() if type(e) is ev.UserLeft]


def test_quit_and_a_plain_close_free_the_name_at_once(start_server, clients):
    server = start_server(*LONG_GRACE)
    alice, bob, watcher = (clients(server.port) for _ in range(3))
    alice.connect("alice")
    bob.connect("bob")
    watcher.connect("watcher")
    for client in (alice, bob, watcher):
        client.join("lobby")
    alice.quit("bye")
    # End of stream without Quit: the client chose to go (a close with unread input would
    # be a reset instead, which counts as a blip).
    bob.sock.shutdown(socket.SHUT_WR)
    while bob.sock.recv(65536):
        pass
    left = {watcher.wait_for(ev.UserLeft).name: None for _ in range(2)}
    assert set(left) == {"alice", "bob"}
    for name in ("alice", "bob"):
        again = clients(server.port)
        again.connect(name)


def test_an_old_client_that_ignores_the_token_still_works(server):
    # A protocol-1.0 client reads frames strictly in order and skips unknown types.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, "old", request_id=1)))
        data = b""
        while b"\x81\x00\x00\x00\x01" not in data:
            data += sock.recv(4096)
        assert data[4] == 0x84                  # the ResumeToken came first, then Welcome


def test_a_slow_reader_cut_off_is_held_and_resumes(start_server, clients):
    server = start_server("--max-output-bytes", "65536", *LONG_GRACE)
    slow = clients(server.port)
    slow.sock = socket.socket()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sock.connect(("127.0.0.1", server.port))
    slow.hello("slow")
    slow.join("busy")
    sender = clients(server.port)
    sender.connect("sender")
    sender.join("busy")
    text = "x" * 4000
    sent = 0
    seen = []
    while "slow: output queue passed" not in server.log:
        assert sent < 2500, "the slow reader was never cut off"    # 10 MB
        for _ in range(10):
            sender.send(ev.SendRoom("busy", text))
        sent += 10
        sender.ping()                           # its replies are read: it never falls behind
        seen += sender.drain()
    assert not [e for e in seen + sender.drain() if type(e) is ev.UserLeft]
    slow.sock.close()
    slow.reconnect()
    assert slow.resumed and slow.wait_for(ev.UserJoined).room == "busy"


def test_held_sessions_count_toward_the_client_limit(start_server, clients):
    server = start_server("--max-clients", "2", *LONG_GRACE)
    alice, bob = clients(server.port), clients(server.port)
    alice.connect("alice")
    bob.connect("bob")
    reset(alice)
    server.wait_for_log("alice: dropped (DISCONNECTED); session held 60s")
    # bob and alice's held session fill the server: a new user is refused ...
    carol = clients(server.port)
    assert "waiting to resume" in refused(lambda: carol.connect("carol"),
                                          ErrorCode.SERVER_FULL).message
    # ... but alice, coming back, is not (once carol's refused connection is gone: until
    # then it is one of the two connections the server may hold).
    carol.close()
    for _ in range(500):
        try:
            alice.reconnect()
            break
        except ConnectionClosed as exc:
            assert "server is full (2 clients)" in str(exc)
    assert alice.resumed and alice.name == "alice"
