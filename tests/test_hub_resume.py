"""Held sessions in the chat domain, on a fake clock: detach, resume, expiry, and what the
others are (not) told meanwhile."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, HubLimits, NodeInfo
from tests.test_hub import Clock, RecordingOutlet


class EvictingOutlet(RecordingOutlet):
    def __init__(self):
        super().__init__()
        self.evicted = []

    def evict(self, endpoint):
        self.evicted.append(endpoint)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def hub(clock):
    return Hub(NodeInfo("node-a", "127.0.0.1", 7878), HubLimits(resume_grace_seconds=30),
               clock=clock)


@pytest.fixture
def outlet():
    return EvictingOutlet()


def _code(call) -> ErrorCode:
    with pytest.raises(ChatError) as error:
        call()
    return error.value.code


def test_a_detached_session_is_silent_until_its_grace_ends(hub, outlet, clock):
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    hub.join(bob, "r")                      # bob is operator: alice's leave changes no mode
    hub.join(alice, "r")
    hub.open_chat(bob, "alice")
    outlet.received.clear()
    hub.detach(alice, Reason.TIMED_OUT)
    hub.send_room(bob, "r", "anyone?")
    assert outlet.take("alice") == []                       # nothing reaches nowhere
    assert [e.text for e in outlet.take("bob")] == ["anyone?"]
    assert _code(lambda: hub.send_direct(bob, "alice", "hi")) == ErrorCode.USER_RECONNECTING
    assert "reserved" in str(pytest.raises(ChatError, hub.connect, "Alice", outlet, "x").value)
    clock.now += 29
    assert hub.expire_detached(100) is False
    assert outlet.take("bob") == []
    clock.now += 2
    hub.expire_detached(100)
    assert outlet.take("bob") == [ev.UserLeft("r", "alice", Reason.TIMED_OUT),
                                  ev.ChatClosed("alice", Reason.TIMED_OUT)]
    assert "alice" not in hub.sessions and [u.name for u in hub.list_users("r")] == ["bob"]
    assert _code(lambda: hub.resume("alice", alice.resume_token, outlet, "a2")) == \
        ErrorCode.RESUME_REFUSED


def test_resume_rebinds_rooms_and_replays_where_the_session_is(hub, outlet, clock):
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.open_chat(alice, "bob")
    token = alice.resume_token
    hub.detach(alice, Reason.DISCONNECTED)
    outlet.received.clear()
    assert _code(lambda: hub.resume("alice", "guess", outlet, "a2")) == ErrorCode.RESUME_REFUSED
    resumed = hub.resume("ALICE", token, outlet, "a2")
    assert resumed is alice and alice.resume_token != token and alice.detached_until is None
    hub.replay(alice)
    assert outlet.take("a2") == [ev.UserJoined("r", "alice"), ev.ChatOpened("bob")]
    hub.send_room(bob, "r", "back?")
    assert [e.text for e in outlet.take("a2")] == ["back?"]
    clock.now += 60
    hub.expire_detached(100)                    # the stale expiry entry does nothing
    assert not [e for e in outlet.take("bob") if type(e) is ev.UserLeft]
    assert hub.sessions["alice"] is alice
    assert _code(lambda: hub.resume("alice", token, outlet, "a3")) == ErrorCode.RESUME_REFUSED


def test_resuming_a_connected_session_evicts_the_old_endpoint(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    hub.join(alice, "r")
    hub.resume("alice", alice.resume_token, outlet, "a2")
    assert outlet.evicted == ["alice"]
    assert hub.rooms["r"].endpoints[outlet] == ["a2"]


def test_no_grace_means_a_drop_is_a_disconnect(clock, outlet):
    hub = Hub(NodeInfo("n", "h", 1), HubLimits(resume_grace_seconds=0), clock=clock)
    alice = hub.connect("alice", outlet, "alice")
    hub.detach(alice, Reason.TOO_SLOW)
    assert "alice" not in hub.sessions


def test_expiry_is_done_in_bounded_batches(hub, outlet, clock):
    sessions = [hub.connect(f"u{i}", outlet, f"u{i}") for i in range(25)]
    for session in sessions:
        hub.detach(session, Reason.DISCONNECTED)
    clock.now += 31
    assert hub.expire_detached(10) is True
    assert len(hub.sessions) == 15
    assert hub.expire_detached(10) is True
    assert hub.expire_detached(10) is False and hub.sessions == {}
