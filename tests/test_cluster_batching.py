"""Room batches (real server processes, a real redis-server): the events a node sends to a
shared room in one loop turn leave in one PUBLISH, yet every member everywhere sees one
order, each sender's messages in the order sent, and the senders' Acks after their copies."""
from __future__ import annotations

import dataclasses
import json
import socket
import time

import hiredis

from chatcore import events as ev
from chatcore.cluster.envelope import decode_room_batch, encode_room_batch
from chatcore.protocol import encode_event
from tests.irchelpers import irc_port

ROOM_EVENTS = (ev.RoomMessage, ev.RoomAction, ev.TopicChanged, ev.UserJoined, ev.UserLeft)


class ChannelTap:
    """A raw subscriber of one Redis channel: what the nodes publish on it, as they do."""

    def __init__(self, port: int, channel: str):
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.reader = hiredis.Reader()
        self.sock.sendall(hiredis.pack_command(("SUBSCRIBE", channel)))
        assert self._next(10)[0] == b"subscribe"

    def _next(self, timeout: float):
        deadline = time.monotonic() + timeout
        while (reply := self.reader.gets()) is False:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "Redis closed the tap"
            self.reader.feed(data)
        return reply

    def messages_until(self, done, timeout: float = 30.0) -> list[bytes]:
        """Published messages until ``done(messages)`` holds."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            reply = self._next(deadline - time.monotonic())
            if reply[0] == b"message":
                got.append(reply[2])
        return got

    def close(self) -> None:
        self.sock.close()


def frames_in(messages: list[bytes]) -> int:
    return sum(len(decode_room_batch(m)[4]) if m[:1] != b"{" else 0 for m in messages)


def pipelined(client, requests: list, first_id: int) -> list[int]:
    """``requests`` written in one send (so the node reads them in one turn); their ids."""
    ids = list(range(first_id, first_id + len(requests)))
    client.send_raw(b"".join(encode_event(dataclasses.replace(r, request_id=i))
                             for r, i in zip(requests, ids)))
    return ids


def stream(client, done, timeout: float = 30.0) -> list:
    """Every event ``client`` gets, in arrival order, until ``done(events)`` holds."""
    got: list = []
    deadline = time.monotonic() + timeout
    while not done(got):
        event = client.next_event(timeout=max(0.1, deadline - time.monotonic()))
        if event is None:
            raise TimeoutError(f"{client.name}: stream incomplete after {timeout}s")
        got.append(event)
    return got


def room_events(client, last_texts: set, timeout: float = 30.0) -> list[tuple]:
    """The lobby's events ``client`` sees until it has seen every message of
    ``last_texts``, as comparable tuples."""
    seen, waiting = [], set(last_texts)
    while waiting:
        event = client.wait_for(lambda e: type(e) in ROOM_EVENTS
                                and e.room == "lobby", timeout=timeout)
        if type(event) in (ev.RoomMessage, ev.RoomAction):
            seen.append((type(event).__name__, event.sender, event.text))
            waiting.discard(event.text)
        elif type(event) is ev.TopicChanged:
            seen.append(("topic", event.name, event.topic))
        else:
            seen.append((type(event).__name__, event.name))
    return seen


def lobby(start_node, clients, names_alpha, names_beta):
    alpha, beta = start_node("alpha"), start_node("beta")
    members = [clients(alpha, n) for n in names_alpha] + [clients(beta, n) for n in names_beta]
    for member in members:
        member.join("lobby")
    for index, member in enumerate(members):
        for other in members[index + 1:]:
            member.wait_for(lambda e, n=other.name: type(e) is ev.UserJoined and e.name == n)
    for member in members:
        member.drain()                  # the joins: what the tests compare starts after
    return alpha, beta, members


def check_replies(events: list, name: str, ids: list[int], texts: list[str]) -> None:
    """The replies to ``ids`` came in request order, each Ack after the sender's own copy."""
    wanted, acks, seen = set(ids), [], set()
    for event in events:
        if getattr(event, "request_id", 0) in wanted:
            acks.append(event)
            if type(event) is ev.Ack:
                text = texts[ids.index(event.request_id)]
                assert text in seen, f"the Ack of {text!r} came before its copy"
        elif type(event) is ev.RoomMessage and event.sender == name:
            seen.add(event.text)
    assert [r.request_id for r in acks] == ids
    assert all(type(r) is ev.Ack for r in acks)


