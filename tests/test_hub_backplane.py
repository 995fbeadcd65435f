"""The hub with a backplane that answers later (as a cluster's does): name claims."""
from __future__ import annotations

import pytest

from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, LocalBackplane, NodeInfo


class Outlet:
    def __init__(self):
        self.got = []

    def deliver(self, endpoint, event):
        self.got.append((endpoint, event))

    def broadcast(self, endpoints, event):
        for endpoint in endpoints:
            self.got.append((endpoint, event))


class LaterBackplane(LocalBackplane):
    """Holds each claim until the test answers it; names in ``elsewhere`` are another
    node's (rooms: as on one server)."""

    def __init__(self, elsewhere=()):
        self.waiting = []
        self.released = []
        self.elsewhere = set(elsewhere)

    def claim_name(self, key, done):
        self.waiting.append((key, done))

    def answer_all(self):
        while self.waiting:
            key, done = self.waiting.pop(0)
            done(key not in self.elsewhere)

    def release_name(self, key):
        self.released.append(key)

    def peer_servers(self):
        return []


@pytest.fixture
def backplane():
    return LaterBackplane(elsewhere={"alice", "guest-1"})


@pytest.fixture
def hub(backplane):
    return Hub(NodeInfo("node-a", "127.0.0.1", 7878), backplane=backplane)


def test_a_name_is_the_users_only_once_the_backplane_says_so(hub, backplane):
    outcomes = []
    hub.connect("bob", Outlet(), "bob", outcomes.append)
    assert outcomes == [] and "bob" not in hub.sessions
    # The same name asked for again meanwhile, on this node: refused at once.
    hub.connect("BOB", Outlet(), "bob2", outcomes.append)
    assert outcomes[0].code == ErrorCode.NAME_TAKEN
    backplane.answer_all()
    assert outcomes[1].name == "bob" and hub.sessions["bob"] is outcomes[1]


def test_a_name_held_elsewhere_is_taken(hub, backplane):
    outcomes = []
    hub.connect("Alice", Outlet(), "a", outcomes.append)
    backplane.answer_all()
    assert isinstance(outcomes[0], ChatError) and outcomes[0].code == ErrorCode.NAME_TAKEN
    assert "'Alice' is taken" in outcomes[0].message


def test_a_guest_whose_name_is_held_elsewhere_gets_another(hub, backplane):
    outcomes = []
    hub.connect("", Outlet(), "g", outcomes.append)
    backplane.answer_all()
    assert outcomes[0].name.startswith("guest-") and outcomes[0].name != "guest-1"


def test_invalid_names_are_refused_before_any_claim(hub, backplane):
    with pytest.raises(ChatError) as refused:
        hub.connect("9lives", Outlet(), "x", lambda outcome: None)
    assert refused.value.code == ErrorCode.NAME_INVALID and backplane.waiting == []


def test_a_departure_releases_the_name(hub, backplane):
    outcomes = []
    hub.connect("bob", Outlet(), "bob", outcomes.append)
    backplane.answer_all()
    hub.disconnect(outcomes[0], Reason.CLOSED)
    assert backplane.released == ["bob"]


def test_without_a_callback_a_later_backplane_is_an_error(hub):
    with pytest.raises(RuntimeError, match="pass done"):
        hub.connect("bob", Outlet(), "bob")


class RemoteBackplane(LaterBackplane):
    """Users in ``remote`` are on another node; messages to them are recorded."""

    def __init__(self, remote=()):
        super().__init__()
        self.remote = set(remote)
        self.sent = []

    def send_to_user(self, key, message, done=None):
        self.sent.append((key, message))
        if done is not None:
            self.waiting.append((key, lambda ok: done(key in self.remote)))


def test_a_message_to_a_user_of_another_node_is_acked_once_the_backplane_answers():
    backplane = RemoteBackplane(remote={"bob"})
    hub = Hub(NodeInfo("node-a", "127.0.0.1", 7878), backplane=backplane)
    outcomes = []
    hub.connect("alice", Outlet(), "alice", outcomes.append)
    backplane.answer_all()
    alice = outcomes.pop()
    hub.send_direct(alice, "Bob", "hello", outcomes.append)
    assert outcomes == [] and backplane.sent[-1][1]["text"] == "hello"
    backplane.answer_all()
    msg_id, _ = outcomes.pop()
    assert backplane.sent[-1] == ("bob", {"from": "alice", "kind": "direct",
                                          "msg_id": msg_id, "ts": backplane.sent[-1][1]["ts"],
                                          "text": "hello"})
    assert "bob" in alice.conversations
    hub.send_direct(alice, "carol", "anyone?", outcomes.append)
    backplane.answer_all()
    assert outcomes.pop().code == ErrorCode.NO_SUCH_USER


def test_messages_from_users_of_other_nodes_and_their_nodes_loss():
    backplane = RemoteBackplane()
    hub = Hub(NodeInfo("node-a", "127.0.0.1", 7878), backplane=backplane)
    outlet = Outlet()
    outcomes = []
    hub.connect("alice", outlet, "alice", outcomes.append)
    backplane.answer_all()
    hub.receive_from_user("alice", {"kind": "direct", "from": "Bob", "msg_id": 7, "ts": 1,
                                    "text": "hi"})
    events = [event for _, event in outlet.got]
    assert [type(e).__name__ for e in events] == ["ChatOpened", "DirectMessage"]
    assert events[1].sender == "Bob" and events[1].text == "hi"
    hub.remote_users_lost(["bob"])
    closed = outlet.got[-1][1]
    assert (closed.peer, closed.reason) == ("Bob", Reason.SERVER_LOST)
    assert "bob" not in outcomes[0].conversations
