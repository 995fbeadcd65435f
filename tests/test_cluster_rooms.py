"""Rooms with members on several cluster nodes (real server processes, a real redis-server):
messages, actions, topics, joins, leaves and quits everywhere; one order for every member
with concurrent senders on different nodes, also while a room spreads to a second node and
back; a node killed (its members leave with SERVER_LOST); Redis restarted mid-chat."""
from __future__ import annotations

import signal

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from tests.test_cluster_nodes import eventually

ROOM_EVENTS = (ev.RoomMessage, ev.RoomAction, ev.UserJoined, ev.UserLeft, ev.TopicChanged)


def room_events(client, room: str = "lobby") -> list:
    """The room events ``client`` has received so far, oldest first (others stay queued)."""
    got, kept = [], []
    for event in client.drain():
        (got if isinstance(event, ROOM_EVENTS) and event.room == room else kept).append(event)
    client._events.extend(kept)
    return got


def texts_until(client, count: int, room: str = "lobby") -> list[tuple[str, str]]:
    """The next ``count`` room messages as (sender, text)."""
    return [(m.sender, m.text) for m in
            (client.wait_for(lambda e: type(e) is ev.RoomMessage and e.room == room)
             for _ in range(count))]


@pytest.fixture
def two_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    return alpha, beta, clients(alpha, "alice"), clients(beta, "bob")


def test_members_on_two_nodes_see_each_others_messages_actions_topics_and_leaves(two_nodes):
    _, _, alice, bob = two_nodes
    alice.join("lobby")
    joined = bob.join("Lobby")
    assert joined.room == "lobby" and joined.total == 2     # the first spelling, cluster-wide
    assert {m.name for m in joined.members} == {"alice", "bob"}
    assert alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    ack = alice.send_room("lobby", "hi bob, from alpha")
    message = bob.wait_for(ev.RoomMessage)
    assert (message.sender, message.text, message.msg_id) == ("alice", "hi bob, from alpha",
                                                              ack.msg_id)
    bob.send_room("lobby", "hi alice, from beta")
    assert alice.wait_for(lambda e: type(e) is ev.RoomMessage
                          and e.sender == "bob").text == "hi alice, from beta"
    bob.send_room_action("lobby", "waves")
    action = alice.wait_for(ev.RoomAction)
    assert (action.sender, action.text) == ("bob", "waves")
    alice.set_topic("lobby", "across nodes")
    topic = bob.wait_for(ev.TopicChanged)
    assert (topic.name, topic.topic) == ("alice", "across nodes")
    bob.leave("lobby")
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason) == ("bob", Reason.CLOSED)
    again = bob.join("lobby")               # the topic was kept in Redis
    assert (again.topic, again.topic_by, again.total) == ("across nodes", "alice", 2)


def test_the_sender_sees_its_message_before_its_ack(two_nodes):
    _, _, alice, bob = two_nodes
    alice.join("lobby")
    bob.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    alice.drain()
    request_id = alice.send(ev.SendRoom("lobby", "mine"))
    ack = alice.wait_for(lambda e: getattr(e, "request_id", 0) == request_id)
    assert isinstance(ack, ev.Ack)
    assert [(m.sender, m.text) for m in room_events(alice)] == [("alice", "mine")]


def test_quits_and_disconnects_reach_members_on_other_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta", "--resume-grace-seconds", "0")
    alice, bob, carol = clients(alpha, "alice"), clients(beta, "bob"), clients(beta, "carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "carol")
    bob.quit("bye now")
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason, left.message) == ("bob", Reason.QUIT, "bye now")
    carol.close()                           # no Quit: the connection just ends
    left = alice.wait_for(ev.UserLeft)
    assert (left.name, left.reason) == ("carol", Reason.DISCONNECTED)


def test_every_member_sees_one_order_with_senders_on_three_nodes(start_node, clients):
    nodes = [start_node(name) for name in ("alpha", "beta", "gamma")]
    members = [clients(node, f"{node_name}-{i}") for node, node_name in
               zip(nodes, ("alpha", "beta", "gamma")) for i in range(2)]
    for member in members:
        member.join("lobby")
    for index, member in enumerate(members):    # everyone has seen those after it join
        for other in members[index + 1:]:
            member.wait_for(lambda e, n=other.name: type(e) is ev.UserJoined and e.name == n)
    senders = members[0], members[2], members[4]
    count = 40
    for i in range(count):                  # pipelined, interleaved: no waiting between
        for sender in senders:
            sender.send(ev.SendRoom("lobby", f"{sender.name} {i}"))
    seen = [texts_until(member, count * len(senders)) for member in members]
    assert all(sequence == seen[0] for sequence in seen), "members disagree on the order"
    for sender in senders:                  # and each sender's in the order sent
        mine = [text for name, text in seen[0] if name == sender.name]
        assert mine == [f"{sender.name} {i}" for i in range(count)]