def test_a_turn_of_messages_from_several_senders_is_few_publishes_and_one_order(
        start_node, clients, redis_server, cluster_name):
    alpha, beta, members = lobby(start_node, clients, ["alice", "carol"], ["bob", "dave"])
    alice, carol, bob, dave = members
    tap = ChannelTap(redis_server.port, f"{cluster_name}:v1:room:lobby")
    count = 100
    sent = {sender.name: [f"{sender.name} {i}" for i in range(count)]
            for sender in (alice, carol, bob)}
    ids = {sender.name: pipelined(sender, [ev.SendRoom("lobby", t) for t in sent[sender.name]],
                                  1000) for sender in (alice, carol, bob)}
    expected = 3 * count

    def complete(member):
        def done(events) -> bool:
            messages = sum(type(e) is ev.RoomMessage for e in events)
            acks = sum(type(e) is ev.Ack for e in events)
            return messages >= expected and acks >= len(ids.get(member.name, ()))
        return done

    streams = {member.name: stream(member, complete(member)) for member in members}
    sequences = [[(e.sender, e.text) for e in events if type(e) is ev.RoomMessage]
                 for events in streams.values()]
    assert all(len(s) == expected for s in sequences)
    assert all(s == sequences[0] for s in sequences), "members disagree on the order"
    for name, texts in sent.items():
        assert [t for sender, t in sequences[0] if sender == name] == texts
        check_replies(streams[name], name, ids[name], texts)
    published = tap.messages_until(lambda got: frames_in(got) >= expected)
    tap.close()
    # 300 messages read in a few turns: far fewer PUBLISHes than messages...
    assert len(published) < count, f"{len(published)} PUBLISHes for {expected} messages"
    # ...each a batch numbered on from the origin's last, per origin.
    last_seq: dict = {}
    for message in published:
        node, instance, first, _, frames = decode_room_batch(message)
        if instance in last_seq:
            assert first == last_seq[instance] + 1
        last_seq[instance] = first + len(frames) - 1


def test_a_mixed_turn_keeps_messages_actions_topics_joins_and_leaves_in_one_order(
        start_node, clients):
    alpha, beta, members = lobby(start_node, clients, ["alice", "carol"], ["bob", "dave"])
    alice, carol, bob, dave = members
    erin = clients(alpha, "erin")
    pipelined(alice, [ev.SendRoom("lobby", f"a{i}") for i in range(20)]
              + [ev.SendRoomAction("lobby", "waves")]
              + [ev.SendRoom("lobby", f"b{i}") for i in range(20)]
              + [ev.SetAway("lunch")]
              + [ev.SendRoom("lobby", f"c{i}") for i in range(20)], 1000)
    pipelined(carol, [ev.SendRoom("lobby", f"d{i}") for i in range(20)]
              + [ev.SetTopic("lobby", "batches")]
              + [ev.SendRoom("lobby", f"e{i}") for i in range(20)], 1000)
    erin.send(ev.JoinRoom("lobby"))
    dave.send(ev.LeaveRoom("lobby"))
    pipelined(bob, [ev.SendRoom("lobby", f"f{i}") for i in range(20)], 1000)
    sequences = [room_events(member, {"c19", "e19", "f19"}) for member in (alice, carol, bob)]
    for s in sequences[1:]:
        assert s == sequences[0], "members disagree on the order"
    everything = sequences[0]
    assert ("RoomAction", "alice", "waves") in everything
    assert ("topic", "carol", "batches") in everything
    assert ("UserJoined", "erin") in everything and ("UserLeft", "dave") in everything
    for prefix, sender in (("a", "alice"), ("b", "alice"), ("c", "alice"), ("d", "carol"),
                           ("e", "carol"), ("f", "bob")):
        mine = [t for kind, *rest in everything if kind == "RoomMessage"
                for s, t in [rest] if s == sender and t[0] == prefix]
        assert mine == [f"{prefix}{i}" for i in range(20)]
    said = [rest[1] for kind, *rest in everything
            if kind in ("RoomMessage", "RoomAction") and rest[0] == "alice"]
    assert said.index("waves") == 20 and said.index("b0") == 21
    # The away change reached bob on the other node (told once, apart from the room order).
    away = bob.wait_for(ev.AwayChanged)
    assert (away.name, away.message) == ("alice", "lunch")
    assert bob.call(ev.Whois("alice")).away == "lunch"


