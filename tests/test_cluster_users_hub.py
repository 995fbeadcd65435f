"""The hub's side of users of other nodes, with a backplane that records what it is asked
(no Redis): renames and away replies across nodes, the name-conflict rule, a session moving
away, and a lost node's users who resumed here meanwhile."""
from __future__ import annotations

from chatcore import events as ev
from chatcore.errors import ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, LocalBackplane, NodeInfo
from tests.test_hub_backplane import Outlet


class RecordingBackplane(LocalBackplane):
    """Every user is claimable; messages to users of other nodes are recorded and reach
    someone (``done(True)``)."""

    shared_users = True

    def __init__(self):
        self.sent = []
        self.evicted = []

    def send_to_user(self, key, message, done=None):
        self.sent.append((key, message))
        if done is not None:
            done(True)


class EvictingOutlet(Outlet):
    def __init__(self):
        super().__init__()
        self.evicted = []

    def evict(self, endpoint):
        self.evicted.append(endpoint)


def make_hub():
    backplane = RecordingBackplane()
    return Hub(NodeInfo("alpha", "127.0.0.1", 7878), backplane=backplane), backplane


def events_of(outlet, endpoint, kind):
    return [event for where, event in outlet.got if where == endpoint and type(event) is kind]


def test_a_remote_partner_rename_follows_the_conversation():
    hub, backplane = make_hub()
    outlet = Outlet()
    alice = hub.connect("alice", outlet, "a")
    hub.receive_from_user("alice", {"kind": "direct", "from": "bob", "msg_id": 1, "ts": 5,
                                    "text": "hi"})
    assert "bob" in alice.conversations
    hub.receive_from_user("alice", {"kind": "renamed", "from": "robert", "old": "bob"})
    assert alice.conversations == {"robert"}
    assert events_of(outlet, "a", ev.NameChanged) == [ev.NameChanged("bob", "robert")]
    assert hub.remote_peers == {"robert": "robert"}
    # Renaming alice tells the partner on the other node, on its channel.
    hub.set_name(alice, "alicia")
    assert ("robert", {"kind": "renamed", "from": "alicia", "old": "alice"}) in backplane.sent


def test_an_away_user_answers_a_remote_sender_once_per_away_period():
    hub, backplane = make_hub()
    alice = hub.connect("alice", Outlet(), "a")
    hub.set_away(alice, "at lunch")
    for text in ("one", "two"):
        hub.receive_from_user("alice", {"kind": "direct", "from": "bob", "msg_id": 1,
                                        "ts": 5, "text": text})
    hub.receive_from_user("alice", {"kind": "action", "from": "bob", "msg_id": 2, "ts": 6,
                                    "text": "waves"})
    replies = [m for key, m in backplane.sent if m.get("kind") == "away"]
    assert replies == [{"kind": "away", "from": "alice", "text": "at lunch"}]
    hub.set_away(alice, "gone home")
    hub.receive_from_user("alice", {"kind": "direct", "from": "bob", "msg_id": 3, "ts": 7,
                                    "text": "three"})
    assert [m["text"] for key, m in backplane.sent if m.get("kind") == "away"] == [
        "at lunch", "gone home"]


def test_the_name_conflict_rule_renames_the_local_user_and_tells_both():
    hub, backplane = make_hub()
    outlet = Outlet()
    alice, carol = hub.connect("alice", outlet, "a"), hub.connect("carol", outlet, "c")
    hub.join(alice, "lobby")
    hub.join(carol, "lobby")
    hub.name_lost("alice")
    assert alice.name.startswith("guest-") and "alice" not in hub.sessions
    assert events_of(outlet, "c", ev.NameChanged) == [ev.NameChanged("alice", alice.name)]
    errors = events_of(outlet, "a", ev.Error)
    assert [e.code for e in errors] == [ErrorCode.NAME_CONFLICT] and alice.name in \
        errors[0].message
    conflict = [(key, m) for key, m in backplane.sent if m.get("kind") == "conflict"]
    assert conflict and conflict[0][0] == "alice" and alice.name in conflict[0][1]["text"]


def test_a_session_that_moved_away_goes_without_telling_its_partners():
    hub, _ = make_hub()
    outlet = EvictingOutlet()
    alice, carol = hub.connect("alice", outlet, "a"), hub.connect("carol", outlet, "c")
    hub.open_chat(carol, "alice")
    hub.join(alice, "lobby")
    hub.join(carol, "lobby")
    assert hub.moved_elsewhere("alice", "beta")
    assert "alice" not in hub.sessions and outlet.evicted == ["a"]
    assert not events_of(outlet, "c", ev.ChatClosed)
    left = events_of(outlet, "c", ev.UserLeft)
    assert [(e.name, e.reason, e.message) for e in left] == [
        ("alice", Reason.DISCONNECTED, "resumed on server beta")]
    # carol's chat goes on, with a user of another node now.
    assert "alice" in carol.conversations and hub.remote_peers["alice"] == "alice"
    assert not hub.moved_elsewhere("alice", "beta")


def test_a_lost_node_does_not_end_chats_with_a_user_resumed_here():
    hub, _ = make_hub()
    outlet = Outlet()
    carol = hub.connect("carol", outlet, "c")
    hub.receive_from_user("carol", {"kind": "open", "from": "alice"})
    hub.connect("alice", outlet, "a")       # as if resumed here from the lost node
    hub.remote_users_lost(["alice"])
    assert not events_of(outlet, "c", ev.ChatClosed)
    assert "alice" in carol.conversations
