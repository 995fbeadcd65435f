"""The chat-vocabulary frames on the wire: exact bytes, directions, and the changed frames."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.errors import ErrorCode, ProtocolError
from chatcore.protocol import (NativeProtocol, Role, decode_frame, encode_event,
                               room_joined_capacity)

# (event, its frame in hex), written out by hand from docs/protocol.md.
FRAMES = [
    (ev.SetName("bo", request_id=3), "00000009 40 00000003 0002 626f"),
    (ev.SetAway("afk", request_id=4), "00000008 41 00000004 61666b"),
    (ev.SetAway("", request_id=5), "00000005 41 00000005"),
    (ev.Whois("bo", request_id=6), "00000009 42 00000006 0002 626f"),
    (ev.SetTopic("r", "hi", request_id=7), "0000000a 24 00000007 0001 72 6869"),
    (ev.SendRoomAction("r", "waves", request_id=8),
     "0000000d 23 00000008 0001 72 7761766573"),
    (ev.SendDirectAction("bo", "nods", request_id=9),
     "0000000d 13 00000009 0002 626f 6e6f6473"),
    (ev.RoomAction("r", "bo", 1, 2, "waves"),
     "00000021 a3 00000000 0001 72 0002 626f 0000000000000001 0000000000000002 7761766573"),
    (ev.DirectAction("bo", 1, 2, "x"),
     "0000001a 93 00000000 0002 626f 0000000000000001 0000000000000002 78"),
    (ev.AwayReply("bo", "afk"), "0000000c 94 00000000 0002 626f 61666b"),
    (ev.TopicChanged("r", "bo", 2, "hi"),
     "00000016 a4 00000000 0001 72 0002 626f 0000000000000002 6869"),
    (ev.RoomJoined("r", "", "", 0, 1, (ev.Member("bo", False),)),
     "0000001f a5 00000000 0001 72 0000 0000 0000000000000000 00000001 0001 0002 626f 00"),
    (ev.UserDetails("bo", "s", 5, 6, 7, "afk", (ev.RoomInfo("r", 2),), request_id=6),
     "0000002a c0 00000006 0002 626f 0001 73 0000000000000005 00000006 00000007 0003 61666b"
     " 0001 0001 72 00000002"),
    (ev.NameChanged("al", "bo"), "0000000d c1 00000000 0002 616c 0002 626f"),
    (ev.UserLeft("r", "bo", ev.Reason.QUIT, "bye"),
     "00000010 a2 00000000 0001 72 0002 626f 01 627965"),
    (ev.ChatClosed("bo", ev.Reason.QUIT, ""), "0000000a 92 00000000 0002 626f 01"),
    (ev.UserList(1, (ev.UserInfo("bo", 9, 8, "s", "afk"),), request_id=2),
     "0000001f b0 00000002 00000001 0001 0002 626f 00000009 00000008 0001 73 0003 61666b"),
]


@pytest.mark.parametrize("event, frame", FRAMES, ids=lambda v: type(v).__name__
                         if not isinstance(v, str) else "")
def test_frames_are_exactly_these_bytes_and_decode_back(event, frame):
    data = bytes.fromhex(frame.replace(" ", ""))
    assert encode_event(event).hex() == data.hex()
    receiver = Role.SERVER if data[4] < 0x80 else Role.CLIENT
    assert decode_frame(data[4], int.from_bytes(data[5:9], "big"), data[9:],
                        role=receiver) == event


@pytest.mark.parametrize("event", [ev.NameChanged("a", "b"), ev.RoomJoined("r", "", "", 0, 0,
                                                                           ()),
                                   ev.AwayReply("a", "b"), ev.UserDetails("a", "s", 0, 0, 0,
                                                                           "", ())])
def test_a_client_cannot_send_server_notifications(event):
    frame = encode_event(event)
    protocol = NativeProtocol(Role.SERVER)
    with pytest.raises(ProtocolError) as caught:
        decode_frame(frame[4], 1, frame[9:], role=protocol.role)
    assert caught.value.code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("event", [ev.SetName("a"), ev.Whois("a"), ev.SetAway("x"),
                                   ev.SetTopic("r", "t"), ev.SendRoomAction("r", "t"),
                                   ev.SendDirectAction("a", "t")])
def test_a_server_cannot_send_client_requests(event):
    frame = encode_event(event)
    with pytest.raises(ProtocolError) as caught:
        decode_frame(frame[4], 1, frame[9:], role=Role.CLIENT)
    assert caught.value.code == ErrorCode.UNKNOWN_TYPE


def test_a_truncated_room_joined_is_bad_frame():
    frame = encode_event(ev.RoomJoined("r", "t", "a", 1, 2, (ev.Member("a", True),)))
    with pytest.raises(ProtocolError) as caught:
        decode_frame(frame[4], 0, frame[9:-1], role=Role.CLIENT)
    assert caught.value.code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize("max_frame_bytes", [512, 4096, 65536])
def test_room_joined_capacity_always_fits_the_frame(max_frame_bytes):
    count = room_joined_capacity(max_frame_bytes, 32, 64, 390)
    members = tuple(ev.Member("n" * 32, True) for _ in range(count))
    frame = encode_event(ev.RoomJoined("r" * 64, "t" * 390, "a" * 32, 2**64 - 1, 2**32 - 1,
                                       members))
    assert len(frame) - 4 <= max_frame_bytes
    bigger = encode_event(ev.RoomJoined("r" * 64, "t" * 390, "a" * 32, 1, 1,
                                        members + (ev.Member("n" * 32, True),)))
    assert len(bigger) - 4 > max_frame_bytes
