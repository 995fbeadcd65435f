"""The lane in real server processes: the same pipelined requests get the same answers and
deliveries from a server with the lane as from one with it off (CHATCORE_NO_LANE=1, the hub
path for every request), with IRC members in a room, and in a cluster room shared by two
nodes on a real Redis, where the lane must hand every message to the backplane's path."""
from __future__ import annotations

import dataclasses

import pytest

from chatcore import events as ev
from chatcore.codec import codec_py
from chatcore.protocol import Role, decode_frame, encode_event
from tests.lane_world import IrcPeer, NativePeer, frame, name_and_text

LANE_OFF = {"CHATCORE_NO_LANE": "1"}
_STAMPS = ("timestamp_ms", "created_at_ms", "topic_at_ms")


def peer(server, name: str) -> NativePeer:
    client = NativePeer(("127.0.0.1", server.port), name)
    client.send(encode_event(ev.Hello(1, name, request_id=1)))
    client.wait_for(lambda f: f[0] == 0x81)
    return client


def irc_peer(server, nick: str) -> IrcPeer:
    client = IrcPeer(("127.0.0.1", server.irc_port), nick)
    client.send(f"NICK {nick}", "USER u 0 * :Real Name")
    client.wait_for_line(b" 001 ")
    client.sync("registered")
    return client


def events_of(received: bytes) -> list:
    """Decoded, without the server's pings, with wall-clock stamps zeroed (two processes never share a clock) and the
    members of RoomModes sorted (the hub lists them from sets)."""
    decoder = codec_py.FrameDecoder(1 << 20)
    decoder.receive_data(received)
    events = []
    while (item := decoder.next_frame()) is not None:
        event = decode_frame(*item, role=Role.CLIENT)
        if type(event) is ev.Ping:
            continue                    # the server's own, every 0.2 s (tests' flags)
        stamps = {name: 0 for name in _STAMPS if hasattr(event, name)}
        if type(event) is ev.RoomModes:
            stamps["members"] = tuple(sorted(event.members, key=lambda m: m.name))
        events.append(dataclasses.replace(event, **stamps) if stamps else event)
    return events


def without_pings(received: bytes) -> bytes:
    """IRC bytes without the server's own keepalive PING lines (every 0.2 s here)."""
    return b"".join(line for line in received.splitlines(keepends=True)
                    if not line.startswith(b"PING "))


def room(name: bytes, text: bytes, request_id: int) -> bytes:
    return frame(0x22, request_id, name_and_text(name, text))


def direct(name: bytes, text: bytes, request_id: int) -> bytes:
    return frame(0x12, request_id, name_and_text(name, text))


# alice's pipeline on one server: natives-only rooms (the lane), a room with an IRC member
# and a moderated room (the hub path), and the refusals of both.
ONE_SERVER_PIPELINE = [
    *(room(b"hall", b"h%d" % i, 100 + i) for i in range(20)),
    room(b"kitchen", b"to irc too", 200), room(b"HALL", b"case", 201),
    room(b"quiet", b"moderated", 202), room(b"nowhere", b"x", 203), room(b"hall", b"", 204),
    room(b"hall", b"\xff\xfe", 205), room(b"hall", b"bell\x07", 206),
    room(b"hall", b"x" * 65, 207), room(b"hall", "\u00e9t\u00e9".encode(), 208),
    direct(b"bob", b"hi", 209), direct(b"ivan", b"to irc", 210), direct(b"zed", b"?", 211),
    direct(b"alice", b"me", 212), direct(b"carol", b"opens a chat", 213),
    *(direct(b"bob", b"d%d" % i, 300 + i) for i in range(10)),
    *(room(b"hall", b"t%d" % i, 400 + i) for i in range(20)),
]