def test_one_order_while_a_room_spreads_to_a_second_node_and_back(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, carol = clients(alpha, "alice"), clients(alpha, "carol")
    bob = clients(beta, "bob")
    alice.join("lobby")
    carol.join("lobby")
    for i in range(20):                     # local: delivered at once on alpha...
        alice.send(ev.SendRoom("lobby", f"a{i}"))
    bob.join("lobby")                       # ...while the room spreads to beta
    for i in range(20):
        alice.send(ev.SendRoom("lobby", f"b{i}"))
        bob.send(ev.SendRoom("lobby", f"c{i}"))
    bob.send(ev.LeaveRoom("lobby"))         # back to one node
    for i in range(20):
        carol.send(ev.SendRoom("lobby", f"d{i}"))
    at_alice = texts_until(alice, 80)
    at_carol = texts_until(carol, 80)
    assert at_alice == at_carol
    order = [text for _, text in at_alice]
    for prefix in "abcd":
        assert [t for t in order if t[0] == prefix] == [f"{prefix}{i}" for i in range(20)]
    # bob saw a stretch of alpha's order, from its join to its leave, without holes
    bob.wait_for(lambda e: type(e) is ev.UserLeft and e.name == "bob")
    at_bob = [e.text for e in room_events(bob) if type(e) is ev.RoomMessage]
    assert [t for t in at_bob if t[0] == "c"] == [f"c{i}" for i in range(20)]
    start = order.index(at_bob[0])
    assert order[start:start + len(at_bob)] == at_bob


def test_room_joined_and_lists_show_members_of_every_node(start_node, clients):
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    people = {"alpha": ["ann", "abe"], "beta": ["bea"], "gamma": ["gus", "gil", "guy"]}
    connected = {}
    for node, names in zip((alpha, beta, gamma), people.values()):
        for name in names:
            connected[name] = clients(node, name)
            connected[name].join("lobby")
    for i in range(5):                      # rooms on one node each
        connected["bea"].join(f"room-{i}")
    joined = connected["ann"].join("lobby")
    assert joined.total == 6
    assert {m.name for m in joined.members} == {n for names in people.values() for n in names}
    # The room list with cluster-wide counts, from any node, paged.
    for viewer in (connected["ann"], connected["gus"]):
        rooms = {r.name: r.members for r in viewer.list_rooms().rooms}
        assert rooms == {"lobby": 6, **{f"room-{i}": 1 for i in range(5)}}
        first = viewer.list_rooms_page(limit=2)
        assert [r.name for r in first.rooms] == ["lobby", "room-0"]
        assert first.total == 6 and first.next_after == "room-0"
        second = viewer.list_rooms_page(after=first.next_after, limit=10)
        assert [r.name for r in second.rooms] == [f"room-{i}" for i in range(1, 5)]
        assert second.next_after == ""
        matched = viewer.list_rooms_page(pattern="room-[13]")
        assert [r.name for r in matched.rooms] == ["room-1", "room-3"]
    # A room's members with their node, paged, from a node that has none of them.
    outsider = clients(beta, "zed")
    users = outsider.list_users("lobby").users
    assert {(u.name, u.server) for u in users} == {
        (n, node) for node, names in people.items() for n in names}
    page = outsider.list_users_page("lobby", limit=4)
    assert [u.name for u in page.users] == ["abe", "ann", "bea", "gil"]
    assert page.total == 6 and page.next_after == "gil"
    rest = outsider.list_users_page("lobby", after=page.next_after, limit=4)
    assert [u.name for u in rest.users] == ["gus", "guy"] and rest.next_after == ""
    assert [u.name for u in outsider.list_users_page("lobby", pattern="g*").users] == [
        "gil", "gus", "guy"]
    assert outsider.list_users("nowhere").users == ()
    # Leaving shows in the lists too: at once on the leaver's node, soon on the others.
    connected["gus"].leave("lobby")
    assert {r.name: r.members for r in connected["gil"].list_rooms().rooms}["lobby"] == 5
    eventually(lambda: {r.name: r.members for r in outsider.list_rooms().rooms}["lobby"],
               lambda count: count == 5)


def test_a_killed_nodes_members_leave_every_room_with_server_lost(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice = clients(alpha, "alice")
    bob, bea = clients(beta, "bob"), clients(beta, "bea")
    for client in (alice, bob, bea):
        client.join("lobby")
    bob.join("other")
    alice.join("other")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.room == "other"
                   and e.name == "alice")
    beta.signal(signal.SIGKILL)
    lost = {(e.room, e.name): e.reason for e in
            (alice.wait_for(ev.UserLeft, timeout=15) for _ in range(3))}
    assert lost == {("lobby", "bob"): Reason.SERVER_LOST, ("lobby", "bea"): Reason.SERVER_LOST,
                    ("other", "bob"): Reason.SERVER_LOST}
    # The room goes on locally; the lists forget the dead node's members.
    alice.send_room("lobby", "still here")
    assert alice.wait_for(ev.RoomMessage).text == "still here"
    assert [u.name for u in alice.list_users("lobby").users] == ["alice"]
    eventually(lambda: {r.name: r.members for r in alice.list_rooms().rooms},
               lambda rooms: rooms == {"lobby": 1, "other": 1}, timeout=15)


def test_a_node_that_stops_cleanly_tells_its_members_left(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    assert beta.stop() == 0
    left = alice.wait_for(ev.UserLeft, timeout=10)
    assert left.name == "bob"
    assert left.reason in (Reason.SERVER_SHUTDOWN, Reason.SERVER_LOST)


def test_redis_restarted_mid_chat(start_redis, start_node, clients):
    redis = start_redis()
    alpha = start_node("alpha", redis_url=redis.url)
    beta = start_node("beta", redis_url=redis.url)
    alice, carol, bob = clients(alpha, "alice"), clients(alpha, "carol"), clients(beta, "bob")
    for client in (alice, carol, bob):
        client.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    alice.send_room("lobby", "before")
    assert bob.wait_for(ev.RoomMessage).text == "before"
    redis.stop()
    alpha.wait_for_log("is unreachable", timeout=10)
    alice.send_room("lobby", "alone now")   # the members of one node keep chatting
    assert carol.wait_for(lambda e: type(e) is ev.RoomMessage
                          and e.text == "alone now").sender == "alice"
    redis.start()                           # empty: every node registers its members again
    alpha.wait_for_log("reachable again", timeout=15)
    beta.wait_for_log("reachable again", timeout=15)

    def across() -> bool:
        bob.send_room("lobby", "are you there?")
        try:
            alice.wait_for(lambda e: type(e) is ev.RoomMessage and e.sender == "bob"
                           and e.text == "are you there?", timeout=0.5)
            return True
        except TimeoutError:
            return False
    eventually(across, bool, timeout=20)
    eventually(lambda: {u.name for u in carol.list_users("lobby").users},
               lambda names: names == {"alice", "bob", "carol"}, timeout=15)
    alice.drain()
    ack = bob.send_room("lobby", "after")
    got = alice.wait_for(lambda e: type(e) is ev.RoomMessage and e.text == "after")
    assert got.msg_id == ack.msg_id


def test_room_messages_are_numbered_and_a_gap_is_counted_and_logged(start_node, clients,
                                                                    redis_server,
                                                                    cluster_name):
    import json
    alpha = start_node("alpha")
    alice = clients(alpha, "alice")
    alice.join("lobby")
    channel = f"{cluster_name}:v1:room:lobby"

    def forged(seq: int, kind: str = "message", **fields) -> bytes:
        return json.dumps({"v": 1, "node": "ghost", "instance": "ghost-1", "seq": seq,
                           "kind": kind, **fields}).encode()

    said = {"room": "lobby", "sender": "ghost", "msg_id": 1, "timestamp_ms": 1}
    redis_server.command("PUBLISH", channel, forged(1, text="one", **said))
    redis_server.command("PUBLISH", channel, forged(5, text="five", **said))
    assert [alice.wait_for(ev.RoomMessage).text for _ in range(2)] == ["one", "five"]
    alpha.wait_for_log("missed 3 message(s) of room 'lobby' from node 'ghost' (seq 5 after 1)")
    # A kind this node does not know (a later node's) is logged once and skipped.
    redis_server.command("PUBLISH", channel, forged(6, "wobble"))
    redis_server.command("PUBLISH", channel, forged(7, "wobble"))
    redis_server.command("PUBLISH", channel, forged(8, text="eight", **said))
    assert alice.wait_for(ev.RoomMessage).text == "eight"
    alpha.wait_for_log("ignoring room messages of kind 'wobble' from 'ghost'")


def test_the_room_limit_is_the_clusters(start_node, clients):
    alpha = start_node("alpha", "--max-rooms", "2")
    beta = start_node("beta", "--max-rooms", "2")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("one")
    bob.join("two")
    with pytest.raises(ChatError) as refused:
        alice.join("three")
    assert refused.value.code == ErrorCode.SERVER_ROOM_LIMIT
    alice.join("two")                       # an existing room is fine
    bob.leave("two")
    alice.leave("two")                      # gone cluster-wide: room for another...

    def join_three() -> bool:               # ...once alpha's leave reached Redis
        try:
            bob.join("three")
            return True
        except ChatError as exc:
            assert exc.code == ErrorCode.SERVER_ROOM_LIMIT
            return False
    eventually(join_three, bool)


def test_a_session_moved_to_another_node_stays_in_its_rooms(start_node, clients):
    from tests.test_cluster_users_resume import resume_on
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    alice, carol = clients(alpha, "alice"), clients(gamma, "carol")
    alice.join("lobby")
    carol.join("lobby")
    eventually(lambda: carol.whois("alice").rooms, lambda rooms: rooms)   # in the record
    moved = resume_on(beta, alice)
    try:
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        members = eventually(lambda: [u.name for u in carol.iter_users("lobby")],
                             lambda names: names == ["alice", "carol"]
                             and carol.whois("alice").server == "beta")
        assert members == ["alice", "carol"]
        carol.send_room("lobby", "still with us?")
        assert moved.wait_for(lambda e: type(e) is ev.RoomMessage
                              and e.text == "still with us?")
        moved.send_room("lobby", "yes, from beta")
        assert carol.wait_for(lambda e: type(e) is ev.RoomMessage
                              and e.sender == "alice").text == "yes, from beta"
    finally:
        moved.close()


def test_a_rename_reaches_the_rooms_on_other_nodes_once(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, carol = clients(alpha, "alice"), clients(beta, "carol")
    for room in ("lobby", "den"):
        alice.join(room)
        carol.join(room)
    alice.send_direct("carol", "hello")                 # a chat too: three ways to hear it
    carol.wait_for(ev.DirectMessage)
    carol.wait_for(lambda e: type(e) is ev.UserJoined and e.room == "den"
                   and e.name == "carol")
    alice.set_name("alicia")
    changed = carol.wait_for(ev.NameChanged)
    assert (changed.old, changed.new) == ("alice", "alicia")
    eventually(lambda: [u.name for u in carol.list_users("lobby").users],
               lambda names: names == ["alicia", "carol"])
    alice.send_room("den", "new name, same me")
    said = carol.wait_for(ev.RoomMessage)
    assert (said.sender, said.text) == ("alicia", "new name, same me")
    assert not [e for e in carol.drain() if type(e) is ev.NameChanged]     # told once
    alice.leave("lobby")
    left = carol.wait_for(ev.UserLeft)
    assert (left.room, left.name) == ("lobby", "alicia")
    eventually(lambda: [u.name for u in carol.list_users("lobby").users],
               lambda names: names == ["carol"])


def test_a_member_of_another_node_away_before_it_joined_shows_away(start_node, clients):
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    alice = clients(alpha, "alice")
    alice.join("lobby")
    bob = clients(beta, "bob")
    bob.set_away("lunch")
    bob.join("lobby")                       # away already: alpha hears it with the join
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    carol = clients(alpha, "carol")
    assert {m.name: m.away for m in carol.join("lobby").members} == {
        "alice": False, "bob": True, "carol": False}
    # gamma opens the room afterwards: it learns bob's away state with the room's members.
    dave = clients(gamma, "dave")
    members = {m.name: m.away for m in dave.join("lobby").members}
    assert members["bob"] is True and members["alice"] is False
    # Member lists (from Redis) show it too, asked on any node.
    for asker in (alice, dave):
        listed = {u.name: u.away for u in asker.list_users("lobby").users}
        assert listed["bob"] == "lunch" and listed["alice"] == ""
    bob.back()
    alice.wait_for(lambda e: type(e) is ev.AwayChanged and e.name == "bob")
    erin = clients(alpha, "erin")
    assert {m.name: m.away for m in erin.join("lobby").members}["bob"] is False
