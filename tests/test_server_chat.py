"""Chat behaviour over real sockets against a real server process."""
from __future__ import annotations

import socket

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.protocol import encode_event


def test_welcome_announces_name_and_limits(connect, server):
    alice = connect("alice")
    welcome = alice.welcome
    assert welcome.name == "alice"
    assert welcome.version == 1
    assert welcome.server == f"chatcore@127.0.0.1:{server.port}"
    assert welcome.ping_interval_ms == 200
    assert welcome.max_frame_bytes == 65536
    assert welcome.max_text_bytes == 8192
    assert welcome.max_name_chars == 32


def test_clients_without_a_name_get_unique_ones(connect):
    names = [connect().name for _ in range(20)]
    assert len(set(names)) == 20
    assert all(name.startswith("guest-") for name in names)


def test_assigned_names_skip_taken_ones(connect):
    connect("guest-1")
    assert connect().name == "guest-2"


def test_taken_name_is_refused_case_insensitively_and_retry_works(connect, server):
    connect("Alice")
    bob = ChatClient("127.0.0.1", server.port)
    with pytest.raises(ChatError) as refused:
        bob.connect("aLICE")
    assert refused.value.code == ErrorCode.NAME_TAKEN
    assert "taken" in refused.value.message
    assert bob.hello("bob").name == "bob"
    bob.close()


def test_a_client_refused_its_name_closes_without_a_quit(connect, server):
    connect("alice")
    bob = ChatClient("127.0.0.1", server.port)
    with pytest.raises(ChatError):
        bob.connect("alice")
    peer = "127.0.0.1:%d" % bob.sock.getsockname()[1]
    bob.quit("giving up")
    closing = server.wait_for_log(f"{peer}: closing")
    assert "peer closed its side" in closing      # a plain close, not a broken handshake
    assert "expected Hello" not in server.log


@pytest.mark.parametrize("name, why", [
    ("1abc", "must start with a letter"),
    ("a b", "may only contain"),
    ("x" * 33, "33 characters long; the limit is 32"),
    ("émile", "must start with a letter"),
    ("bob!", "may only contain"),
])
def test_invalid_names_are_refused_with_the_reason(server, name, why):
    with ChatClient("127.0.0.1", server.port) as client:
        with pytest.raises(ChatError) as refused:
            client.connect(name)
        assert refused.value.code == ErrorCode.NAME_INVALID
        assert why in refused.value.message


def test_many_clients_at_once_all_receive_a_room_message(connect):
    clients = [connect(f"user{i}") for i in range(150)]
    for client in clients:
        client.join("crowd")
    ack = clients[0].send_room("crowd", "hello everyone")
    for client in clients:
        message = client.wait_for(ev.RoomMessage)
        assert (message.sender, message.text, message.msg_id) == ("user0", "hello everyone",
                                                                   ack.msg_id)


# -- direct conversations ----------------------------------------------------------------------

