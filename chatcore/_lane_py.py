"""The per-message lane, pure Python: room and direct messages from the decoded frame to the
recipients' output buffers and the sender's Ack, without event objects.

The specification is the hub path it shortens (``Connection._handle_input`` ->
``Requests._on_send_room`` / ``_on_send_direct`` -> ``Hub.send_room`` / ``send_direct`` ->
``NativeOutlet``): the lane does what that path does, step for step and in the same order,
for the common case only, reading the hub's live state (a session's rooms and
conversations, a room's members, modes and ``shared`` flag, the flood buckets, the turn's
work budget). Every other frame, and every frame the hub could refuse or would route
elsewhere (not a member, a gated or shared room, IRC or detached members, a user not here
or away, a conversation not yet open, any text the hub or the decoder would refuse), is
handed back as its event, for the hub path to handle as it always did. docs/hotpath.md
("The per-message lane") has the rules; ``chatcore._lane`` is the compiled twin, and
tests/test_lane_differential.py holds both to the hub path.
"""
from __future__ import annotations

import re
import struct

from .codec import fanout
from .errors import FrameError, ProtocolError
from .protocol import NEED_DATA

_OPEN = None                    # State.OPEN, imported at the first run: chatcore.connection
                                # imports this module
_SEND_DIRECT, _SEND_ROOM = 0x12, 0x22
_DIRECT_MESSAGE, _ROOM_MESSAGE, _ACK_TYPE = 0x90, 0xA0, 0x82
_FLOOD_CHAT = 0                 # chatcore.connection.pacing: the chat messages' bucket
_HEAD = struct.Struct(">IBIH")  # length, type, request_id, first str's length
_U16 = struct.Struct(">H")
_STAMP = struct.Struct(">QQ")
_ACK = struct.Struct(">IBIQQ")
# The text rule (docs/protocol.md, "Text") on valid UTF-8 bytes: C0 controls but TAB and
# LF, DEL, and C1 controls (U+0080-U+009F, which UTF-8 writes as C2 80-C2 9F; 0xC2 is never
# a continuation byte). Lone surrogates cannot occur: the strict decoder refuses them.
_FORBIDDEN_TEXT_BYTES = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def text_ok(text: bytes, max_text_bytes: int) -> bool:
    """Whether ``text`` decodes as UTF-8 (the decoder's rule) and passes the hub's text
    check (``hub.checks.check_text``: not empty, at most ``max_text_bytes``, the text rule)."""
    if not text or len(text) > max_text_bytes:
        return False
    if not text.isascii():
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return _FORBIDDEN_TEXT_BYTES.search(text) is None


def _split(payload: bytes):
    """A SendRoom/SendDirect payload's (name, text) bytes, or None when malformed."""
    if len(payload) < 2:
        return None
    end = 2 + ((payload[0] << 8) | payload[1])
    if end > len(payload):
        return None
    return payload[2:end], payload[end:]


def _key(name: bytes):
    """The casefolded key of a room or user name given as bytes, or None (not UTF-8)."""
    try:
        return name.decode("utf-8").casefold()
    except UnicodeDecodeError:
        return None