def test_forged_batches_gaps_unknown_frames_and_garbage(start_node, clients, redis_server,
                                                      cluster_name):
    alpha = start_node("alpha")
    alice = clients(alpha, "alice")
    alice.join("lobby")
    channel = f"{cluster_name}:v1:room:lobby"

    def said(*texts) -> list[bytes]:
        return [encode_event(ev.RoomMessage("lobby", "ghost", 1, 1, t)) for t in texts]

    redis_server.command("PUBLISH", channel, encode_room_batch("ghost", "ghost-1", 1,
                                                               said("one", "two")))
    redis_server.command("PUBLISH", channel, encode_room_batch("ghost", "ghost-1", 6,
                                                               said("six")))
    assert [alice.wait_for(ev.RoomMessage).text for _ in range(3)] == ["one", "two", "six"]
    alpha.wait_for_log("missed 3 message(s) of room 'lobby' from node 'ghost' (seq 6 after 2)")
    # A frame type this node does not batch (a later node's) is skipped, logged once.
    odd = encode_event(ev.UserJoined("lobby", "ghost"))
    redis_server.command("PUBLISH", channel, encode_room_batch(
        "ghost", "ghost-1", 7, [*said("seven"), odd, *said("eight")]))
    assert [alice.wait_for(ev.RoomMessage).text for _ in range(2)] == ["seven", "eight"]
    alpha.wait_for_log("ignoring room messages of kind '0xa1' from 'ghost'")
    # A batch whose frames do not add up is dropped whole and logged, nothing delivered.
    broken = encode_room_batch("ghost", "ghost-1", 10, said("nine"))[:-2]
    redis_server.command("PUBLISH", channel, broken)
    alpha.wait_for_log("ignoring a malformed room batch")
    # And a v1 JSON message still reads (a node of the earlier format beside this one).
    redis_server.command("PUBLISH", channel, json.dumps({
        "v": 1, "node": "ghost", "instance": "ghost-1", "seq": 11, "kind": "message",
        "room": "lobby", "sender": "ghost", "msg_id": 2, "timestamp_ms": 2,
        "text": "eleven"}).encode())
    assert alice.wait_for(ev.RoomMessage).text == "eleven"


def test_an_irc_member_gets_a_batch_from_another_node_as_lines(start_node, clients, irc_on):
    alpha = start_node("alpha")
    beta = start_node("beta", "--irc-port", "0")
    beta.irc_port = irc_port(beta)
    alice = clients(alpha, "alice")
    alice.join("lobby")
    dave = irc_on(beta, "dave")
    dave.send("JOIN #lobby")
    dave.expect("366")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "dave")
    pipelined(alice, [ev.SendRoom("lobby", f"m{i}") for i in range(10)]
              + [ev.SendRoomAction("lobby", "waves")], 1000)
    for i in range(10):
        line = dave.expect("PRIVMSG")
        assert (line.source.split("!")[0], line.params) == ("alice", ["#lobby", f"m{i}"])
    assert dave.expect("PRIVMSG").params == ["#lobby", "\x01ACTION waves\x01"]
