"""The native wire protocol, sans-IO: bytes in, events out; events in, bytes out.

``NativeProtocol`` owns one stream's framing and handshake state and never touches a socket.
``encode_event`` is stateless so a fan-out can encode a message once for every recipient.
The schema table below is the single source of the wire layout documented in
docs/protocol.md.
"""
from __future__ import annotations

import enum
import struct

from . import events as ev
from .codec import FrameDecoder, encode_frame
from .errors import ErrorCode, FrameError, ProtocolError

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 65536
# Until the handshake, a server accepts frames up to this size only: a Hello with a long
# name fits in a few hundred bytes, and an unknown peer must not park 64 KiB per connection.
HANDSHAKE_MAX_FRAME_BYTES = 1024


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by ``next_event`` when no complete event is buffered."""

# Which side may send each type. Types received from the wrong side are UNKNOWN_TYPE.
C2S, S2C, BOTH = "c2s", "s2c", "both"

# type code, direction, event class, fields (name, kind). Kinds: u8 u16 u32 u64 bool,
# str (u16 length + UTF-8), text (UTF-8 to the end of the frame; always last), and the
# list kinds below (u16 count + entries).
SCHEMA = (
    (0x01, C2S, ev.Hello, (("version", "u16"), ("name", "str"), ("client", "str"))),
    (0x02, BOTH, ev.Ping, (("token", "u64"),)),
    (0x03, BOTH, ev.Pong, (("token", "u64"),)),
    (0x04, C2S, ev.Quit, (("reason", "text"),)),
    (0x05, C2S, ev.Resume, (("version", "u16"), ("name", "str"), ("token", "str"),
                            ("client", "str"))),
    (0x10, C2S, ev.OpenChat, (("peer", "str"),)),
    (0x11, C2S, ev.CloseChat, (("peer", "str"),)),
    (0x12, C2S, ev.SendDirect, (("peer", "str"), ("text", "text"))),
    (0x13, C2S, ev.SendDirectAction, (("peer", "str"), ("text", "text"))),
    (0x20, C2S, ev.JoinRoom, (("room", "str"),)),
    (0x21, C2S, ev.LeaveRoom, (("room", "str"),)),
    (0x22, C2S, ev.SendRoom, (("room", "str"), ("text", "text"))),
    (0x23, C2S, ev.SendRoomAction, (("room", "str"), ("text", "text"))),
    (0x24, C2S, ev.SetTopic, (("room", "str"), ("topic", "text"))),
    (0x25, C2S, ev.SetRoomMode, (("room", "str"), ("changes", "modechange[]"))),
    (0x26, C2S, ev.Kick, (("room", "str"), ("name", "str"), ("reason", "text"))),
    (0x27, C2S, ev.Invite, (("room", "str"), ("name", "str"))),
    (0x28, C2S, ev.GetRoomModes, (("room", "str"),)),
    (0x29, C2S, ev.JoinRoomKey, (("room", "str"), ("key", "str"))),
    (0x30, C2S, ev.ListUsers, (("room", "str"),)),
    (0x31, C2S, ev.ListRooms, ()),
    (0x32, C2S, ev.ListServers, ()),
    (0x33, C2S, ev.ListUsersPage, (("room", "str"), ("after", "str"), ("pattern", "str"),
                                   ("limit", "u16"))),
    (0x34, C2S, ev.ListRoomsPage, (("after", "str"), ("pattern", "str"), ("limit", "u16"))),
    (0x40, C2S, ev.SetName, (("name", "str"),)),
    (0x41, C2S, ev.SetAway, (("message", "text"),)),
    (0x42, C2S, ev.Whois, (("name", "str"),)),
    (0x80, S2C, ev.Ok, ()),
    (0x81, S2C, ev.Welcome, (("version", "u16"), ("name", "str"), ("server", "str"),
                             ("ping_interval_ms", "u32"), ("max_frame_bytes", "u32"),
                             ("max_text_bytes", "u32"), ("max_name_chars", "u16"))),
    (0x82, S2C, ev.Ack, (("msg_id", "u64"), ("timestamp_ms", "u64"))),
    (0x83, S2C, ev.Error, (("code", "u16"), ("fatal", "bool"), ("message", "text"))),
    (0x84, S2C, ev.ResumeToken, (("token", "str"), ("grace_seconds", "u32"))),
    (0x90, S2C, ev.DirectMessage, (("sender", "str"), ("msg_id", "u64"),
                                   ("timestamp_ms", "u64"), ("text", "text"))),
    (0x91, S2C, ev.ChatOpened, (("peer", "str"),)),
    (0x92, S2C, ev.ChatClosed, (("peer", "str"), ("reason", "u8"), ("message", "text"))),
    (0x93, S2C, ev.DirectAction, (("sender", "str"), ("msg_id", "u64"),
                                  ("timestamp_ms", "u64"), ("text", "text"))),
    (0x94, S2C, ev.AwayReply, (("name", "str"), ("message", "text"))),
    (0xA0, S2C, ev.RoomMessage, (("room", "str"), ("sender", "str"), ("msg_id", "u64"),
                                 ("timestamp_ms", "u64"), ("text", "text"))),
    (0xA1, S2C, ev.UserJoined, (("room", "str"), ("name", "str"))),
    (0xA2, S2C, ev.UserLeft, (("room", "str"), ("name", "str"), ("reason", "u8"),
                              ("message", "text"))),
    (0xA3, S2C, ev.RoomAction, (("room", "str"), ("sender", "str"), ("msg_id", "u64"),
                                ("timestamp_ms", "u64"), ("text", "text"))),
    (0xA4, S2C, ev.TopicChanged, (("room", "str"), ("name", "str"), ("timestamp_ms", "u64"),
                                  ("topic", "text"))),
    (0xA5, S2C, ev.RoomJoined, (("room", "str"), ("topic", "str"), ("topic_by", "str"),
                                ("topic_at_ms", "u64"), ("total", "u32"),
                                ("members", "member[]"))),
    (0xA6, S2C, ev.RoomModeChanged, (("room", "str"), ("name", "str"),
                                     ("changes", "modechange[]"))),
    (0xA7, S2C, ev.Invited, (("room", "str"), ("name", "str"))),
    (0xA8, S2C, ev.RoomModes, (("room", "str"), ("modes", "str"), ("key", "str"),
                               ("limit", "u32"), ("created_at_ms", "u64"),
                               ("members", "membermodes[]"), ("bans", "ban[]"))),
    (0xA9, S2C, ev.Kicked, (("room", "str"), ("name", "str"), ("by", "str"),
                            ("reason", "text"))),
    (0xB0, S2C, ev.UserList, (("total", "u32"), ("users", "userinfo[]"))),
    (0xB1, S2C, ev.RoomList, (("total", "u32"), ("rooms", "roominfo[]"))),
    (0xB2, S2C, ev.ServerList, (("total", "u32"), ("servers", "serverinfo[]"))),
    (0xB3, S2C, ev.UserPage, (("total", "u32"), ("total_exact", "bool"), ("next_after", "str"),
                              ("users", "userinfo[]"))),
    (0xB4, S2C, ev.RoomPage, (("total", "u32"), ("total_exact", "bool"), ("next_after", "str"),
                              ("rooms", "roominfo[]"))),
    (0xC0, S2C, ev.UserDetails, (("name", "str"), ("server", "str"),
                                 ("connected_at_ms", "u64"), ("idle_seconds", "u32"),
                                 ("rtt_us", "u32"), ("away", "str"), ("rooms", "roominfo[]"))),
    (0xC1, S2C, ev.NameChanged, (("old", "str"), ("new", "str"))),
    (0xC2, S2C, ev.AwayChanged, (("name", "str"), ("message", "text"))),
)

LIST_ENTRIES = {
    "userinfo[]": (ev.UserInfo, (("name", "str"), ("rtt_us", "u32"), ("idle_seconds", "u32"),
                                 ("server", "str"), ("away", "str"))),
    "roominfo[]": (ev.RoomInfo, (("name", "str"), ("members", "u32"))),
    "member[]": (ev.Member, (("name", "str"), ("away", "bool"))),
    "modechange[]": (ev.ModeChange, (("adding", "bool"), ("mode", "str"), ("argument", "str"))),
    "membermodes[]": (ev.MemberModes, (("name", "str"), ("modes", "str"))),
    "ban[]": (ev.Ban, (("mask", "str"), ("set_by", "str"), ("set_at_ms", "u64"))),
    "serverinfo[]": (ev.ServerInfo, (("name", "str"), ("host", "str"), ("port", "u16"),
                                     ("users", "u32"), ("load_permille", "u16"),
                                     ("rtt_us", "u32"))),
}

TYPE_OF = {cls: code for code, _, cls, _ in SCHEMA}
_BY_CODE = {code: (direction, cls, fields) for code, direction, cls, fields in SCHEMA}
_INTS = {"u8": struct.Struct(">B"), "u16": struct.Struct(">H"), "u32": struct.Struct(">I"),
         "u64": struct.Struct(">Q"), "bool": struct.Struct(">B")}
_U16 = _INTS["u16"]


def room_joined_capacity(max_frame_bytes: int, max_name_chars: int, max_room_name_chars: int,
                         max_topic_bytes: int) -> int:
    """How many members a RoomJoined can always carry within ``max_frame_bytes``.

    Names and room names are ASCII, so a member entry is its name + 3 bytes.
    """
    fixed = (9 + 2 + max_room_name_chars + 2 + max_topic_bytes + 2 + max_name_chars
             + 8 + 4 + 2)
    return max(0, (max_frame_bytes + 4 - fixed) // (max_name_chars + 3))


class _Truncated(Exception):
    """A field ran past the end of the payload."""


# -- encoding ----------------------------------------------------------------------------------

def _encode_fields(obj, fields, out: list) -> None:
    for name, kind in fields:
        value = getattr(obj, name)
        if kind == "str":
            raw = value.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise ValueError(f"{name} is longer than 65535 bytes")
            out.append(_U16.pack(len(raw)))
            out.append(raw)
        elif kind == "text":
            out.append(value.encode("utf-8"))
        elif kind in _INTS:
            out.append(_INTS[kind].pack(int(value)))
        else:
            entry_cls, entry_fields = LIST_ENTRIES[kind]
            out.append(_U16.pack(len(value)))
            for entry in value:
                _encode_fields(entry, entry_fields, out)


def encode_payload(event) -> bytes:
    """The payload bytes of ``event`` (without the frame header)."""
    out: list = []
    _encode_fields(event, _BY_CODE[TYPE_OF[type(event)]][2], out)
    return b"".join(out)


def encode_event_generic(event) -> bytes:
    """``event`` as one frame, interpreted from SCHEMA (the reference for the fast paths)."""
    return encode_frame(TYPE_OF[type(event)], event.request_id, encode_payload(event))


def encode_event(event) -> bytes:
    """``event`` as one complete frame."""
    fast = _FAST_ENCODERS.get(type(event))
    if fast is not None:
        return fast(event)
    return encode_event_generic(event)


# The frames sent once per chat message get hand-written codecs, each tested byte for byte
# against the SCHEMA interpretation: the generic path costs about 1.5 us a frame.
_ROOM_MESSAGE_HEAD = struct.Struct(">IBIH")
_U64_PAIR = struct.Struct(">QQ")
_ACK = struct.Struct(">IBIQQ")
_DIRECT_HEAD = struct.Struct(">IBIH")


def encode_ack(msg_id: int, timestamp_ms: int, request_id: int) -> bytes:
    """An Ack frame without building the event (same bytes as ``encode_event(Ack(...))``)."""
    return _ACK.pack(21, 0x82, request_id, msg_id, timestamp_ms)


def _encode_room_message_event(event: ev.RoomMessage) -> bytes:
    return encode_room_message(event.room.encode(), event.sender.encode(), event.msg_id,
                               event.timestamp_ms, event.text.encode(), event.request_id)


def _encode_direct_message(event: ev.DirectMessage) -> bytes:
    sender = event.sender.encode()
    text = event.text.encode()
    return b"".join((_DIRECT_HEAD.pack(5 + 2 + len(sender) + 16 + len(text), 0x90,
                                       event.request_id, len(sender)),
                     sender, _U64_PAIR.pack(event.msg_id, event.timestamp_ms), text))


_FAST_ENCODERS = {
    ev.Ack: lambda event: encode_ack(event.msg_id, event.timestamp_ms, event.request_id),
    ev.RoomMessage: _encode_room_message_event,
    ev.DirectMessage: _encode_direct_message,
}


def encode_room_message(room: bytes, sender: bytes, msg_id: int, timestamp_ms: int,
                        text: bytes, request_id: int = 0) -> bytes:
    """A RoomMessage frame from already-encoded fields (same bytes as ``encode_event``)."""
    length = 5 + 2 + len(room) + 2 + len(sender) + 16 + len(text)
    return b"".join((_ROOM_MESSAGE_HEAD.pack(length, 0xA0, request_id, len(room)), room,
                     _U16.pack(len(sender)), sender, _U64_PAIR.pack(msg_id, timestamp_ms),
                     text))


# -- decoding ----------------------------------------------------------------------------------

def _decode_fields(payload: bytes, pos: int, fields, values: list) -> int:
    end = len(payload)
    for _, kind in fields:
        if kind == "str":
            if pos + 2 > end:
                raise _Truncated
            (size,) = _U16.unpack_from(payload, pos)
            pos += 2
            if pos + size > end:
                raise _Truncated
            values.append(payload[pos:pos + size].decode("utf-8"))
            pos += size
        elif kind == "text":
            values.append(payload[pos:].decode("utf-8"))
            pos = end
        elif kind in _INTS:
            packer = _INTS[kind]
            if pos + packer.size > end:
                raise _Truncated
            (value,) = packer.unpack_from(payload, pos)
            values.append(bool(value) if kind == "bool" else value)
            pos += packer.size
        else:
            entry_cls, entry_fields = LIST_ENTRIES[kind]
            if pos + 2 > end:
                raise _Truncated
            (count,) = _U16.unpack_from(payload, pos)
            pos += 2
            entries = []
            for _ in range(count):
                entry_values: list = []
                pos = _decode_fields(payload, pos, entry_fields, entry_values)
                entries.append(entry_cls(*entry_values))
            values.append(tuple(entries))
    return pos


def _decode_room_and_text(cls, payload: bytes, request_id: int):
    """SendRoom and SendDirect: one str, then text; None when malformed (generic path)."""
    if len(payload) < 2:
        return None
    end = 2 + ((payload[0] << 8) | payload[1])
    if end > len(payload):
        return None
    try:
        return cls(payload[2:end].decode("utf-8"), payload[end:].decode("utf-8"), request_id)
    except UnicodeDecodeError:
        return None


_FAST_DECODERS = {0x22: ev.SendRoom, 0x12: ev.SendDirect}
_GREETINGS = {0x01, 0x05}           # Hello and Resume: the frames that open a handshake
# Ping is answered before the handshake too: a client measuring the RTT to several servers
# to choose one (chatcore.probe) must not claim a name on each.
_PING_TYPE = 0x02


def decode_frame(msg_type: int, request_id: int, payload: bytes, *, role: Role):
    """The event a frame carries, as received by ``role``; raises a non-fatal ProtocolError."""
    if role is Role.SERVER and msg_type in _FAST_DECODERS:
        event = _decode_room_and_text(_FAST_DECODERS[msg_type], payload, request_id)
        if event is not None:
            return event
    return decode_frame_generic(msg_type, request_id, payload, role=role)


def decode_frame_generic(msg_type: int, request_id: int, payload: bytes, *, role: Role):
    """``decode_frame`` interpreted from SCHEMA (the reference for the fast paths)."""
    entry = _BY_CODE.get(msg_type)
    wrong_way = S2C if role is Role.SERVER else C2S
    if entry is None or entry[0] == wrong_way:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type 0x{msg_type:02x}",
                            request_id=request_id)
    _, cls, fields = entry
    values: list = []
    try:
        end = _decode_fields(payload, 0, fields, values)
    except _Truncated:
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"{cls.__name__} frame is truncated", request_id=request_id)
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_UTF8,
                            f"{cls.__name__} frame holds invalid UTF-8", request_id=request_id)
    if end != len(payload):
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"{cls.__name__} frame has {len(payload) - end} trailing bytes",
                            request_id=request_id)
    return cls(*values, request_id=request_id)


# -- the connection state machine --------------------------------------------------------------

class State(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"     # server: nothing but Hello yet; client: no Welcome
    OPEN = "open"


class NativeProtocol:
    """One native-protocol stream, for either side.

    ``receive_data(bytes)`` buffers, ``next_event()`` returns the next event or ``NEED_DATA``
    and raises ``ProtocolError`` (``fatal`` when the stream can no longer be trusted),
    ``send(event)`` returns the bytes to write. The handshake opens when a Welcome is sent
    (server) or received (client).
    """

    __slots__ = ("role", "state", "_max_frame_bytes", "_decoder", "_broken", "_serving")

    def __init__(self, role: Role, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.role = role
        self.state = State.AWAITING_HELLO
        self._max_frame_bytes = max_frame_bytes
        first_limit = max_frame_bytes
        if role is Role.SERVER:
            first_limit = min(max_frame_bytes, HANDSHAKE_MAX_FRAME_BYTES)
        self._decoder = FrameDecoder(first_limit)
        self._broken: ProtocolError | None = None
        self._serving = False           # a server past its handshake

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as events (the server's held-input budget)."""
        return self._decoder.buffered_bytes

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame accepted once the handshake is done."""
        return self._max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        self._max_frame_bytes = value
        if self.state is State.OPEN or self.role is Role.CLIENT:
            self._decoder.max_frame_bytes = value

    def receive_data(self, data) -> None:
        self._decoder.receive_data(data)

    def discard_input(self) -> None:
        """Forget every buffered byte (a closing connection frees that memory at once)."""
        self._decoder = FrameDecoder(self._decoder.max_frame_bytes)

    def next_event(self):
        """The next request (server) or server event (client), NEED_DATA when none is
        complete; a broken stream raises its fatal ``ProtocolError``, then again each call."""
        frame = self.next_frame()
        if frame is None:
            return NEED_DATA
        return self.event_of(frame)

    def next_frame(self):
        """The next complete frame as ``(type, request_id, payload)``, or None; raises the
        fatal ``ProtocolError`` of a broken stream as ``next_event`` does. With
        ``event_of`` it is ``next_event`` in two steps, as the compiled lane
        (chatcore.lane) takes them: it handles most chat frames without an event."""
        if self._broken is not None:
            raise self._broken
        try:
            return self._decoder.next_frame()
        except FrameError as exc:
            self._broken = ProtocolError(exc.code, exc.message, fatal=True)
            raise self._broken from None

    def event_of(self, frame):
        """The event of a frame ``next_frame`` returned (what ``next_event`` would have)."""
        msg_type, request_id, payload = frame
        if self._serving and msg_type in _FAST_DECODERS:
            # The chat messages themselves, straight to their decoder; anything malformed
            # takes the general path below for its exact error.
            event = _decode_room_and_text(_FAST_DECODERS[msg_type], payload, request_id)
            if event is not None:
                return event
        if self.role is Role.SERVER:
            return self._server_event(msg_type, request_id, payload)
        event = decode_frame(msg_type, request_id, payload, role=self.role)
        if type(event) is ev.Welcome:
            self.state = State.OPEN
        return event

    def _server_event(self, msg_type: int, request_id: int, payload: bytes):
        hello = msg_type in _GREETINGS
        if self.state is State.OPEN and not hello:
            # next_event already tried the fast decoders: what is left needs the schema.
            return decode_frame_generic(msg_type, request_id, payload, role=Role.SERVER)
        if self.state is State.AWAITING_HELLO and not hello:
            if msg_type == _PING_TYPE:
                return decode_frame(msg_type, request_id, payload, role=self.role)
            self._broken = ProtocolError(
                ErrorCode.HANDSHAKE_REQUIRED,
                f"expected Hello (type 0x01) or Resume (0x05) first, got type "
                f"0x{msg_type:02x}",
                fatal=True, request_id=request_id)
            raise self._broken
        if hello and self.state is State.OPEN:
            raise ProtocolError(ErrorCode.ALREADY_GREETED,
                                "the handshake (Hello or Resume) was already accepted",
                                request_id=request_id)
        if hello and len(payload) >= 2:
            # Checked before the rest is decoded: a later version's Hello may be laid out
            # differently, and must still get UNSUPPORTED_VERSION rather than BAD_FRAME.
            version = int.from_bytes(payload[:2], "big")
            if version != PROTOCOL_VERSION:
                self._broken = ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"protocol version {version} is not supported; "
                    f"this server speaks {PROTOCOL_VERSION}",
                    fatal=True, request_id=request_id)
                raise self._broken
        return decode_frame(msg_type, request_id, payload, role=self.role)

    def send(self, event) -> bytes:
        if type(event) is ev.Welcome and self.role is Role.SERVER:
            self.state = State.OPEN
            self._serving = True
            self._decoder.max_frame_bytes = self._max_frame_bytes
        return encode_event(event)
