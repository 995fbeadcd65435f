"""The native protocol sans-IO: every message round-trips; streams split anywhere decode alike."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, strategies as st

from chatcore import events as ev
from chatcore.errors import ErrorCode, ProtocolError
from chatcore.protocol import (C2S, LIST_ENTRIES, NEED_DATA, S2C, SCHEMA, NativeProtocol, Role,
                               decode_frame, encode_event, encode_room_message)

_text = st.text(max_size=40)
_short = st.text(max_size=20)
_KIND_STRATEGIES = {
    "u8": st.integers(0, 0xFF), "u16": st.integers(0, 0xFFFF),
    "u32": st.integers(0, 0xFFFFFFFF), "u64": st.integers(0, 2**64 - 1),
    "bool": st.booleans(), "str": _short, "text": _text,
}


def _strategy(cls, fields):
    kwargs = {}
    for name, kind in fields:
        if kind in LIST_ENTRIES:
            entry_cls, entry_fields = LIST_ENTRIES[kind]
            kwargs[name] = st.lists(_strategy(entry_cls, entry_fields), max_size=4).map(tuple)
        else:
            kwargs[name] = _KIND_STRATEGIES[kind]
    if any(f.name == "request_id" for f in dataclasses.fields(cls)):
        kwargs["request_id"] = st.integers(0, 0xFFFFFFFF)
    return st.builds(cls, **kwargs)


def _events(direction):
    return st.one_of([_strategy(cls, fields) for _, way, cls, fields in SCHEMA
                      if way != direction])


server_bound = _events(S2C)     # everything a server may receive
client_bound = _events(C2S)     # everything a client may receive


@given(st.lists(client_bound, max_size=8), st.data())
def test_client_decodes_any_split_of_any_server_stream(events, data):
    stream = b"".join(encode_event(e) for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    protocol = NativeProtocol(Role.CLIENT)
    decoded = []
    previous = 0
    for cut in cuts + [len(stream)]:
        protocol.receive_data(stream[previous:cut])
        previous = cut
        while (event := protocol.next_event()) is not NEED_DATA:
            decoded.append(event)
    assert decoded == events


@given(server_bound)
def test_every_client_message_round_trips(event):
    frame = encode_event(event)
    decoded = decode_frame(frame[4], int.from_bytes(frame[5:9], "big"), frame[9:],
                           role=Role.SERVER)
    assert decoded == event


@given(_short, _short, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), _text)
def test_fast_room_message_encoder_matches_the_schema(room, sender, msg_id, ts, text):
    assert encode_room_message(room.encode(), sender.encode(), msg_id, ts, text.encode()) == \
        encode_event(ev.RoomMessage(room, sender, msg_id, ts, text))


def test_server_requires_hello_first_and_only_once():
    protocol = NativeProtocol(Role.SERVER)
    protocol.receive_data(encode_event(ev.Hello(1, "alice", request_id=1)))
    assert protocol.next_event() == ev.Hello(1, "alice", request_id=1)
    protocol.send(ev.Welcome(1, "alice", "s", 1, 2, 3, 4))
    protocol.receive_data(encode_event(ev.Hello(1, "again", request_id=2)))
    with pytest.raises(ProtocolError) as again:
        protocol.next_event()
    assert (again.value.code, again.value.fatal) == (ErrorCode.ALREADY_GREETED, False)

    fresh = NativeProtocol(Role.SERVER)
    fresh.receive_data(encode_event(ev.ListRooms(request_id=3)))
    with pytest.raises(ProtocolError) as early:
        fresh.next_event()
    assert (early.value.code, early.value.fatal, early.value.request_id) == (
        ErrorCode.HANDSHAKE_REQUIRED, True, 3)
    with pytest.raises(ProtocolError):          # a broken stream stays broken
        fresh.next_event()


def test_a_later_version_hello_of_another_layout_gets_unsupported_version():
    protocol = NativeProtocol(Role.SERVER)
    protocol.receive_data(b"\x00\x00\x00\x08\x01\x00\x00\x00\x01\x00\x02\xff")
    with pytest.raises(ProtocolError) as refused:
        protocol.next_event()
    assert (refused.value.code, refused.value.fatal) == (ErrorCode.UNSUPPORTED_VERSION, True)


@given(st.one_of(_strategy(ev.Ack, [("msg_id", "u64"), ("timestamp_ms", "u64")]),
                 client_bound))
def test_fast_encoders_match_the_schema(event):
    from chatcore.protocol import encode_event_generic
    assert encode_event(event) == encode_event_generic(event)


@given(server_bound)
def test_fast_decoders_match_the_schema(event):
    from chatcore.protocol import decode_frame_generic
    frame = encode_event(event)
    args = (frame[4], int.from_bytes(frame[5:9], "big"), frame[9:])
    assert decode_frame(*args, role=Role.SERVER) == decode_frame_generic(*args,
                                                                         role=Role.SERVER)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x05ab", b"\x00\x01\xff", b"\x00\x00\xff"])
def test_fast_decoders_defer_malformed_frames_to_the_generic_errors(payload):
    from chatcore.protocol import decode_frame_generic
    for code in (0x12, 0x22):
        with pytest.raises(ProtocolError) as fast:
            decode_frame(code, 1, payload, role=Role.SERVER)
        with pytest.raises(ProtocolError) as generic:
            decode_frame_generic(code, 1, payload, role=Role.SERVER)
        assert (fast.value.code, fast.value.message) == (generic.value.code,
                                                         generic.value.message)


def test_a_stream_split_at_every_point_decodes_the_same():
    events = [ev.Hello(1, "alice", "cli", request_id=1), ev.JoinRoom("lobby", request_id=2),
              ev.SendRoom("lobby", "hi ✓", request_id=3), ev.Ping(7, request_id=4)]
    stream = b"".join(encode_event(e) for e in events)
    for cut in range(len(stream) + 1):
        for pieces in ([stream[:cut], stream[cut:]], [bytes([b]) for b in stream]):
            protocol = NativeProtocol(Role.SERVER)
            decoded = []
            for piece in pieces:
                protocol.receive_data(piece)
                while (event := protocol.next_event()) is not NEED_DATA:
                    decoded.append(event)
                    if type(event) is ev.Hello:
                        protocol.send(ev.Welcome(1, "alice", "s", 1, 65536, 8192, 32))
            assert decoded == events


def test_the_frame_limit_is_small_until_the_handshake():
    protocol = NativeProtocol(Role.SERVER, max_frame_bytes=65536)
    protocol.receive_data(encode_event(ev.Hello(1, "alice", request_id=1)))
    protocol.next_event()
    protocol.send(ev.Welcome(1, "alice", "s", 1, 65536, 8192, 32))
    protocol.receive_data(encode_event(ev.SendRoom("r", "x" * 5000, request_id=2)))
    assert protocol.next_event().text == "x" * 5000

    fresh = NativeProtocol(Role.SERVER, max_frame_bytes=65536)
    fresh.receive_data(encode_event(ev.Hello(1, "x" * 2000, request_id=1)))
    with pytest.raises(ProtocolError) as refused:
        fresh.next_event()
    assert (refused.value.code, refused.value.fatal) == (ErrorCode.FRAME_TOO_LARGE, True)
