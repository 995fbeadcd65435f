"""Messages pipelined into a room shared by two cluster nodes (real server processes, a real
redis-server): published without waiting for each copy to come back, they still reach every
member in order, and the sender's replies (Acks, Errors, other answers) keep request order."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.errors import ErrorCode

# The default window, and one so small that most of the pipeline waits behind it.
WINDOWS = [(), ("--max-room-sends-in-flight", "2")]


def shared_lobby(start_node, clients, flags):
    alpha, beta = start_node("alpha", *flags), start_node("beta", *flags)
    alice, carol, bob = clients(alpha, "alice"), clients(alpha, "carol"), clients(beta, "bob")
    for client in (alice, carol, bob):
        client.join("lobby")
    for client in (alice, carol):
        client.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    alice.drain()
    return alice, carol, bob


def replies(client, request_ids: list[int]) -> list:
    """The replies to ``request_ids`` in the order they arrived, with the sender's own room
    events (as ("seen", text)) where they arrived among them."""
    wanted, got = set(request_ids), []
    while len([r for r in got if not isinstance(r, tuple)]) < len(request_ids):
        event = client.next_event(timeout=30)
        if getattr(event, "request_id", 0) in wanted:
            got.append(event)
        elif type(event) in (ev.RoomMessage, ev.RoomAction) and event.sender == client.name:
            got.append(("seen", event.text))
    return got


def assert_each_seen_before_its_ack(got: list, sent: list[str], ids: list[int]) -> None:
    where = {item: index for index, item in enumerate(got) if isinstance(item, tuple)}
    acked = {r.request_id: index for index, r in enumerate(got) if not isinstance(r, tuple)}
    late = [text for text, rid in zip(sent, ids) if where[("seen", text)] > acked[rid]]
    assert not late, f"seen after their Acks: {late[:5]}"


def texts(client, count: int) -> list[str]:
    return [client.wait_for(lambda e: type(e) in (ev.RoomMessage, ev.RoomAction)
                            and e.room == "lobby", timeout=30).text for _ in range(count)]


@pytest.mark.parametrize("flags", WINDOWS)
def test_200_pipelined_messages_arrive_in_order_everywhere_with_acks_in_order(
        start_node, clients, flags):
    alice, carol, bob = shared_lobby(start_node, clients, flags)
    sent = [f"m{i}" for i in range(200)]
    ids = [alice.send(ev.SendRoom("lobby", text)) for text in sent]
    got = replies(alice, ids)
    assert [r.request_id for r in got if not isinstance(r, tuple)] == ids
    assert all(isinstance(r, ev.Ack) for r in got if not isinstance(r, tuple))
    # Each of its messages reached the sender before its Ack, as on one server (a turn's
    # messages may all come before their Acks: a room batch is told, then answered).
    assert [r for r in got if isinstance(r, tuple)] == [("seen", text) for text in sent]
    assert_each_seen_before_its_ack(got, sent, ids)
    assert texts(bob, 200) == sent
    assert texts(carol, 200) == sent


@pytest.mark.parametrize("flags", WINDOWS)
def test_refusals_and_other_requests_among_pipelined_messages_keep_their_place(
        start_node, clients, flags):
    alice, carol, bob = shared_lobby(start_node, clients, flags)
    requests = ([ev.SendRoom("lobby", f"a{i}") for i in range(30)]
                + [ev.SendRoom("nowhere", "not a member")]          # not in that room
                + [ev.SendRoom("lobby", f"b{i}") for i in range(5)]
                + [ev.SendRoom("lobby", "")]                         # invalid text
                + [ev.SendRoomAction("lobby", "waves")]
                + [ev.Whois("bob")]
                + [ev.SendRoom("lobby", f"c{i}") for i in range(5)]
                + [ev.ListUsers()]
                + [ev.SendRoom("lobby", f"d{i}") for i in range(30)])
    ids = [alice.send(request) for request in requests]
    got = [r for r in replies(alice, ids) if not isinstance(r, tuple)]
    assert [r.request_id for r in got] == ids
    kinds = [type(r) for r in got]
    assert kinds == [ev.Ack] * 30 + [ev.Error] + [ev.Ack] * 5 + [ev.Error, ev.Ack,
                                                                 ev.UserDetails] \
        + [ev.Ack] * 5 + [ev.UserList] + [ev.Ack] * 30
    assert got[30].code == ErrorCode.NOT_IN_ROOM
    assert got[36].code == ErrorCode.TEXT_INVALID
    assert got[38].name == "bob"
    assert {u.name for u in got[44].users} >= {"alice", "bob", "carol"}
    expected = ([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(5)] + ["waves"]
                + [f"c{i}" for i in range(5)] + [f"d{i}" for i in range(30)])
    assert texts(bob, len(expected)) == expected
    assert texts(carol, len(expected)) == expected


def test_pipelined_messages_count_for_flood_control(start_node, clients):
    flags = ("--limit-exempt", "", "--flood-chat-burst-messages", "5", "--flood-chat-messages-per-second", "1000")
    alice, _, bob = shared_lobby(start_node, clients, flags)
    ids = [alice.send(ev.SendRoom("lobby", f"m{i}")) for i in range(50)]
    got = [r for r in replies(alice, ids) if not isinstance(r, tuple)]
    assert [r.request_id for r in got] == ids       # delayed past the burst, not refused
    assert texts(bob, 50) == [f"m{i}" for i in range(50)]
