"""Room moderation in the chat domain, without sockets: operators, modes, kicks, invites."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, HubLimits, NodeInfo
from chatcore.hub.moderation import MAX_BANS_PER_ROOM, MAX_INVITES_PER_ROOM, normalize_mask
from chatcore.modes import format_changes, parse_mode_string, takes_parameter
from tests.test_hub import RecordingOutlet


@pytest.fixture
def outlet():
    return RecordingOutlet()


@pytest.fixture
def hub():
    return Hub(NodeInfo("node-a", "127.0.0.1", 7878), HubLimits(),
               wallclock=lambda: 1_700_000_000.5)


@pytest.fixture
def users(hub, outlet):
    """alice (the operator), bob and carol in room "r"; everything told so far forgotten."""
    sessions = {name: hub.connect(name, outlet, name) for name in ("alice", "bob", "carol")}
    for name in sessions:
        hub.join(sessions[name], "r")
    outlet.received.clear()
    return sessions


def refused(code, call, *args, **kwargs) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


def changes(text: str):
    return parse_mode_string(text.split())


def of_type(events, kind):
    return [e for e in events if type(e) is kind]


# -- operators -------------------------------------------------------------------------------

def test_first_joiner_is_operator_and_the_joiner_is_told_the_modes(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    hub.join(alice, "Lobby")
    hub.join(bob, "lobby")
    room = hub.rooms["lobby"]
    assert hub.is_operator(alice, room) and not hub.is_operator(bob, room)
    modes = of_type(outlet.take("bob"), ev.RoomModes)
    assert modes == [ev.RoomModes("Lobby", "n", "", 0, 1_700_000_000_500,
                                  (ev.MemberModes("alice", "o"),), ())]


def test_operator_gives_and_takes_operator_and_voice(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    assert hub.set_room_modes(alice, "r", changes("+ov bob carol")) == []
    told = [ev.RoomModeChanged("r", "alice", (ev.ModeChange(True, "o", "bob"),
                                              ev.ModeChange(True, "v", "carol")))]
    for name in users:
        assert outlet.take(name) == told
    hub.set_room_modes(bob, "r", changes("-v+v carol carol"))     # nothing changes in the end
    assert of_type(outlet.take("alice"), ev.RoomModeChanged) == [ev.RoomModeChanged(
        "r", "bob", (ev.ModeChange(False, "v", "carol"), ev.ModeChange(True, "v", "carol")))]
    outlet.received.clear()
    hub.set_room_modes(alice, "r", changes("+o bob"))              # already: nobody is told
    assert outlet.take("carol") == []
    modes = hub.room_modes(bob, "r")
    assert sorted(modes.members, key=lambda m: m.name) == [
        ev.MemberModes("alice", "o"), ev.MemberModes("bob", "o"), ev.MemberModes("carol", "v")]


def test_non_operators_and_non_members_are_refused(hub, outlet, users):
    bob = users["bob"]
    dave = hub.connect("dave", outlet, "dave")
    assert "not an operator" in refused(ErrorCode.NOT_OPERATOR, hub.set_room_modes, bob, "r",
                                        changes("+m"))
    refused(ErrorCode.NOT_OPERATOR, hub.kick, bob, "r", "carol")
    refused(ErrorCode.NOT_IN_ROOM, hub.set_room_modes, dave, "r", changes("+m"))
    refused(ErrorCode.NOT_IN_ROOM, hub.kick, dave, "r", "bob")


def test_bad_changes_refuse_the_whole_request_natively(hub, outlet, users):
    alice = users["alice"]
    dave = hub.connect("dave", outlet, "dave")
    cases = [("+mx", ErrorCode.MODE_INVALID, "unknown room mode 'x'"),
             ("-n", ErrorCode.MODE_INVALID, "cannot be unset"),
             ("+k", ErrorCode.MODE_INVALID, "key"),
             ("+k a,b", ErrorCode.MODE_INVALID, "key"),
             ("+l 0", ErrorCode.MODE_INVALID, "number"),
             ("+l ten", ErrorCode.MODE_INVALID, "number"),
             ("+o", ErrorCode.MODE_INVALID, "name"),
             ("+o dave", ErrorCode.USER_NOT_IN_ROOM, "not in room"),
             ("+v nobody", ErrorCode.NO_SUCH_USER, "no user"),
             ("+b", ErrorCode.MODE_INVALID, "mask"),
             ("+b bad^mask", ErrorCode.MODE_INVALID, "mask"),
             ("+ooooo a b c d e", ErrorCode.MODE_INVALID, "parameter"),
             ("-o alice", ErrorCode.MODE_INVALID, "last operator")]
    for text, code, words in cases:
        assert words in refused(code, hub.set_room_modes, alice, "r", changes(text)), text
    assert hub.room_modes(alice, "r").modes == "n"          # the +m of "+mx" did not apply
    assert outlet.take("bob") == []
    del dave


def test_partial_applies_what_it_can_and_returns_the_refusals(hub, outlet, users):
    alice = users["alice"]
    refusals = hub.set_room_modes(alice, "r", changes("+mxv nobody"), partial=True)
    assert [(c.mode, e.code) for c, e in refusals] == [("x", ErrorCode.MODE_INVALID),
                                                      ("v", ErrorCode.NO_SUCH_USER)]
    assert outlet.take("bob") == [ev.RoomModeChanged("r", "alice",
                                                     (ev.ModeChange(True, "m"),))]


def test_the_last_operator_leaving_hands_operator_to_the_longest_present(hub, outlet, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    hub.set_room_modes(alice, "r", changes("+v carol"))
    outlet.received.clear()
    hub.leave(alice, "r")
    told = outlet.take("carol")
    assert told[-1] == ev.RoomModeChanged("r", "", (ev.ModeChange(True, "o", "bob"),))
    assert hub.is_operator(bob, hub.rooms["r"])
    hub.disconnect(bob, Reason.QUIT)
    assert hub.is_operator(carol, hub.rooms["r"])
    assert hub.room_modes(carol, "r").members == (ev.MemberModes("carol", "ov"),)
    refused(ErrorCode.MODE_INVALID, hub.set_room_modes, carol, "r", changes("-o carol"))
    assert hub.is_operator(carol, hub.rooms["r"])


def test_an_operator_can_hand_over_and_then_step_down_in_one_request(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.set_room_modes(alice, "r", changes("+o-o bob alice"))
    room = hub.rooms["r"]
    assert hub.is_operator(bob, room) and not hub.is_operator(alice, room)


def test_renamed_operator_stays_operator(hub, outlet, users):
    hub.set_name(users["alice"], "alicia")
    assert hub.room_modes(users["bob"], "r").members == (ev.MemberModes("alicia", "o"),)
    hub.set_room_modes(users["alice"], "r", changes("+v bob"))


# -- flag modes ------------------------------------------------------------------------------

def test_topic_lock(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.set_topic(bob, "r", "anyone may")
    hub.set_room_modes(alice, "r", changes("+t"))
    assert "+t" in refused(ErrorCode.NOT_OPERATOR, hub.set_topic, bob, "r", "no")
    hub.set_topic(alice, "r", "ops only")
    assert hub.rooms["r"].topic == "ops only"


def test_moderated_rooms_let_only_operators_and_voiced_members_speak(hub, outlet, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    hub.set_room_modes(alice, "r", changes("+mv carol"))
    assert "moderated" in refused(ErrorCode.CANNOT_SPEAK, hub.send_room, bob, "r", "hi")
    refused(ErrorCode.CANNOT_SPEAK, hub.send_room_action, bob, "r", "waves")
    hub.send_room(carol, "r", "voiced")
    hub.send_room(alice, "r", "operator")
    hub.set_room_modes(alice, "r", changes("-m"))
    hub.send_room(bob, "r", "free again")


def test_invite_only_key_and_limit_refuse_joins_and_an_invitation_passes(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    dave = hub.connect("dave", outlet, "dave")
    hub.set_room_modes(alice, "r", changes("+i"))
    assert "invite-only" in refused(ErrorCode.INVITE_ONLY, hub.join, dave, "r")
    assert "only its operators" in refused(ErrorCode.NOT_OPERATOR, hub.invite, bob, "r", "dave")
    hub.invite(alice, "r", "dave")
    assert outlet.take("dave") == [ev.Invited("r", "alice")]
    assert hub.join(dave, "r")
    hub.leave(dave, "r")
    refused(ErrorCode.INVITE_ONLY, hub.join, dave, "r")        # an invitation is used once
    hub.set_room_modes(alice, "r", changes("-i+k sesame"))
    assert "needs a key" in refused(ErrorCode.BAD_ROOM_KEY, hub.join, dave, "r")
    assert "wrong key" in refused(ErrorCode.BAD_ROOM_KEY, hub.join, dave, "r", "open")
    assert hub.join(dave, "r", "sesame")
    hub.leave(dave, "r")
    hub.set_room_modes(alice, "r", changes("-k+l * 3"))
    assert "full" in refused(ErrorCode.ROOM_FULL, hub.join, dave, "r")
    hub.invite(bob, "r", "dave")                # without +i any member invites
    assert hub.join(dave, "r")                  # past the limit, invited
    refused(ErrorCode.ALREADY_IN_ROOM, hub.invite, alice, "r", "dave")
    refused(ErrorCode.NO_SUCH_USER, hub.invite, alice, "r", "nobody")


def test_minus_k_tells_the_old_key(hub, outlet, users):
    alice = users["alice"]
    hub.set_room_modes(alice, "r", changes("+kl sesame 5"))
    modes = hub.room_modes(alice, "r")
    assert (modes.modes, modes.key, modes.limit) == ("kln", "sesame", 5)
    assert hub.room_modes(hub.connect("eve", outlet, "eve"), "r").key == ""   # not a member
    outlet.received.clear()
    hub.set_room_modes(alice, "r", changes("-kl"))
    assert outlet.take("bob") == [ev.RoomModeChanged("r", "alice", (
        ev.ModeChange(False, "k", "sesame"), ev.ModeChange(False, "l")))]


def test_invitations_are_bounded_per_room(hub, outlet, users):
    alice = users["alice"]
    guests = [hub.connect(f"g{i}", outlet, f"g{i}") for i in range(MAX_INVITES_PER_ROOM + 1)]
    for guest in guests:
        hub.invite(alice, "r", guest.name)
    hub.set_room_modes(alice, "r", changes("+i"))
    refused(ErrorCode.INVITE_ONLY, hub.join, guests[0], "r")       # the oldest went
    hub.join(guests[-1], "r")


def test_secret_rooms_are_hidden_from_lists_and_non_members(hub, outlet, users):
    alice = users["alice"]
    eve = hub.connect("eve", outlet, "eve")
    hub.join(eve, "open")
    hub.set_room_modes(alice, "r", changes("+s"))
    assert [info.name for info in hub.rooms_page().entries] == ["open"]
    assert hub.room_hidden(eve, "r") and not hub.room_hidden(alice, "r")
    assert "no room" in refused(ErrorCode.NOT_IN_ROOM, hub.room_modes, eve, "R")
    hub.set_room_modes(alice, "r", changes("-s"))
    assert [info.name for info in hub.rooms_page().entries] == ["open", "r"]


# -- kicks -----------------------------------------------------------------------------------

def test_kick_tells_everyone_then_removes_the_member(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.kick(alice, "r", "BOB", "be nice")
    expected = [ev.Kicked("r", "bob", "alice", "be nice"),
                ev.UserLeft("r", "bob", Reason.KICKED, "be nice")]
    for name in users:
        assert outlet.take(name) == expected
    assert "bob" not in hub.rooms["r"].members and "r" not in bob.rooms
    refused(ErrorCode.USER_NOT_IN_ROOM, hub.kick, alice, "r", "bob")
    refused(ErrorCode.NO_SUCH_USER, hub.kick, alice, "r", "nobody")
    refused(ErrorCode.TEXT_INVALID, hub.kick, alice, "r", "carol", "x" * 1000)
    hub.join(bob, "r")                          # a kick is no ban


def test_kicking_yourself_as_the_last_operator_passes_operator_on(hub, outlet, users):
    hub.kick(users["alice"], "r", "alice")
    assert hub.is_operator(users["bob"], hub.rooms["r"])


# -- bans ------------------------------------------------------------------------------------

def test_bans_refuse_joins_and_silence_members_unless_voiced_or_invited(hub, outlet, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    dave = hub.connect("dave", outlet, "dave")
    hub.set_room_modes(alice, "r", changes("+bb Dave b*!*@*"))
    assert [b.mask for b in hub.room_modes(alice, "r").bans] == ["dave!*@*", "b*!*@*"]
    assert "banned" in refused(ErrorCode.BANNED, hub.join, dave, "r")
    assert "banned" in refused(ErrorCode.CANNOT_SPEAK, hub.send_room, bob, "r", "hi")
    hub.send_room(carol, "r", "not banned")
    hub.set_room_modes(alice, "r", changes("+v bob"))
    hub.send_room(bob, "r", "voiced")
    hub.invite(carol, "r", "dave")
    hub.join(dave, "r")
    hub.set_room_modes(alice, "r", changes("-b DAVE!*@*"))
    assert [b.mask for b in hub.room_modes(alice, "r").bans] == ["b*!*@*"]


def test_ban_list_is_bounded(hub, outlet, users):
    alice = users["alice"]
    for i in range(0, MAX_BANS_PER_ROOM, 4):
        masks = [f"n{j}" for j in range(i, min(i + 4, MAX_BANS_PER_ROOM))]
        hub.set_room_modes(alice, "r", changes("+" + "b" * len(masks) + " " + " ".join(masks)))
    assert len(hub.room_modes(alice, "r").bans) == MAX_BANS_PER_ROOM
    assert "limit" in refused(ErrorCode.MODE_INVALID, hub.set_room_modes, alice, "r",
                              changes("+b extra"))


# -- helpers ---------------------------------------------------------------------------------

def test_mode_strings_parse_and_format():
    assert parse_mode_string(["+ov-k+l", "alice", "bob", "key", "5"]) == (
        ev.ModeChange(True, "o", "alice"), ev.ModeChange(True, "v", "bob"),
        ev.ModeChange(False, "k", "key"), ev.ModeChange(True, "l", "5"))
    assert parse_mode_string(["-l+b"]) == (ev.ModeChange(False, "l"),
                                           ev.ModeChange(True, "b"))
    assert parse_mode_string([]) == ()
    assert format_changes(parse_mode_string(["+mo-v", "a", "b"])) == ["+mo-v", "a", "b"]
    assert format_changes([ev.ModeChange(False, "l"), ev.ModeChange(True, "l", "3")]) == [
        "-l+l", "3"]
    assert normalize_mask("Bob") == "bob!*@*"
    assert normalize_mask("bob!u") == "bob!u@*"
    assert normalize_mask("u@host") == "*!u@host"


def test_a_mode_is_one_known_letter(hub, outlet, users):
    alice = users["alice"]
    for mode in ("", "ov", "mm", "x", "\u00e9"):
        assert "unknown room mode" in refused(
            ErrorCode.MODE_INVALID, hub.set_room_modes, alice, "r",
            (ev.ModeChange(True, mode, "bob"),)), mode
    assert hub.room_modes(alice, "r").members == (ev.MemberModes("alice", "o"),)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("biklmnostvz"),
                          st.text("abc*!@", min_size=1, max_size=5)), max_size=8))
def test_format_then_parse_gives_the_changes_back(entries):
    changes = tuple(ev.ModeChange(adding, mode, argument if takes_parameter(mode, adding)
                                  else "") for adding, mode, argument in entries)
    assert parse_mode_string(format_changes(changes)) == changes


def test_a_member_on_another_node_is_out_of_reach_and_says_so(hub, outlet, users):
    alice = users["alice"]
    hub.rooms["r"].remote["zed"] = ("Zed", "node-b")        # as the backplane tells it
    for call, args in ((hub.kick, ("r", "zed")),
                       (hub.set_room_modes, ("r", changes("+o zed"))),
                       (hub.set_room_modes, ("r", changes("+v ZED")))):
        message = refused(ErrorCode.REMOTE_MEMBER, call, alice, *args)
        assert "Zed" in message and "node-b" in message
    assert outlet.take("bob") == []
