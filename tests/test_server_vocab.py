"""The chat vocabulary over real sockets against a real server process: names, away,
topics, actions, user details, the state told on join, quit messages and the text rule."""
from __future__ import annotations

import time

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.protocol import encode_frame


def refused(code: ErrorCode, call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    assert caught.value.code == code
    return caught.value.message


def settled(client: ChatClient) -> list:
    """Everything the server sent ``client`` before answering a ping sent now."""
    client.ping()
    return client.drain()


def of_type(events: list, kind) -> list:
    return [e for e in events if type(e) is kind]


# -- names -----------------------------------------------------------------------------------

def test_rename_is_told_once_to_rooms_and_chats_and_they_keep_working(connect):
    alice, bob, carol, dave = (connect(n) for n in ("alice", "bob", "carol", "dave"))
    for room in ("r1", "r2"):
        alice.join(room)
        bob.join(room)                           # two rooms in common: told once
    carol.send_direct("alice", "hello")          # a chat in common
    for client in (alice, bob, carol, dave):
        settled(client)
    changed = alice.set_name("alicia")
    assert changed == ev.NameChanged("alice", "alicia")
    assert alice.name == "alicia"
    for client in (bob, carol):
        assert of_type(settled(client), ev.NameChanged) == [ev.NameChanged("alice", "alicia")]
    assert of_type(settled(dave), ev.NameChanged) == []
    assert of_type(settled(alice), ev.NameChanged) == []      # its one copy was the return
    ack = bob.send_room("r1", "still there?")
    message = alice.wait_for(lambda e: type(e) is ev.RoomMessage and e.msg_id == ack.msg_id)
    assert message.sender == "bob"
    carol.send_direct("alicia", "found you")
    assert alice.wait_for(ev.DirectMessage).text == "found you"
    assert refused(ErrorCode.NO_SUCH_USER, carol.send_direct, "alice", "x")
    assert sorted(u.name for u in bob.list_users("r2").users) == ["alicia", "bob"]


def test_rename_collision_and_invalid_names_are_refused(connect):
    alice = connect("alice")
    connect("bob")
    assert "taken" in refused(ErrorCode.NAME_TAKEN, alice.set_name, "BOB")
    assert "start with a letter" in refused(ErrorCode.NAME_INVALID, alice.set_name, "9lives")
    assert alice.whois("alice").name == "alice"


def test_the_old_name_can_be_taken_by_someone_else(connect, server):
    alice = connect("alice")
    alice.set_name("Alicia")
    newcomer = ChatClient("127.0.0.1", server.port)
    assert newcomer.connect("alice").name == "alice"
    newcomer.close()


# -- away ------------------------------------------------------------------------------------

def test_away_answers_each_sender_once_and_shows_in_lists(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    assert type(bob.set_away("at lunch, back at 2")) is ev.Ok
    alice.send_direct("bob", "one")
    alice.send_direct("bob", "two")
    alice.send_direct_action("bob", "pokes bob")
    carol.send_direct("bob", "hi")
    assert of_type(settled(alice), ev.AwayReply) == [ev.AwayReply("bob", "at lunch, back at 2")]
    assert of_type(settled(carol), ev.AwayReply) == [ev.AwayReply("bob", "at lunch, back at 2")]
    got = [e for e in settled(bob) if type(e) in (ev.DirectMessage, ev.DirectAction)]
    assert [e.text for e in got] == ["one", "two", "pokes bob", "hi"]   # all delivered
    users = {u.name: u.away for u in carol.list_users().users}
    assert users == {"alice": "", "bob": "at lunch, back at 2", "carol": ""}
    assert carol.whois("bob").away == "at lunch, back at 2"
    bob.back()
    alice.send_direct("bob", "back yet?")
    assert of_type(settled(alice), ev.AwayReply) == []
    assert carol.whois("bob").away == ""


def test_away_message_over_the_limit_is_refused(connect):
    bob = connect("bob")
    message = refused(ErrorCode.TEXT_INVALID, bob.set_away, "z" * 201)
    assert "201 bytes; the limit is 200" in message and "zzzz" not in message


# -- topics and joining ----------------------------------------------------------------------

def test_join_returns_topic_and_members_and_topic_changes_are_announced(connect):
    alice, bob = connect("alice"), connect("bob")
    first = alice.join("lobby")
    assert first == ev.RoomJoined("lobby", "", "", 0, 1, (ev.Member("alice", False),))
    changed = alice.set_topic("lobby", "release on friday")
    assert (changed.room, changed.name, changed.topic) == ("lobby", "alice",
                                                           "release on friday")
    assert abs(changed.timestamp_ms / 1000 - time.time()) < 60
    alice.set_away("coding")
    joined = bob.join("LOBBY")
    assert (joined.topic, joined.topic_by, joined.topic_at_ms, joined.total) == (
        "release on friday", "alice", changed.timestamp_ms, 2)
    assert sorted(joined.members, key=lambda m: m.name) == [ev.Member("alice", True),
                                                            ev.Member("bob", False)]
    bob.set_topic("lobby", "")
    cleared = alice.wait_for(lambda e: type(e) is ev.TopicChanged and e.topic == "")
    assert cleared.name == "bob"
    assert bob.join("lobby").topic == ""          # a rejoin tells the state again


def test_topic_errors(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    refused(ErrorCode.NOT_IN_ROOM, bob.set_topic, "lobby", "mine now")
    message = refused(ErrorCode.TEXT_INVALID, alice.set_topic, "lobby", "t" * 391)
    assert "391 bytes; the limit is 390" in message


def test_join_lists_at_most_max_join_members(start_server):
    server = start_server("--max-join-members", "2")
    clients = [ChatClient("127.0.0.1", server.port) for _ in range(3)]
    try:
        for number, client in enumerate(clients):
            client.connect(f"user{number}")
            joined = client.join("big")
        assert joined.total == 3 and len(joined.members) == 2
    finally:
        for client in clients:
            client.close()


# -- actions ---------------------------------------------------------------------------------

def test_actions_are_delivered_as_their_own_kind(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    ack = alice.send_room_action("lobby", "waves")
    for client in (alice, bob):
        action = client.wait_for(ev.RoomAction)
        assert action == ev.RoomAction("lobby", "alice", ack.msg_id, ack.timestamp_ms, "waves")
    ack = bob.send_direct_action("alice", "nods")
    assert alice.wait_for(ev.DirectAction) == ev.DirectAction("bob", ack.msg_id,
                                                              ack.timestamp_ms, "nods")
    assert of_type(settled(alice), ev.RoomMessage) == []
    refused(ErrorCode.NOT_IN_ROOM, bob.send_room_action, "elsewhere", "waves")
    refused(ErrorCode.NO_SUCH_USER, bob.send_direct_action, "nobody", "waves")
    refused(ErrorCode.CANNOT_CHAT_SELF, bob.send_direct_action, "BOB", "waves")
    refused(ErrorCode.TEXT_INVALID, bob.send_room_action, "lobby", "")


# -- user details ----------------------------------------------------------------------------

def test_whois_tells_rooms_in_common_rtt_idle_away_server_and_since(connect, server):
    before_ms = time.time() * 1000
    alice = connect("alice")
    bob = connect("bob", auto_pong=False)
    for room in ("shared", "bobs-own"):
        bob.join(room)
    alice.join("shared")
    ping = bob.wait_for(ev.Ping)                  # answer one server ping: an RTT sample
    bob.send(ev.Pong(ping.token, ping.request_id))
    bob.ping()                                    # the server has handled that Pong now
    bob.set_away("afk")
    details = alice.whois("BOB")
    assert details.name == "bob"
    assert details.server == f"chatcore@127.0.0.1:{server.port}"
    assert before_ms - 1000 <= details.connected_at_ms <= time.time() * 1000 + 1000
    assert 0 < details.rtt_us < 5_000_000
    assert 0 <= details.idle_seconds < 60
    assert details.away == "afk"
    assert details.rooms == (ev.RoomInfo("shared", 2),)
    assert [r.name for r in bob.whois("bob").rooms] == ["bobs-own", "shared"]
    assert "no user named 'carol'" in refused(ErrorCode.NO_SUCH_USER, alice.whois, "carol")


# -- quit messages ---------------------------------------------------------------------------

def test_quit_message_reaches_rooms_and_chats(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    bob.send_direct("alice", "hi")
    bob.quit("bye\tfor now")
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason, left.message) == ("bob", Reason.QUIT, "bye\tfor now")
    closed = alice.wait_for(ev.ChatClosed)
    assert (closed.reason, closed.message) == (Reason.QUIT, "bye\tfor now")


def test_a_bad_quit_message_is_refused_but_the_quit_happens(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    request_id = bob.send(ev.Quit("bye\x1b[31m"))
    error = bob.wait_for(ev.Error)
    assert (error.code, error.fatal, error.request_id) == (ErrorCode.TEXT_INVALID, False,
                                                           request_id)
    assert "U+001B" in error.message
    with pytest.raises(ConnectionClosed):
        while True:
            bob.next_event()
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason, left.message) == ("bob", Reason.QUIT, "")


# -- the text rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\x07", "\r", "\x1b", "\x7f", "\x85"],
                         ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_are_refused_naming_the_character(connect, char):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    forged = "innocent" + char + "10:46:30 bob -> #lobby: I resign"
    for call, args in ((alice.send_room, ("lobby", forged)),
                       (alice.send_direct, ("bob", forged)),
                       (alice.send_room_action, ("lobby", forged)),
                       (alice.set_topic, ("lobby", forged))):
        message = refused(ErrorCode.TEXT_INVALID, call, *args)
        assert f"U+{ord(char):04X}" in message and "position 8" in message
        assert "resign" not in message
    received = settled(bob)
    assert [e for e in received if type(e) in (ev.RoomMessage, ev.DirectMessage,
                                               ev.RoomAction, ev.TopicChanged)] == []
    assert alice.send_room("lobby", "still connected").msg_id > 0


def test_line_feed_and_tab_are_delivered_intact(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("lobby")
    bob.join("lobby")
    text = "first line\n\tsecond, indented\nthird"
    alice.send_room("lobby", text)
    assert bob.wait_for(ev.RoomMessage).text == text
    alice.send_direct("bob", text)
    assert bob.wait_for(ev.DirectMessage).text == text
    assert alice.set_topic("lobby", "a\tb").topic == "a\tb"


def test_an_encoded_surrogate_is_bad_utf8_and_the_connection_stays(connect):
    alice = connect("alice")
    alice.join("lobby")
    room = b"lobby"
    payload = len(room).to_bytes(2, "big") + room + b"x\xed\xa0\x80y"   # U+D800 as UTF-8
    alice.send_raw(encode_frame(0x22, 77, payload))
    error = alice.wait_for(ev.Error)
    assert (error.code, error.request_id) == (ErrorCode.BAD_UTF8, 77)
    assert alice.send_room("lobby", "fine").msg_id > 0