def test_direct_chat_open_send_close(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.open_chat("bob")
    assert bob.wait_for(ev.ChatOpened).peer == "alice"
    ack = alice.send_direct("BOB", "hi bob")
    assert ack.msg_id > 0 and ack.timestamp_ms > 1_600_000_000_000
    message = bob.wait_for(ev.DirectMessage)
    assert (message.sender, message.text, message.msg_id, message.timestamp_ms) == (
        "alice", "hi bob", ack.msg_id, ack.timestamp_ms)
    bob.send_direct("alice", "hi alice ✓")
    assert alice.wait_for(ev.DirectMessage).text == "hi alice ✓"
    alice.close_chat("bob")
    closed = bob.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("alice", Reason.CLOSED)


def test_sending_opens_the_conversation_once(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.send_direct("bob", "one")
    alice.send_direct("bob", "two")
    events = [bob.next_event() for _ in range(3)]
    assert events[0] == ev.ChatOpened("alice")
    assert [(e.sender, e.text) for e in events[1:]] == [("alice", "one"), ("alice", "two")]


@pytest.mark.parametrize("request_event, code", [
    (ev.SendDirect("nobody", "hello?"), ErrorCode.NO_SUCH_USER),
    (ev.OpenChat("nobody"), ErrorCode.NO_SUCH_USER),
    (ev.SendDirect("alice", "me"), ErrorCode.CANNOT_CHAT_SELF),
    (ev.CloseChat("bob"), ErrorCode.NO_CONVERSATION),
    (ev.SendDirect("bob", ""), ErrorCode.TEXT_INVALID),
    (ev.SendDirect("bob", "x" * 8193), ErrorCode.TEXT_INVALID),
])
def test_refused_direct_requests_get_an_error_with_their_request_id(connect, request_event,
                                                                     code):
    alice, _bob = connect("alice"), connect("bob")
    request_id = alice.send(request_event)
    error = alice.wait_for(ev.Error)
    assert (error.code, error.fatal, error.request_id) == (code, False, request_id)
    assert error.message
    assert alice.ping() < 5         # still connected and served


def test_peer_disconnect_closes_the_conversation(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.send_direct("bob", "are you there?")
    bob.wait_for(ev.DirectMessage)
    bob.quit("bye")
    closed = alice.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("bob", Reason.QUIT)
    with pytest.raises(ChatError) as refused:
        alice.send_direct("bob", "hello?")
    assert refused.value.code == ErrorCode.NO_SUCH_USER


# -- rooms -------------------------------------------------------------------------------------

def test_join_leave_are_announced_to_every_member(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    assert alice.wait_for(ev.UserJoined) == ev.UserJoined("lobby", "alice")
    bob.join("LOBBY")
    assert alice.wait_for(ev.UserJoined) == ev.UserJoined("lobby", "bob")
    assert bob.wait_for(ev.UserJoined) == ev.UserJoined("lobby", "bob")
    bob.leave("lobby")
    assert alice.wait_for(ev.UserLeft) == ev.UserLeft("lobby", "bob", Reason.CLOSED)
    with pytest.raises(ChatError) as refused:
        bob.send_room("lobby", "still here?")
    assert refused.value.code == ErrorCode.NOT_IN_ROOM


def test_every_member_sees_room_messages_in_the_same_order(connect):
    members = [connect(f"m{i}") for i in range(4)]
    for member in members:
        member.join("ordered")
    for round_ in range(20):
        for member in members[:2]:
            member.send(ev.SendRoom("ordered", f"{member.name}:{round_}"))
    orders = []
    for member in members:
        texts = []
        while len(texts) < 40:
            texts.append(member.wait_for(ev.RoomMessage).text)
        orders.append(texts)
    assert all(order == orders[0] for order in orders)
    assert [t for t in orders[0] if t.startswith("m0")] == [f"m0:{i}" for i in range(20)]


def test_room_list_and_member_counts(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("b-room")
    alice.join("a-room")
    bob.join("a-room")
    rooms = alice.list_rooms()
    assert rooms.total == 2
    assert rooms.rooms == (ev.RoomInfo("a-room", 2), ev.RoomInfo("b-room", 1))
    alice.leave("b-room")
    assert alice.list_rooms().rooms == (ev.RoomInfo("a-room", 2),)


@pytest.mark.parametrize("room", ["", "has space", "#hash", "r" * 65])
def test_invalid_room_names_are_refused(connect, room):
    with pytest.raises(ChatError) as refused:
        connect("alice").join(room)
    assert refused.value.code == ErrorCode.ROOM_INVALID


def test_room_limit_per_user(start_server):
    server = start_server("--max-rooms-per-user", "2")
    with ChatClient("127.0.0.1", server.port) as alice:
        alice.connect("alice")
        alice.join("one")
        alice.join("two")
        with pytest.raises(ChatError) as refused:
            alice.join("three")
        assert refused.value.code == ErrorCode.TOO_MANY_ROOMS


# -- presence and RTT --------------------------------------------------------------------------

def test_user_list_shows_rtt_and_idle_time(connect, server):
    alice, bob = connect("alice", auto_pong=False), connect("bob", auto_pong=False)
    alice.join("lobby")
    for client in (alice, bob):
        ping = client.wait_for(ev.Ping)
        client.send(ev.Pong(ping.token, ping.request_id))
    bob.ping()                  # the server has read bob's Pong once it answers this
    users = alice.list_users()
    assert users.total == 2
    assert [u.name for u in users.users] == ["alice", "bob"]
    for user in users.users:
        assert 0 < user.rtt_us < 1_000_000          # loopback: well under a second
        assert 0 <= user.idle_seconds < 30
        assert user.server == f"chatcore@127.0.0.1:{server.port}"
    assert [u.name for u in alice.list_users("lobby").users] == ["alice"]
    assert alice.list_users("no-such-room").total == 0


def test_server_list_shows_this_node(connect, server):
    alice = connect("alice")
    connect("bob")
    servers = alice.list_servers()
    [here] = servers.servers
    assert (here.name, here.host, here.port, here.users, here.rtt_us) == (
        f"chatcore@127.0.0.1:{server.port}", "127.0.0.1", server.port, 2, 0)
    assert 0 <= here.load_permille <= 2000          # CPU of a 2-core machine, at most


def test_client_ping_measures_rtt(connect):
    alice = connect("alice")
    samples = [alice.ping() for _ in range(5)]
    assert all(0 < s < 1 for s in samples)


def test_user_list_is_truncated_to_one_frame(start_server):
    server = start_server("--max-frame-bytes", "512", "--max-text-bytes", "256")
    clients = []
    try:
        for i in range(40):
            client = ChatClient("127.0.0.1", server.port)
            client.connect(f"user-with-a-longish-name-{i}")
            clients.append(client)
        users = clients[0].list_users()
        assert users.total == 40
        assert 0 < len(users.users) < 40
        assert len(encode_event(users)) - 4 <= 512         # the frame fits the limit
    finally:
        for client in clients:
            client.close()


def test_disconnect_is_announced_and_removes_the_user(start_server):
    # Without a grace period a reset is the end (tests/test_resume.py covers the grace).
    server = start_server("--resume-grace-seconds", "0")
    with ChatClient("127.0.0.1", server.port) as alice, \
            ChatClient("127.0.0.1", server.port) as bob:
        alice.connect("alice")
        bob.connect("bob")
        alice.join("lobby")
        bob.join("lobby")
        bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
        bob.close()                             # an abortive close: the server sees a reset
        left = alice.wait_for(ev.UserLeft)
        assert (left.name, left.reason) == ("bob", Reason.DISCONNECTED)
        assert [u.name for u in alice.list_users().users] == ["alice"]
