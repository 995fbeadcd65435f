"""The chat domain without sockets or bytes: a recording outlet stands in for connections."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from chatcore.hub import Hub, HubLimits, NodeInfo


class RecordingOutlet:
    """Records what each endpoint would receive, and how often events were encoded."""

    def __init__(self):
        self.received: dict[str, list] = {}
        self.broadcasts = 0

    def deliver(self, endpoint, event):
        self.received.setdefault(endpoint, []).append(event)

    def broadcast(self, endpoints, event):
        self.broadcasts += 1
        for endpoint in endpoints:
            self.deliver(endpoint, event)

    def take(self, endpoint) -> list:
        return self.received.pop(endpoint, [])


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def hub(clock):
    return Hub(NodeInfo("node-a", "127.0.0.1", 7878), HubLimits(max_rooms_per_user=3),
               clock=clock, wallclock=lambda: 1_700_000_000.5)


@pytest.fixture
def outlet():
    return RecordingOutlet()


def test_room_message_is_encoded_once_per_outlet_for_all_members(hub, outlet):
    other_format = RecordingOutlet()
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    carol = hub.connect("carol", other_format, "carol")
    for session in (alice, bob, carol):
        hub.join(session, "lobby")
    outlet.broadcasts = other_format.broadcasts = 0
    msg_id, timestamp_ms = hub.send_room(bob, "LOBBY", "hi")
    assert (outlet.broadcasts, other_format.broadcasts) == (1, 1)
    expected = ev.RoomMessage("lobby", "bob", msg_id, timestamp_ms, "hi")
    assert outlet.take("alice")[-1] == expected
    assert outlet.take("bob")[-1] == expected
    assert other_format.take("carol")[-1] == expected
    assert timestamp_ms == 1_700_000_000_500


def test_message_ids_increase(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    hub.connect("bob", outlet, "bob")
    hub.join(alice, "r")
    ids = [hub.send_room(alice, "r", "x")[0], hub.send_direct(alice, "bob", "y")[0],
           hub.send_room(alice, "r", "z")[0]]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_disconnect_tells_rooms_and_conversations_and_frees_the_name(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.open_chat(alice, "bob")
    outlet.received.clear()
    hub.disconnect(bob, Reason.TIMED_OUT)
    assert outlet.take("alice") == [ev.UserLeft("r", "bob", Reason.TIMED_OUT),
                                    ev.ChatClosed("bob", Reason.TIMED_OUT)]
    assert [u.name for u in hub.list_users()] == ["alice"]
    assert hub.list_rooms() == [ev.RoomInfo("r", 1)]
    assert hub.connect("BOB", outlet, "bob2").name == "BOB"


def test_empty_rooms_disappear(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    hub.join(alice, "r")
    hub.leave(alice, "r")
    assert hub.list_rooms() == []
    assert hub.rooms == {}


def test_rejoin_is_idempotent_but_tells_the_room_state_again(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    bob = hub.connect("bob", outlet, "bob")
    assert hub.join(alice, "r") is True
    hub.join(bob, "r")
    outlet.received.clear()
    assert hub.join(alice, "R") is False
    assert outlet.received == {"alice": [
        ev.RoomModes("r", "n", "", 0, 1_700_000_000_500, (ev.MemberModes("alice", "o"),), ()),
        ev.RoomJoined("r", "", "", 0, 2, (ev.Member("alice", False), ev.Member("bob", False)))]}


def test_room_limit(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    for room in ("a", "b", "c"):
        hub.join(alice, room)
    with pytest.raises(ChatError) as refused:
        hub.join(alice, "d")
    assert refused.value.code == ErrorCode.TOO_MANY_ROOMS


def test_smoothed_rtt_and_idle_time(hub, outlet, clock):
    alice = hub.connect("alice", outlet, "alice")
    assert hub.list_users()[0].rtt_us == ev.UNKNOWN_RTT
    alice.record_rtt(0.008)
    alice.record_rtt(0.016)
    assert hub.list_users()[0].rtt_us == 9000          # 8 ms + (16 - 8) / 8
    clock.now += 42
    assert hub.list_users()[0].idle_seconds == 42
    hub.list_rooms()                                     # lists do not count as activity
    hub.join(alice, "r")
    assert hub.list_users()[0].idle_seconds == 0


def test_server_list_counts_users(hub, outlet):
    hub.connect("alice", outlet, "alice")
    assert hub.list_servers() == [ev.ServerInfo("node-a", "127.0.0.1", 7878, 1)]


def test_guest_names_are_unique_and_skip_taken_names(hub, outlet):
    hub.connect("guest-2", outlet, "x")
    names = [hub.connect("", outlet, str(i)).name for i in range(3)]
    assert names == ["guest-1", "guest-3", "guest-4"]


@pytest.mark.parametrize("text", ["", "x" * 8193, "é" * 4097])
def test_text_limits(hub, outlet, text):
    alice = hub.connect("alice", outlet, "alice")
    hub.connect("bob", outlet, "bob")
    with pytest.raises(ChatError) as refused:
        hub.send_direct(alice, "bob", text)
    assert refused.value.code == ErrorCode.TEXT_INVALID


def test_text_at_the_limit_is_accepted(hub, outlet):
    alice = hub.connect("alice", outlet, "alice")
    hub.connect("bob", outlet, "bob")
    hub.send_direct(alice, "bob", "é" * 4096)            # 8192 bytes exactly