def one_server_run(start_server, env: dict) -> dict:
    server = start_server("--irc-port", "0", "--max-text-bytes", "64",
                          "--server-name", "lanetest", env=env)
    from tests.irchelpers import irc_port
    server.irc_port = irc_port(server)
    alice, bob, carol = (peer(server, n) for n in ("alice", "bob", "carol"))
    ivan = irc_peer(server, "ivan")
    try:
        for client in (alice, bob, carol):
            for request_id, name in enumerate(("hall", "kitchen", "quiet"), 2):
                client.send(encode_event(ev.JoinRoom(name, request_id)))
            client.sync()
        ivan.send("JOIN #kitchen")
        ivan.sync()
        alice.send(encode_event(ev.SetRoomMode("quiet", (ev.ModeChange(True, "m"),), 5)))
        alice.send(encode_event(ev.OpenChat("bob", 6)))
        for client in (alice, bob, carol, ivan):
            client.sync()
            client.received.clear()
        alice.send(b"".join(ONE_SERVER_PIPELINE))
        alice.sync()
        for client in (bob, carol, ivan):
            client.sync()
        got = {c.name: events_of(bytes(c.received)) for c in (alice, bob, carol)}
        got["ivan"] = without_pings(bytes(ivan.received))
        return got
    finally:
        for client in (alice, bob, carol, ivan):
            client.close()
        server.stop()


def test_a_server_with_the_lane_answers_a_pipeline_as_the_hub_path_does(start_server):
    expected = one_server_run(start_server, LANE_OFF)
    acks = [e for e in expected["alice"] if type(e) is ev.Ack]
    # Refused: nowhere, the bad texts, to nobody, to oneself (a DM opens a conversation).
    assert len(acks) == 20 + 4 + 3 + 10 + 20
    assert any(b"to irc too" in line for line in expected["ivan"].split(b"\r\n"))
    assert one_server_run(start_server, {}) == expected


# alice's pipeline on node alpha: a room shared with beta (the backplane's path, pipelined)
# interleaved with a room of alpha's alone (the lane, once no reply is owed).
CLUSTER_PIPELINE = [
    *(room(b"lobby" if i % 4 else b"kitchen", b"m%d" % i, 100 + i) for i in range(40)),
    room(b"lobby", b"", 200), room(b"kitchen", b"", 201), room(b"lobby", b"\xff", 202),
    *(room(b"kitchen", b"k%d" % i, 300 + i) for i in range(20)),
    *(room(b"lobby", b"l%d" % i, 400 + i) for i in range(20)),
]


def cluster_run(start_node, cluster: str, env: dict) -> dict:
    flags = ("--cluster-name", cluster)
    alpha = start_node("alpha", *flags, env=env)
    beta = start_node("beta", *flags, env=env)
    alice, carol, bob = peer(alpha, "alice"), peer(alpha, "carol"), peer(beta, "bob")
    try:
        for client in (alice, carol, bob):
            client.send(encode_event(ev.JoinRoom("lobby", 2)))
            if client is not bob:
                client.sync()
        bob.sync()
        # Until bob's join has come round to alpha, lobby's members there are incomplete.
        alice.wait_for(lambda f: f[0] == 0xA1 and b"bob" in f[2], timeout=30)
        carol.wait_for(lambda f: f[0] == 0xA1 and b"bob" in f[2], timeout=30)
        for client in (alice, carol):
            client.send(encode_event(ev.JoinRoom("kitchen", 3)))
            client.sync()
        for client in (alice, carol, bob):
            client.sync()
            client.received.clear()
        alice.send(b"".join(CLUSTER_PIPELINE))
        acks = {100 + i for i in range(40)} | {300 + i for i in range(20)} \
            | {400 + i for i in range(20)}
        alice.wait_for(lambda f: f[0] == 0x82 and f[1] == 419, timeout=30)
        alice.sync()
        bob.wait_for(lambda f: f[0] == 0xA0 and f[2].endswith(b"l19"), timeout=30)
        for client in (carol, bob):
            client.sync()
        got = {c.name: events_of(bytes(c.received)) for c in (alice, carol, bob)}
        assert {e.request_id for e in got["alice"] if type(e) is ev.Ack} == acks
        return got
    finally:
        for client in (alice, carol, bob):
            client.close()
        alpha.stop()
        beta.stop()


def test_a_cluster_node_with_the_lane_hands_shared_rooms_to_the_backplane(
        start_node, cluster_name):
    expected = cluster_run(start_node, cluster_name + "-off", LANE_OFF)
    assert [e.text for e in expected["bob"] if type(e) is ev.RoomMessage] == [
        f"m{i}" for i in range(40) if i % 4] + [f"l{i}" for i in range(20)]
    assert cluster_run(start_node, cluster_name + "-on", {}) == expected
