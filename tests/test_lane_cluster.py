"""The lane on a cluster node (a real redis-server, two real server processes): a pipeline of
messages to a room shared with the other node, among refusals and other requests, reaches
every member, on both nodes, as the same frames in the same order as with the lane off
(``CHATCORE_NO_LANE=1``, the hub path): one order for all, the sender's copy of each message
before its Ack, the replies the same and in request order. Runs on whichever build the suite runs."""
from __future__ import annotations

import dataclasses

import pytest

from chatcore import _codec_py
from chatcore import events as ev
from chatcore.protocol import TYPE_OF, Role, decode_frame, encode_event
from tests.lane_world import NativePeer, frame, name_and_text

_ROOM_MESSAGE, _ACK, _PONG = TYPE_OF[ev.RoomMessage], TYPE_OF[ev.Ack], TYPE_OF[ev.Pong]
_JOINED = TYPE_OF[ev.UserJoined]


def _peer(node, name: str) -> NativePeer:
    peer = NativePeer(("127.0.0.1", node.port), name)
    peer.send(encode_event(ev.Hello(1, name, request_id=1)))
    peer.wait_for(lambda f: f[0] == TYPE_OF[ev.Welcome])
    return peer


def _requests() -> list[bytes]:
    sent = []
    for i in range(150):
        sent.append(frame(0x22, 100 + i, name_and_text(b"lobby", b"m%d" % i)))
        if i % 40 == 5:
            sent += [frame(0x22, 1000 + i, name_and_text(b"lobby", b"")),       # refused
                     frame(0x22, 2000 + i, name_and_text(b"nowhere", b"x")),    # not in it
                     encode_event(ev.Ping(i, 3000 + i)),
                     encode_event(ev.SendRoomAction("lobby", f"waves {i}", 4000 + i)),
                     frame(0x22, 5000 + i, name_and_text(b"LOBBY", "caf\u00e9".encode()))]
    return sent


def _comparable(received: bytes) -> list:
    """The frames as events, with the stamps (msg_id, time) left out: they differ by run;
    and without the server's keep-alive Pings, which come when they are due."""
    decoder = _codec_py.FrameDecoder(1 << 20)
    decoder.receive_data(received)
    events = []
    while (item := decoder.next_frame()) is not None:
        event = decode_frame(*item, role=Role.CLIENT)
        if type(event) is ev.Ping:
            continue
        if hasattr(event, "msg_id"):
            event = dataclasses.replace(event, msg_id=0, timestamp_ms=0)
        events.append(event)
    return events


def _chat(start_node, env: dict, cluster: str) -> dict:
    # A cluster each: the users' names are the same in both.
    alpha = start_node("alpha", "--cluster-name", cluster, env=env)
    beta = start_node("beta", "--cluster-name", cluster, env=env)
    alice, carol, bob = _peer(alpha, "alice"), _peer(alpha, "carol"), _peer(beta, "bob")
    try:
        for peer in (alice, carol, bob):
            peer.send(encode_event(ev.JoinRoom("lobby", 2)))
            peer.wait_for(lambda f: f[0] == TYPE_OF[ev.RoomJoined])
        for peer in (alice, carol):
            peer.wait_for(lambda f: f[0] == _JOINED and b"bob" in f[2])
        for peer in (alice, carol, bob):
            peer.sync()
            peer.received.clear()
        alice.send(b"".join(_requests()))
        alice.wait_for(lambda f: f[0] == _ACK and f[1] == 249, timeout=30)    # the last
        alice.sync()
        for peer in (carol, bob):
            peer.wait_for(lambda f: f[0] == _ROOM_MESSAGE and f[2].endswith(b"m149"),
                          timeout=30)
            peer.sync()
        return {peer.name: _comparable(bytes(peer.received)) for peer in (alice, carol, bob)}
    finally:
        for peer in (alice, carol, bob):
            peer.close()


@pytest.mark.timeout(120)
def test_a_pipeline_to_a_shared_room_is_received_as_with_the_lane_off(start_node,
                                                                      cluster_name):
    with_lane = _chat(start_node, {}, cluster_name + "-lane")
    hub_path = _chat(start_node, {"CHATCORE_NO_LANE": "1"}, cluster_name + "-hub")
    assert [with_lane[name] for name in ("bob", "carol")] == [hub_path[name]
                                                             for name in ("bob", "carol")]
    # The sender's own copies and its replies, each in the same order; where the Acks fall
    # among the copies depends on how a turn's reads cut the pipeline into room batches.
    for kind in (ev.RoomMessage, ev.RoomAction), (ev.Ack, ev.Error, ev.Pong):
        assert [e for e in with_lane["alice"] if type(e) in kind] == [
            e for e in hub_path["alice"] if type(e) in kind]
    texts = [e.text for e in with_lane["bob"] if type(e) is ev.RoomMessage]
    assert texts == [e.text for e in with_lane["carol"] if type(e) is ev.RoomMessage]
    assert texts[:3] == ["m0", "m1", "m2"] and texts[-1] == "m149" and len(texts) == 154
    replies = [e.request_id for e in with_lane["alice"]
               if type(e) in (ev.Ack, ev.Error, ev.Pong) and e.request_id != 0xFFFF]
    assert replies == [int.from_bytes(data[5:9], "big") for data in _requests()]
    seen = set()
    for event in with_lane["alice"]:
        if type(event) is ev.RoomMessage:
            seen.add(event.text)
        elif type(event) is ev.Ack and event.request_id < 250:
            assert f"m{event.request_id - 100}" in seen, "an Ack before its message"
