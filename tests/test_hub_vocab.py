"""The chat vocabulary in the hub: names, away, topics, actions, user details, join state,
and the text rule; each rule's outcome is the events each recipient receives."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, HubLimits, NodeInfo
from tests.test_hub import Clock, RecordingOutlet

WALL_MS = 1_700_000_000_500


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def outlet():
    return RecordingOutlet()


@pytest.fixture
def hub(clock):
    return Hub(NodeInfo("node-a", "127.0.0.1", 7878),
               HubLimits(max_topic_bytes=20, max_away_bytes=12, max_quit_bytes=12,
                         max_join_members=3),
               clock=clock, wallclock=lambda: WALL_MS / 1000)


@pytest.fixture
def users(hub, outlet):
    """alice, bob, carol, dave connected; every endpoint is the user's name."""
    return {name: hub.connect(name, outlet, name) for name in ("alice", "bob", "carol", "dave")}


def refused(code: ErrorCode, call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    assert caught.value.code == code
    return caught.value.message


# -- names -----------------------------------------------------------------------------------

def test_rename_tells_each_room_member_and_chat_peer_once(hub, outlet, users):
    alice = users["alice"]
    for room in ("r1", "r2"):
        hub.join(alice, room)
        hub.join(users["bob"], room)            # bob shares two rooms and a chat
    hub.join(users["carol"], "r2")
    hub.open_chat(alice, "bob")
    hub.open_chat(users["dave"], "alice")        # dave shares only a chat
    outlet.received.clear()
    hub.set_name(alice, "alicia")
    told = ev.NameChanged("alice", "alicia")
    assert outlet.received == {"alice": [told], "bob": [told], "carol": [told],
                               "dave": [told]}
    assert alice.name == "alicia"


def test_rename_tells_nobody_unrelated(hub, outlet, users):
    hub.join(users["alice"], "r")
    hub.join(users["bob"], "r")
    outlet.received.clear()
    hub.set_name(users["alice"], "alicia")
    assert set(outlet.received) == {"alice", "bob"}


def test_rooms_and_chats_keep_working_under_the_new_name(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.open_chat(alice, "bob")
    hub.set_name(alice, "alicia")
    outlet.received.clear()
    msg_id, ts = hub.send_room(alice, "r", "still here")
    assert outlet.take("bob") == [ev.RoomMessage("r", "alicia", msg_id, ts, "still here")]
    outlet.received.clear()
    msg_id, ts = hub.send_direct(bob, "ALICIA", "hi")
    assert outlet.take("alice") == [ev.DirectMessage("bob", msg_id, ts, "hi")]   # no reopen
    assert [u.name for u in hub.list_users("r")] == ["alicia", "bob"]
    refused(ErrorCode.NO_SUCH_USER, hub.send_direct, bob, "alice", "old name")
    hub.close_chat(bob, "alicia")
    assert outlet.take("alice") == [ev.ChatClosed("bob", Reason.CLOSED)]
    hub.leave(alice, "r")
    assert [u.name for u in hub.list_users("r")] == ["bob"]
    hub.disconnect(bob, Reason.QUIT)
    assert hub.list_rooms() == []


def test_the_old_name_is_free_and_the_new_one_taken(hub, outlet, users):
    hub.set_name(users["alice"], "alicia")
    assert hub.connect("ALICE", outlet, "alice2").name == "ALICE"
    assert "taken" in refused(ErrorCode.NAME_TAKEN, hub.connect, "Alicia", outlet, "x")


def test_rename_collision_is_refused_and_changes_nothing(hub, outlet, users):
    alice = users["alice"]
    hub.join(alice, "r")
    outlet.received.clear()
    message = refused(ErrorCode.NAME_TAKEN, hub.set_name, alice, "BOB")
    assert "'BOB' is taken" in message
    assert alice.name == "alice" and outlet.received == {}


@pytest.mark.parametrize("name, why", [("", "empty"), ("1x", "start with a letter"),
                                       ("a b", "may only contain"), ("x" * 33, "limit is 32")])
def test_rename_follows_the_hello_rules(hub, users, name, why):
    assert why in refused(ErrorCode.NAME_INVALID, hub.set_name, users["alice"], name)


def test_case_only_rename_is_allowed_and_same_name_tells_nobody(hub, outlet, users):
    alice = users["alice"]
    hub.join(alice, "r")
    outlet.received.clear()
    hub.set_name(alice, "alice")
    assert outlet.received == {}
    hub.set_name(alice, "Alice")
    assert outlet.take("alice") == [ev.NameChanged("alice", "Alice")]
    assert [u.name for u in hub.list_users()][0] == "Alice"


# -- away ------------------------------------------------------------------------------------

def test_away_is_shown_in_lists_and_details(hub, users):
    hub.set_away(users["bob"], "lunch")
    by_name = {u.name: u.away for u in hub.list_users()}
    assert by_name == {"alice": "", "bob": "lunch", "carol": "", "dave": ""}
    assert hub.whois(users["alice"], "bob").away == "lunch"
    hub.set_away(users["bob"], "")
    assert hub.whois(users["alice"], "bob").away == ""


def test_direct_message_to_an_away_user_is_answered_once_per_sender(hub, outlet, users):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    hub.set_away(bob, "lunch")
    outlet.received.clear()
    hub.send_direct(alice, "bob", "one")
    hub.send_direct(alice, "bob", "two")
    hub.send_direct_action(alice, "bob", "waves")
    hub.send_direct(carol, "bob", "hey")
    assert outlet.take("alice") == [ev.AwayReply("bob", "lunch")]
    assert outlet.take("carol") == [ev.AwayReply("bob", "lunch")]
    assert [type(e) for e in outlet.take("bob")] == [
        ev.ChatOpened, ev.DirectMessage, ev.DirectMessage, ev.DirectAction,
        ev.ChatOpened, ev.DirectMessage]


def test_a_new_away_period_answers_again_and_back_answers_nobody(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.set_away(bob, "lunch")
    hub.send_direct(alice, "bob", "one")
    hub.set_away(bob, "meeting")
    hub.send_direct(alice, "bob", "two")
    assert outlet.take("alice") == [ev.AwayReply("bob", "lunch"),
                                    ev.AwayReply("bob", "meeting")]
    hub.set_away(bob, "")
    hub.send_direct(alice, "bob", "three")
    assert outlet.take("alice") == []


def test_a_renamed_sender_is_not_answered_twice(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.set_away(bob, "lunch")
    hub.send_direct(alice, "bob", "one")
    hub.set_name(alice, "alicia")
    hub.send_direct(alice, "bob", "two")
    assert [e for e in outlet.take("alice") if type(e) is ev.AwayReply] == [
        ev.AwayReply("bob", "lunch")]


def test_away_message_limits(hub, users):
    assert "13 bytes; the limit is 12" in refused(ErrorCode.TEXT_INVALID, hub.set_away,
                                                  users["bob"], "x" * 13)
    refused(ErrorCode.TEXT_INVALID, hub.set_away, users["bob"], "a\rb")
    hub.set_away(users["bob"], "x" * 12)


# -- topics ----------------------------------------------------------------------------------

def test_topic_is_announced_to_members_with_who_set_it(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.join(bob, "r")
    outlet.received.clear()
    hub.set_topic(bob, "R", "release friday")
    told = ev.TopicChanged("r", "bob", WALL_MS, "release friday")
    assert outlet.received == {"alice": [told], "bob": [told]}


def test_setting_the_same_topic_again_tells_only_the_setter(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.set_topic(bob, "r", "release friday")
    outlet.received.clear()
    hub.set_topic(alice, "r", "release friday")
    assert outlet.received == {"alice": [ev.TopicChanged("r", "alice", WALL_MS,
                                                          "release friday")]}
    hub.join(users["carol"], "r")               # still bob's topic
    assert outlet.take("carol")[-1].topic_by == "bob"
    hub.set_topic(bob, "r", "")
    outlet.received.clear()
    hub.set_topic(bob, "r", "")                 # clearing a cleared topic
    assert list(outlet.received) == ["bob"]


def test_topic_is_shown_on_join_and_clearing_it_is_announced(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.set_topic(alice, "r", "release friday")
    outlet.received.clear()
    hub.join(bob, "r")
    assert outlet.take("bob")[-1] == ev.RoomJoined(
        "r", "release friday", "alice", WALL_MS, 2,
        (ev.Member("alice", False), ev.Member("bob", False)))
    hub.set_topic(bob, "r", "")
    assert outlet.take("alice")[-1] == ev.TopicChanged("r", "bob", WALL_MS, "")
    outlet.received.clear()
    hub.join(users["carol"], "r")
    assert outlet.take("carol")[-1].topic_at_ms == 0


def test_topic_needs_membership_and_fits_its_limit(hub, users):
    hub.join(users["alice"], "r")
    refused(ErrorCode.NOT_IN_ROOM, hub.set_topic, users["bob"], "r", "mine")
    assert "21 bytes; the limit is 20" in refused(ErrorCode.TEXT_INVALID, hub.set_topic,
                                                  users["alice"], "r", "x" * 21)


def test_topic_goes_with_the_room(hub, outlet, users):
    hub.join(users["alice"], "r")
    hub.set_topic(users["alice"], "r", "old")
    hub.leave(users["alice"], "r")
    outlet.received.clear()
    hub.join(users["alice"], "r")
    assert outlet.take("alice")[-1].topic == ""


# -- actions ---------------------------------------------------------------------------------

def test_room_action_is_its_own_kind_for_every_member(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.join(bob, "r")
    outlet.received.clear()
    msg_id, ts = hub.send_room_action(alice, "r", "waves")
    told = ev.RoomAction("r", "alice", msg_id, ts, "waves")
    assert outlet.received == {"alice": [told], "bob": [told]}
    assert hub.send_room(alice, "r", "x")[0] > msg_id          # one id sequence


def test_direct_action_opens_the_chat_and_is_its_own_kind(hub, outlet, users):
    msg_id, ts = hub.send_direct_action(users["alice"], "bob", "waves")
    assert outlet.take("bob") == [ev.ChatOpened("alice"),
                                  ev.DirectAction("alice", msg_id, ts, "waves")]
    assert outlet.take("alice") == []


def test_action_errors(hub, users):
    alice = users["alice"]
    refused(ErrorCode.NOT_IN_ROOM, hub.send_room_action, alice, "r", "waves")
    hub.join(alice, "r")
    refused(ErrorCode.TEXT_INVALID, hub.send_room_action, alice, "r", "")
    refused(ErrorCode.NO_SUCH_USER, hub.send_direct_action, alice, "nobody", "waves")
    refused(ErrorCode.CANNOT_CHAT_SELF, hub.send_direct_action, alice, "ALICE", "waves")
    refused(ErrorCode.TEXT_INVALID, hub.send_direct_action, alice, "bob", "\x1b[2J")


# -- user details ----------------------------------------------------------------------------

def test_whois_gives_rooms_in_common_and_presence(hub, users, clock):
    alice, bob = users["alice"], users["bob"]
    for room in ("zeta", "Alpha", "mine"):
        hub.join(bob, room)
    hub.join(alice, "zeta")
    hub.join(alice, "alpha")
    hub.join(users["carol"], "zeta")
    bob.record_rtt(0.004)
    hub.set_away(bob, "brb")
    clock.now += 7
    details = hub.whois(alice, "BOB")
    assert details == ev.UserDetails("bob", "node-a", WALL_MS, 7, 4000, "brb",
                                     (ev.RoomInfo("Alpha", 2), ev.RoomInfo("zeta", 3)))
    assert [room.name for room in hub.whois(bob, "bob").rooms] == ["Alpha", "mine", "zeta"]
    assert hub.whois(users["dave"], "bob").rooms == ()
    refused(ErrorCode.NO_SUCH_USER, hub.whois, alice, "nobody")


# -- join state ------------------------------------------------------------------------------

def test_join_lists_at_most_max_join_members_with_the_total(hub, outlet, users):
    for name in ("alice", "bob", "carol"):
        hub.join(users[name], "r")
    hub.set_away(users["bob"], "zzz")
    outlet.received.clear()
    hub.join(users["dave"], "r")
    joined = outlet.take("dave")[-1]
    assert joined.total == 4
    assert joined.members == (ev.Member("alice", False), ev.Member("bob", True),
                              ev.Member("carol", False))


# -- quit messages ---------------------------------------------------------------------------

def test_quit_message_reaches_rooms_and_chats(hub, outlet, users):
    alice, bob = users["alice"], users["bob"]
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.open_chat(alice, "bob")
    outlet.received.clear()
    hub.check_quit_message("bye\tall")
    hub.disconnect(bob, Reason.QUIT, "bye\tall")
    assert outlet.take("alice") == [ev.UserLeft("r", "bob", Reason.QUIT, "bye\tall"),
                                    ev.ChatClosed("bob", Reason.QUIT, "bye\tall")]


def test_quit_message_limits(hub):
    refused(ErrorCode.TEXT_INVALID, hub.check_quit_message, "x" * 13)
    refused(ErrorCode.TEXT_INVALID, hub.check_quit_message, "bye\x07")
    hub.check_quit_message("")


# -- the text rule ---------------------------------------------------------------------------

FORBIDDEN = ["\x00", "\x07", "\x08", "\x0b", "\x0c", "\r", "\x1b", "\x1f", "\x7f", "\x80",
             "\x9b", "\x9f", "\ud800", "\udfff"]
ALLOWED = ["\n", "\t", " ", "\xa0", "é", "\u2028", "\U0001f600", "\ufeff"]


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_are_refused_everywhere_naming_the_character(hub, users, char):
    alice = users["alice"]
    hub.join(alice, "r")
    text = "innocent" + char + "10:46:30 bob -> #lobby: I resign"
    for call, args in ((hub.send_room, (alice, "r", text)),
                       (hub.send_direct, (alice, "bob", text)),
                       (hub.send_room_action, (alice, "r", text)),
                       (hub.send_direct_action, (alice, "bob", text)),
                       (hub.set_topic, (alice, "r", text[:12])),
                       (hub.set_away, (alice, text[:10])),
                       (hub.check_quit_message, (text[:8] + char,))):
        message = refused(ErrorCode.TEXT_INVALID, call, *args)
        assert f"U+{ord(char):04X}" in message and "at position 8" in message
        assert "resign" not in message


@pytest.mark.parametrize("char", ALLOWED, ids=lambda c: f"U+{ord(c):04X}")
def test_line_feed_tab_and_printable_text_are_accepted(hub, outlet, users, char):
    alice = users["alice"]
    hub.join(alice, "r")
    text = "line one" + char + "line two"
    msg_id, ts = hub.send_room(alice, "r", text)
    assert outlet.take("alice")[-1] == ev.RoomMessage("r", "alice", msg_id, ts, text)
    hub.send_direct(alice, "bob", text)
    hub.set_topic(alice, "r", "t" + char)


def test_the_first_bad_character_is_named_in_a_long_text(hub, users):
    alice = users["alice"]
    hub.join(alice, "r")
    message = refused(ErrorCode.TEXT_INVALID, hub.send_room, alice, "r",
                      "a\n" * 1000 + "\x07" + "\x1b" * 100)
    assert "U+0007" in message and "position 2000" in message
    assert len(message) < 200


# -- renaming in a cluster: the new name is claimed from the backplane first -----------------

def test_rename_waits_for_the_cluster_claim_and_releases_the_old_name(outlet):
    from tests.test_hub_backplane import LaterBackplane
    backplane = LaterBackplane(elsewhere={"carol"})
    hub = Hub(NodeInfo("node-a", "127.0.0.1", 7878), backplane=backplane)
    hub.connect("alice", outlet, "alice", lambda outcome: None)
    backplane.answer_all()
    alice = hub.sessions["alice"]
    hub.join(alice, "r")
    outlet.received.clear()
    outcomes = []
    hub.set_name(alice, "alicia", outcomes.append)
    assert outcomes == [] and alice.name == "alice" and outlet.received == {}
    other = []
    hub.set_name(alice, "ALICIA", other.append)            # the same name, still claimed
    assert other[0].code == ErrorCode.NAME_TAKEN
    backplane.answer_all()
    assert outcomes == [None] and alice.name == "alicia"
    assert backplane.released == ["alice"]
    assert outlet.take("alice") == [ev.NameChanged("alice", "alicia")]
    hub.set_name(alice, "carol", outcomes.append)          # another node's user
    backplane.answer_all()
    assert outcomes[-1].code == ErrorCode.NAME_TAKEN and alice.name == "alicia"
    assert outlet.received == {}


def test_rename_of_a_session_that_ended_meanwhile_gives_the_name_back(outlet):
    from tests.test_hub_backplane import LaterBackplane
    backplane = LaterBackplane()
    hub = Hub(NodeInfo("node-a", "127.0.0.1", 7878), backplane=backplane)
    hub.connect("alice", outlet, "alice", lambda outcome: None)
    backplane.answer_all()
    alice = hub.sessions["alice"]
    outcomes = []
    hub.set_name(alice, "alicia", outcomes.append)
    hub.disconnect(alice, Reason.QUIT)
    backplane.answer_all()
    assert outcomes[0].code == ErrorCode.NO_SUCH_USER
    assert backplane.released == ["alice", "alicia"]
    assert hub.sessions == {}
