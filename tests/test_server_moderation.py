"""Room moderation over the native protocol, against a real server process: operators and
voice, room modes, kicks, invitations, bans, secret rooms, the last-operator rule."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason


def refused(code: ErrorCode, call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


def settled(client: ChatClient) -> list:
    """Everything the server sent ``client`` before answering a ping sent now."""
    client.ping()
    return client.drain()


def of_type(events: list, kind) -> list:
    return [e for e in events if type(e) is kind]


@pytest.fixture
def room(connect):
    """alice (operator), bob and carol in room "lobby", everything told so far read."""
    clients = {name: connect(name) for name in ("alice", "bob", "carol")}
    for client in clients.values():
        client.join("lobby")
    for client in clients.values():
        settled(client)
    return clients


def test_the_joiner_learns_the_modes_just_before_room_joined(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("Lobby")
    settled(alice)
    bob.call(ev.JoinRoom("lobby"))
    events = settled(bob)
    kinds = [type(e) for e in events if type(e) in (ev.RoomModes, ev.RoomJoined)]
    assert kinds == [ev.RoomModes, ev.RoomJoined]
    modes = of_type(events, ev.RoomModes)[0]
    assert (modes.room, modes.modes, modes.key, modes.limit, modes.request_id) == (
        "Lobby", "n", "", 0, 0)
    assert modes.members == (ev.MemberModes("alice", "o"),)
    assert modes.created_at_ms > 0


def test_operator_and_voice_are_given_taken_and_told_to_all(room):
    alice, bob, carol = room["alice"], room["bob"], room["carol"]
    assert type(alice.set_room_mode("lobby", "+ov bob carol")) is ev.Ok
    told = ev.RoomModeChanged("lobby", "alice", (ev.ModeChange(True, "o", "bob"),
                                                 ev.ModeChange(True, "v", "carol")))
    for client in room.values():
        assert of_type(settled(client), ev.RoomModeChanged) == [told]
    bob.set_room_mode("lobby", [ev.ModeChange(False, "v", "CAROL")])
    assert of_type(settled(carol), ev.RoomModeChanged) == [ev.RoomModeChanged(
        "lobby", "bob", (ev.ModeChange(False, "v", "carol"),))]
    modes = carol.room_modes("LOBBY")
    assert sorted(modes.members, key=lambda m: m.name) == [ev.MemberModes("alice", "o"),
                                                           ev.MemberModes("bob", "o")]
    assert "not an operator" in refused(ErrorCode.NOT_OPERATOR, carol.set_room_mode,
                                        "lobby", "+v carol")


def test_refused_changes_change_nothing(room, connect):
    alice, bob = room["alice"], room["bob"]
    connect("dave")
    for text, code in [("+mz", ErrorCode.MODE_INVALID), ("-n", ErrorCode.MODE_INVALID),
                       ("+l many", ErrorCode.MODE_INVALID), ("+k", ErrorCode.MODE_INVALID),
                       ("+m+o dave", ErrorCode.USER_NOT_IN_ROOM),
                       ("+v ghost", ErrorCode.NO_SUCH_USER),
                       ("-o alice", ErrorCode.MODE_INVALID)]:
        refused(code, alice.set_room_mode, "lobby", text)
    refused(ErrorCode.NOT_IN_ROOM, alice.set_room_mode, "elsewhere", "+m")
    assert alice.room_modes("lobby").modes == "n"
    assert of_type(settled(bob), ev.RoomModeChanged) == []


def test_moderated_and_topic_locked(room):
    alice, bob, carol = room["alice"], room["bob"], room["carol"]
    alice.set_room_mode("lobby", "+mtv carol")
    assert "moderated" in refused(ErrorCode.CANNOT_SPEAK, bob.send_room, "lobby", "hi")
    refused(ErrorCode.CANNOT_SPEAK, bob.send_room_action, "lobby", "waves")
    ack = carol.send_room("lobby", "voiced")
    assert bob.wait_for(lambda e: type(e) is ev.RoomMessage and e.msg_id == ack.msg_id)
    assert "+t" in refused(ErrorCode.NOT_OPERATOR, carol.set_topic, "lobby", "mine")
    assert alice.set_topic("lobby", "ops only").topic == "ops only"
    assert alice.room_modes("lobby").modes == "mnt"


def test_invite_only_key_and_limit(room, connect):
    alice, bob = room["alice"], room["bob"]
    dave = connect("dave")
    alice.set_room_mode("lobby", "+i")
    assert "invite-only" in refused(ErrorCode.INVITE_ONLY, dave.join, "lobby")
    refused(ErrorCode.NOT_OPERATOR, bob.invite, "lobby", "dave")
    assert type(alice.invite("lobby", "dave")) is ev.Ok
    assert dave.wait_for(ev.Invited) == ev.Invited("lobby", "alice")
    assert dave.join("lobby").total == 4
    refused(ErrorCode.ALREADY_IN_ROOM, alice.invite, "lobby", "dave")
    dave.leave("lobby")
    refused(ErrorCode.INVITE_ONLY, dave.join, "lobby")             # used up
    alice.set_room_mode("lobby", "-i+k open-sesame")
    refused(ErrorCode.BAD_ROOM_KEY, dave.join, "lobby")
    refused(ErrorCode.BAD_ROOM_KEY, dave.join, "lobby", "wrong")
    assert dave.join("lobby", "open-sesame").total == 4
    assert dave.room_modes("lobby").key == "open-sesame"
    dave.leave("lobby")
    assert connect("eve").room_modes("lobby").key == ""            # members only
    alice.set_room_mode("lobby", "-k+l * 3")                        # IRC's grammar: -k takes a word
    assert "full" in refused(ErrorCode.ROOM_FULL, dave.join, "lobby")
    bob.invite("lobby", "dave")                                     # without +i: any member
    dave.join("lobby")


def test_kick_tells_everyone_and_the_kicked_may_come_back(room):
    alice, bob, carol = room["alice"], room["bob"], room["carol"]
    assert type(alice.kick("lobby", "Bob", "flooding")) is ev.Ok
    for client in room.values():
        events = [e for e in settled(client) if type(e) in (ev.Kicked, ev.UserLeft)]
        assert events == [ev.Kicked("lobby", "bob", "alice", "flooding"),
                          ev.UserLeft("lobby", "bob", Reason.KICKED, "flooding")]
    refused(ErrorCode.NOT_IN_ROOM, bob.send_room, "lobby", "still here?")
    refused(ErrorCode.USER_NOT_IN_ROOM, alice.kick, "lobby", "bob")
    refused(ErrorCode.NO_SUCH_USER, alice.kick, "lobby", "ghost")
    refused(ErrorCode.NOT_OPERATOR, carol.kick, "lobby", "alice")
    refused(ErrorCode.TEXT_INVALID, alice.kick, "lobby", "carol", "bell\x07")
    bob.join("lobby")


def test_bans(room, connect):
    alice, bob, carol = room["alice"], room["bob"], room["carol"]
    dave = connect("dave")
    alice.set_room_mode("lobby", "+bb DAVE c*")
    assert [(b.mask, b.set_by) for b in alice.room_modes("lobby").bans] == [
        ("dave!*@*", "alice"), ("c*!*@*", "alice")]
    assert "banned" in refused(ErrorCode.BANNED, dave.join, "lobby")
    assert "banned" in refused(ErrorCode.CANNOT_SPEAK, carol.send_room, "lobby", "hi")
    bob.send_room("lobby", "not banned")
    bob.invite("lobby", "dave")
    dave.join("lobby")                          # an invitation passes a ban
    alice.set_room_mode("lobby", "-b c*!*@*")
    carol.send_room("lobby", "unbanned")


def test_secret_rooms_are_hidden_from_non_members(room, connect):
    alice = room["alice"]
    eve = connect("eve")
    eve.join("open")
    alice.set_room_mode("lobby", "+s")
    assert [r.name for r in eve.list_rooms().rooms] == ["open"]
    assert [r.name for r in alice.list_rooms().rooms] == ["open"]
    hidden = eve.list_users("lobby")
    assert (hidden.total, hidden.users) == (0, ())
    assert eve.list_users_page("lobby").users == ()
    assert len(alice.list_users("lobby").users) == 3
    assert "no room" in refused(ErrorCode.NOT_IN_ROOM, eve.room_modes, "lobby")
    assert alice.room_modes("lobby").modes == "ns"


def test_the_last_operator_quitting_hands_operator_on(room):
    alice, bob, carol = room["alice"], room["bob"], room["carol"]
    alice.quit("bye")
    changed = carol.wait_for(ev.RoomModeChanged)
    assert changed == ev.RoomModeChanged("lobby", "", (ev.ModeChange(True, "o", "bob"),))
    bob.wait_for(ev.RoomModeChanged)
    bob.set_room_mode("lobby", "+m")
    assert carol.room_modes("lobby").members == (ev.MemberModes("bob", "o"),)


def test_a_malformed_mode_frame_is_refused_and_the_connection_stays(room):
    alice = room["alice"]
    # SetRoomMode whose list says 2 entries but holds one.
    payload = b"\x00\x05lobby\x00\x02\x01\x00\x01m\x00\x00"
    from chatcore.codec import encode_frame
    alice.send_raw(encode_frame(0x25, 77, payload))
    error = alice.wait_for(lambda e: type(e) is ev.Error and e.request_id == 77)
    assert error.code == ErrorCode.BAD_FRAME and not error.fatal
    alice.set_room_mode("lobby", "+t")