def run(conn, turn_ends_at: int, now: float):
    """Handle ``conn``'s buffered frames from the point of ``Connection._handle_input`` where
    it takes the next event (this request's work unit already counted in ``turn_ends_at``).

    Returns ``(turn_ends_at, item, wait_seconds)``: ``item`` None when the lane stopped at
    the loop's head (a check there has something to do: go round), ``NEED_DATA``, a
    ``ProtocolError`` the protocol raised, or the event of a frame handed back; a non-zero
    ``wait_seconds`` means that event already drew from its flood bucket, which said wait.
    """
    global _OPEN
    if _OPEN is None:
        from .connection.closing import State
        _OPEN = State.OPEN
    protocol = conn.protocol
    hub = conn.hub
    outlet = conn.outlet
    outbuf = conn.outbuf
    session = conn.session
    stats = conn.stats
    buckets = conn._buckets
    output_limit = conn.config.max_output_bytes
    max_text_bytes = hub.limits.max_text_bytes
    sender = session.name.encode()
    last_type = last_name = found = native = room_name = names = fixed_bytes = None
    # The decoder itself, not protocol.next_frame: one call less a message. A broken stream
    # (or a frame error now) goes through next_frame for the protocol's sticky error.
    next_frame = protocol.next_frame if protocol._broken is not None \
        else protocol._decoder.next_frame
    while True:
        try:
            frame = next_frame()
        except FrameError:
            try:
                protocol.next_frame()
            except ProtocolError as exc:
                return turn_ends_at, exc, 0.0
            raise
        except ProtocolError as exc:
            return turn_ends_at, exc, 0.0
        if frame is None:
            return turn_ends_at, NEED_DATA, 0.0
        msg_type, request_id, payload = frame
        if conn._replies or (msg_type != _SEND_ROOM and msg_type != _SEND_DIRECT):
            return _handed_back(protocol, frame, turn_ends_at)
        parts = _split(payload)
        if parts is None:
            return _handed_back(protocol, frame, turn_ends_at)
        name, text = parts
        if not text_ok(text, max_text_bytes):
            return _handed_back(protocol, frame, turn_ends_at)
        # The same room (or peer) as the message before, in this run: nothing but this loop
        # ran since it was judged, so the verdict and what it found still hold.
        same = msg_type == last_type and name == last_name
        if not same:
            key = _key(name)
            if key is None:
                return _handed_back(protocol, frame, turn_ends_at)
        if msg_type == _SEND_ROOM:
            # Hub.send_room, for a member of a room of native members only, on this node only.
            if same:
                room = found
            else:
                room = session.rooms.get(key)
                if room is None or room.shared or room.modes.gated:
                    return _handed_back(protocol, frame, turn_ends_at)
                endpoints = room.endpoints
                native = endpoints.get(outlet) if len(endpoints) == 1 else None
                if native is None:
                    return _handed_back(protocol, frame, turn_ends_at)
                found, last_type, last_name = room, msg_type, name
                room_name = room.name.encode()
                # What the frame holds between its header and the stamps, and its size.
                names = b"".join((room_name, _U16.pack(len(sender)), sender))
                fixed_bytes = 5 + 2 + len(names) + 16
        else:
            # Hub.send_direct, to a native user of this node already in a conversation with
            # the sender and not away.
            if same:
                peer = found
            else:
                peer = hub.sessions.get(key)
                if (peer is None or peer is session or peer.outlet is not outlet or peer.away
                        or peer.key not in session.conversations):
                    return _handed_back(protocol, frame, turn_ends_at)
                found, last_type, last_name = peer, msg_type, name
        # Both: flood control, then the hub's stamp (as Hub.send_room/send_direct).
        if buckets is not None:
            wait_seconds = buckets[_FLOOD_CHAT].take(now)
            if wait_seconds:
                return turn_ends_at, protocol.event_of(frame), wait_seconds
        session.last_active = hub._clock()
        msg_id = next(hub._msg_ids)
        timestamp_ms = int(hub._wallclock() * 1000)
        if msg_type == _SEND_ROOM:
            data = b"".join((_HEAD.pack(fixed_bytes + len(text), _ROOM_MESSAGE, 0,
                                        len(room_name)),
                             names, _STAMP.pack(msg_id, timestamp_ms), text))
            outlet.deliveries += len(native)
            outlet.pending.extend(fanout(data, native))
            hub.work_done += len(room.members)
            stats.room_messages += 1
        else:
            data = b"".join((
                _HEAD.pack(5 + 2 + len(sender) + 16 + len(text), _DIRECT_MESSAGE, 0,
                           len(sender)),
                sender, _STAMP.pack(msg_id, timestamp_ms), text))
            outlet.deliveries += 1
            endpoint = peer.endpoint
            if endpoint.append(data):
                outlet.pending.append(endpoint)
            hub.work_done += 1
            stats.direct_messages += 1
        if outbuf.append(_ACK.pack(21, _ACK_TYPE, request_id, msg_id, timestamp_ms)):
            outlet.pending.append(outbuf)
        # The head of Connection._handle_input's loop, for the next request.
        if (conn.state is not _OPEN or conn._awaiting or outbuf.pending_bytes > output_limit
                or hub.work_done >= turn_ends_at):
            return turn_ends_at, None, 0.0
        turn_ends_at -= 1


def _handed_back(protocol, frame, turn_ends_at: int):
    try:
        return turn_ends_at, protocol.event_of(frame), 0.0
    except ProtocolError as exc:
        return turn_ends_at, exc, 0.0
