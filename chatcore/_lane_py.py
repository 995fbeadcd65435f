"""The per-message lane, pure Python: room and direct messages from the decoded frame (or
the IRC line) to the recipients' output buffers and the sender's Ack, without event objects.

The specification is the hub path it shortens (``Connection._handle_input`` ->
``Requests._on_send_room`` / ``_on_send_direct`` -> ``Hub.send_room`` / ``send_direct`` ->
``NativeOutlet``): the lane does what that path does, step for step and in the same order,
for the common case only, reading the hub's live state (a session's rooms and
conversations, a room's members, modes and ``shared`` flag, the flood buckets, the turn's
work budget). Every other frame, and every frame the hub could refuse or would route
elsewhere (not a member, a gated or shared room, detached members, a user not here
or away, a conversation not yet open, any text the hub or the decoder would refuse), is
handed back as its event, for the hub path to handle as it always did.

``run`` takes a native connection's frames, ``run_irc`` an IRC connection's plain
``PRIVMSG target :text`` lines (``codec.read_privmsg``'s; the rest is handed back as the
IRC protocol's event): the hub path of those is ``IrcConnection._on_plain_privmsg`` ->
``irc.messages.plain_privmsg`` -> the hub -> the outlets. A room's members may be native or
IRC (either encoding: ``IrcOutlet``, with or without ``server-time``); each encoding present
gets the message built once, as the outlets build it. docs/hotpath.md ("The per-message
lane") has the rules; ``chatcore._lane`` is the compiled twin, and
tests/test_lane_differential.py holds both to the hub path.
"""
from __future__ import annotations

import re
import struct
from collections import deque

from . import events as ev
from .codec import fanout, read_privmsg
from .errors import FrameError, LineTooLong, ProtocolError
from .protocol import NEED_DATA

_OPEN = None                    # State.OPEN, imported at the first run: chatcore.connection
                                # imports this module
_SEND_DIRECT, _SEND_ROOM = 0x12, 0x22
_DIRECT_MESSAGE, _ROOM_MESSAGE, _ACK_TYPE = 0x90, 0xA0, 0x82
_FLOOD_CHAT = 0                 # chatcore.connection.pacing: the chat messages' bucket
_FLOOD_REQUEST = 1              # ... and the other requests'
_HEAD = struct.Struct(">IBIH")  # length, type, request_id, first str's length
_U16 = struct.Struct(">H")
_STAMP = struct.Struct(">QQ")
_ACK = struct.Struct(">IBIQQ")
# chatcore.irc: how the outlets write a relayed line (outlet.USER_HOST, message.MAX_LINE_BYTES)
_IRC_USER_HOST = b"chatcore"
_IRC_MAX_LINE_BYTES = 512
_PING_TOKEN = re.compile(rb"[!-~]+")       # printable ASCII, no space
_NATIVE, _IRC, _IRC_TIMED = 0, 1, 2     # a room's encodings: its outlets, in _targets
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
    _first_run()
    protocol = conn.protocol
    hub = conn.hub
    outlet = conn.outlet
    outbuf = conn.outbuf
    session = conn.session
    stats = conn.stats
    buckets = conn._buckets
    front = conn.server.irc
    output_limit = conn.config.max_output_bytes
    max_text_bytes = hub.limits.max_text_bytes
    sender = session.name.encode()
    source = _irc_source(sender)
    skip_outlet, skip_buffer = _irc_skip(front, session)
    last_type = last_name = found = targets = room_name = names = fixed_bytes = None
    irc_head = link = None
    # A room shared with other cluster nodes: its messages go into the turn's room batch
    # (the backplane's batch_link / batch_frame), their Acks queued as _pipeline queues them.
    batch_link = getattr(hub.backplane, "batch_link", None)
    window = conn.config.max_room_sends_in_flight
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
        # Replies still owed to messages to shared rooms: only another such message goes on
        # now (Connection._handle_input holds any other request behind them).
        owed = bool(conn._replies)
        if (msg_type != _SEND_ROOM and msg_type != _SEND_DIRECT) or (
                owed and msg_type != _SEND_ROOM):
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
            # Hub.send_room, for a member of a room of members of this node only, or of a
            # room shared with other nodes (not gated) whose messages the backplane batches.
            if same:
                room = found
                if link is not None:
                    # Batching it may have published the batch (its limit): asked again.
                    link = batch_link(room)
                    if link is None:
                        return _handed_back(protocol, frame, turn_ends_at)
            else:
                room = session.rooms.get(key)
                link = targets = irc_head = None
                if room is not None and room.shared and not room.modes.gated:
                    link = batch_link(room) if batch_link is not None else None
                    if link is None:
                        return _handed_back(protocol, frame, turn_ends_at)
                else:
                    targets = _targets(room, outlet, front)
                    if targets is None:
                        return _handed_back(protocol, frame, turn_ends_at)
                found, last_type, last_name = room, msg_type, name
                room_name = room.name.encode()
                # What the frame holds between its header and the stamps, and its size.
                names = b"".join((room_name, _U16.pack(len(sender)), sender))
                fixed_bytes = 5 + 2 + len(names) + 16
                if targets is not None:
                    irc_head = _irc_head(source, b"#" + room_name, targets)
            if owed and link is None:
                return _handed_back(protocol, frame, turn_ends_at)
            if irc_head is not None and not _irc_fits(irc_head, text, front):
                return _handed_back(protocol, frame, turn_ends_at)
        else:
            # Hub.send_direct, to a user of this node already in a conversation with the
            # sender and not away.
            if same:
                peer = found
            else:
                peer = hub.sessions.get(key)
                if (peer is None or peer is session or peer.away
                        or peer.key not in session.conversations):
                    return _handed_back(protocol, frame, turn_ends_at)
                peer_kind = _kind_of(peer.outlet, outlet, front)
                if peer_kind is None:
                    return _handed_back(protocol, frame, turn_ends_at)
                found, last_type, last_name = peer, msg_type, name
                irc_head = None if peer_kind == _NATIVE else _irc_head(
                    source, peer.endpoint.owner.nick.encode(), ((peer_kind, None, None),))
            if irc_head is not None and not _irc_fits(irc_head, text, front):
                return _handed_back(protocol, frame, turn_ends_at)
        # Both: flood control, then the hub's stamp (as Hub.send_room/send_direct).
        if buckets is not None:
            wait_seconds = buckets[_FLOOD_CHAT].take(now)
            if wait_seconds:
                return turn_ends_at, protocol.event_of(frame), wait_seconds
        if link is not None and msg_type == _SEND_ROOM:
            # Requests._pipeline and Hub.send_room of a shared room: the reply's slot first,
            # then the message into the batch; delivered here, and answered, once it is back.
            replies = conn._replies
            if replies is None:
                replies = conn._replies = deque()
            slot = [False, None, request_id]
            replies.append(slot)
            msg_id, timestamp_ms = _stamp(hub, session)
            hub.backplane.batch_frame(link, _room_frame(fixed_bytes, room_name, names, msg_id,
                                                        timestamp_ms, text),
                                      SharedSend(conn, slot, room, session.name, msg_id,
                                                 timestamp_ms, text))
            if len(replies) >= window and not conn._awaiting:
                conn._awaiting = "pipeline"
            if (conn.state is not _OPEN or conn._awaiting
                    or outbuf.pending_bytes > output_limit or hub.work_done >= turn_ends_at):
                return turn_ends_at, None, 0.0
            turn_ends_at -= 1
            continue
        msg_id, timestamp_ms = _stamp(hub, session)
        if msg_type == _SEND_ROOM:
            _to_room(targets, outlet, _room_frame(fixed_bytes, room_name, names, msg_id,
                                                  timestamp_ms, text),
                     irc_head, text, timestamp_ms, skip_outlet, skip_buffer)
            hub.work_done += len(room.members)
            stats.room_messages += 1
        else:
            _to_peer(peer, outlet, irc_head, sender, text, msg_id, timestamp_ms)
            hub.work_done += 1
            stats.direct_messages += 1
        if outbuf.append(_ACK.pack(21, _ACK_TYPE, request_id, msg_id, timestamp_ms)):
            outlet.pending.append(outbuf)
        # The head of Connection._handle_input's loop, for the next request.
        if (conn.state is not _OPEN or conn._awaiting or outbuf.pending_bytes > output_limit
                or hub.work_done >= turn_ends_at):
            return turn_ends_at, None, 0.0
        turn_ends_at -= 1


def run_irc(conn, turn_ends_at: int, now: float):
    """``run`` for a registered IRC connection (``IrcConnection``): its plain PRIVMSG lines
    to a room or to a user, as ``irc.messages.plain_privmsg`` handles them; every other line
    is handed back as the event ``IrcProtocol`` makes of it. Same arguments, same result."""
    _first_run()
    protocol = conn.protocol
    lines = protocol.lines
    hub = conn.hub
    native_outlet = conn.server.outlet
    outbuf = conn.outbuf
    session = conn.session
    buckets = conn._buckets
    front = conn.irc
    stats = conn.stats                          # counted as native messages are (metrics)
    output_limit = conn.config.max_output_bytes
    max_text_bytes = hub.limits.max_text_bytes
    sender = session.name.encode()
    source = _irc_source(sender)
    skip_outlet, skip_buffer = _irc_skip(front, session)
    last_target = found = targets = names = fixed_bytes = irc_head = link = None
    batch_link = getattr(hub.backplane, "batch_link", None)     # shared rooms: see run
    while True:
        try:
            line = lines.next_line()
        except LineTooLong:
            try:
                protocol.next_event()           # the protocol's own error for it
            except ProtocolError as exc:
                return turn_ends_at, exc, 0.0
            raise
        if line is None:
            return turn_ends_at, NEED_DATA, 0.0
        token_at = _plain_ping(line)
        if token_at > 0 and not conn._replies and conn._captured is None:
            # registration.ping: PONG with the token, a request's flood cost, no Ack.
            if buckets is not None:
                wait_seconds = buckets[_FLOOD_REQUEST].take(now)
                if wait_seconds:
                    return turn_ends_at, protocol.event_of(line), wait_seconds
            if outbuf.append(front.pong_prefix + line[token_at:] + b"\r\n"):
                conn.outlet.pending.append(outbuf)
            if (conn.state is not _OPEN or conn._awaiting
                    or outbuf.pending_bytes > output_limit or hub.work_done >= turn_ends_at):
                return turn_ends_at, None, 0.0
            turn_ends_at -= 1
            continue
        plain = read_privmsg(line)
        if plain is None or conn._replies:
            return _irc_handed_back(protocol, line, plain, turn_ends_at)
        target = plain.target
        text = plain.text.encode()
        if not text_ok(text, max_text_bytes):
            return turn_ends_at, plain, 0.0
        same = target == last_target
        if target[:1] == "#":
            # Hub.send_room (plain_privmsg's), for a member of a room of this node's members,
            # or of a room shared with other nodes (not gated): into its batch, as in run.
            if same:
                room = found
                if link is not None:
                    link = batch_link(room)
                    if link is None:
                        return turn_ends_at, plain, 0.0
            else:
                room = session.rooms.get(target[1:].casefold())
                link = targets = irc_head = None
                if room is not None and room.shared and not room.modes.gated:
                    link = batch_link(room) if batch_link is not None else None
                    if link is None:
                        return turn_ends_at, plain, 0.0
                else:
                    targets = _targets(room, native_outlet, front)
                    if targets is None:
                        return turn_ends_at, plain, 0.0
                found, last_target = room, target
                room_name = room.name.encode()
                names = b"".join((room_name, _U16.pack(len(sender)), sender))
                fixed_bytes = 5 + 2 + len(names) + 16
                if targets is not None:
                    irc_head = _irc_head(source, b"#" + room_name, targets)
            if irc_head is not None and not _irc_fits(irc_head, text, front):
                return turn_ends_at, plain, 0.0
        else:
            # Hub.send_direct (plain_privmsg's), to a user of this node already in a
            # conversation with the sender, not away, the sender without echo-message
            # (its echo is stamped with the time it is sent, not the message's).
            if same:
                peer = found
            else:
                peer = hub.sessions.get(target.casefold())
                if (peer is None or peer is session or peer.away or conn.echo_message
                        or peer.key not in session.conversations):
                    return turn_ends_at, plain, 0.0
                peer_kind = _kind_of(peer.outlet, native_outlet, front)
                if peer_kind is None:
                    return turn_ends_at, plain, 0.0
                found, last_target = peer, target
                irc_head = None if peer_kind == _NATIVE else _irc_head(
                    source, peer.endpoint.owner.nick.encode(), ((peer_kind, None, None),))
            if irc_head is not None and not _irc_fits(irc_head, text, front):
                return turn_ends_at, plain, 0.0
        if buckets is not None:
            wait_seconds = buckets[_FLOOD_CHAT].take(now)
            if wait_seconds:
                return turn_ends_at, plain, wait_seconds
        msg_id, timestamp_ms = _stamp(hub, session)
        if target[:1] == "#":
            data = _room_frame(fixed_bytes, room_name, names, msg_id, timestamp_ms, text)
            if link is not None:        # delivered once back; an IRC line has no Ack
                hub.backplane.batch_frame(link, data, SharedSend(
                    conn, None, room, session.name, msg_id, timestamp_ms, text))
            else:
                _to_room(targets, native_outlet, data, irc_head, text, timestamp_ms,
                         skip_outlet, skip_buffer)
                hub.work_done += len(room.members)
            stats.room_messages += 1
        else:
            _to_peer(peer, native_outlet, irc_head, sender, text, msg_id, timestamp_ms)
            hub.work_done += 1
            stats.direct_messages += 1
        if (conn.state is not _OPEN or conn._awaiting or outbuf.pending_bytes > output_limit
                or hub.work_done >= turn_ends_at):
            return turn_ends_at, None, 0.0
        turn_ends_at -= 1


class SharedSend:
    """What follows a message the lane put in a shared room's batch, once the backplane
    hands it back: ``Hub._to_room``'s ``deliver(told)`` (the members told here, unless the
    backplane told them already) and ``Requests._pipeline``'s ``done`` (the Ack released in
    request order) in one. ``slot`` None: an IRC sender's, answered by nothing."""

    __slots__ = ("conn", "slot", "room", "sender", "msg_id", "timestamp_ms", "text",
                 "room_name")

    def __init__(self, conn, slot, room, sender: str, msg_id: int, timestamp_ms: int,
                 text: bytes):
        self.conn, self.slot, self.room, self.sender = conn, slot, room, sender
        self.msg_id, self.timestamp_ms, self.text = msg_id, timestamp_ms, text
        self.room_name = room.name              # as the hub's event holds it, when stamped

    def __call__(self, told: bool = False) -> None:
        if not told:
            hub = self.conn.hub
            event = ev.RoomMessage(self.room_name, self.sender, self.msg_id,
                                   self.timestamp_ms, self.text.decode())
            hub.apply_room_event(self.room, event)
            hub._broadcast(self.room, event)
        slot = self.slot
        if slot is not None:
            slot[0], slot[1] = True, (self.msg_id, self.timestamp_ms)
            self.conn._release_replies()


def _first_run() -> None:
    global _OPEN
    if _OPEN is None:
        from .connection.closing import State
        _OPEN = State.OPEN


def _kind_of(outlet, native_outlet, front):
    """Which encoding ``outlet`` writes (_NATIVE, _IRC, _IRC_TIMED), or None for any other
    (the detached outlet, a test's)."""
    if outlet is native_outlet:
        return _NATIVE
    if front is not None:
        if outlet is front.outlet:
            return _IRC
        if outlet is front.timed_outlet:
            return _IRC_TIMED
    return None


def _targets(room, native_outlet, front):
    """``room``'s (kind, outlet, endpoints) in the hub's order, when the lane may deliver to
    it (a room of this node only, not gated, every member attached here); else None."""
    if room is None or room.shared or room.modes.gated:
        return None
    targets = []
    for room_outlet, endpoints in room.endpoints.items():
        kind = _kind_of(room_outlet, native_outlet, front)
        if kind is None:
            return None
        targets.append((kind, room_outlet, endpoints))
    return targets or None


def _irc_source(sender: bytes) -> bytes:
    """``:nick!nick@host``, the source of a user's relayed lines (outlet.source_of)."""
    return b"".join((b":", sender, b"!", sender, b"@", _IRC_USER_HOST))


def _irc_skip(front, session):
    """The outlet and buffer the IRC outlet leaves the sender out of (no echo-message), as
    ``IrcOutlet.broadcast`` finds them: (None, None) for a native sender."""
    if front is None:
        return None, None
    user = front.users.get(session.name.casefold())
    if user is None or user.echo_message:
        return None, None
    return user.outlet, user.outbuf


def _irc_head(source: bytes, target: bytes, targets):
    """``:source PRIVMSG target :`` when ``targets`` hold IRC members, else None."""
    for kind, _, _ in targets:
        if kind != _NATIVE:
            return b"".join((source, b" PRIVMSG ", target, b" :"))
    return None


def _irc_fits(irc_head: bytes, text: bytes, front) -> bool:
    """Whether ``text`` is one IRC line after ``irc_head`` (the outlet's ``text_lines``
    cuts the rest into several, which the hub path does) and no labeled command captures
    output now (the outlet would put its copy in that command's answer)."""
    return (len(irc_head) + len(text) + 2 <= _IRC_MAX_LINE_BYTES and b"\n" not in text
            and not front.capturing)


def _irc_line(irc_outlet, irc_head: bytes, text: bytes, timestamp_ms: int) -> bytes:
    line = b"".join((irc_head, text, b"\r\n"))
    return irc_outlet._tags(timestamp_ms) + line if irc_outlet.timed else line


def _stamp(hub, session):
    """The hub's stamp of a message it accepts: (msg_id, timestamp_ms); the sender active."""
    session.last_active = hub._clock()
    return next(hub._msg_ids), int(hub._wallclock() * 1000)


def _room_frame(fixed_bytes: int, room_name: bytes, names: bytes, msg_id: int,
                timestamp_ms: int, text: bytes) -> bytes:
    """The RoomMessage frame: ``names`` (room, sender) between its header and its stamps."""
    return b"".join((_HEAD.pack(fixed_bytes + len(text), _ROOM_MESSAGE, 0, len(room_name)),
                     names, _STAMP.pack(msg_id, timestamp_ms), text))


def _to_peer(peer, native_outlet, irc_head, sender: bytes, text: bytes, msg_id: int,
             timestamp_ms: int) -> None:
    """A direct message to ``peer``, as its outlet writes it: the DirectMessage frame to a
    native peer (``irc_head`` None), the relayed line to an IRC one."""
    if irc_head is None:
        data = b"".join((
            _HEAD.pack(5 + 2 + len(sender) + 16 + len(text), _DIRECT_MESSAGE, 0, len(sender)),
            sender, _STAMP.pack(msg_id, timestamp_ms), text))
        native_outlet.deliveries += 1
    else:
        data = _irc_line(peer.outlet, irc_head, text, timestamp_ms)
    endpoint = peer.endpoint
    if endpoint.append(data):
        native_outlet.pending.append(endpoint)


def _to_room(targets, native_outlet, data, irc_head, text, timestamp_ms, skip_outlet,
             skip_buffer) -> None:
    """The message to every encoding of the room, as the hub's outlets deliver it: ``data``
    (the RoomMessage frame) to the native members, its line to each IRC encoding's."""
    pending = native_outlet.pending
    for kind, room_outlet, endpoints in targets:
        if kind == _NATIVE:
            native_outlet.deliveries += len(endpoints)
            pending.extend(fanout(data, endpoints))
        else:
            pending.extend(fanout(_irc_line(room_outlet, irc_head, text, timestamp_ms),
                                  endpoints, skip_buffer if room_outlet is skip_outlet
                                  else None))


def _handed_back(protocol, frame, turn_ends_at: int):
    try:
        return turn_ends_at, protocol.event_of(frame), 0.0
    except ProtocolError as exc:
        return turn_ends_at, exc, 0.0


def _plain_ping(line: bytes) -> int:
    """Where the token of a ``PING token`` or ``PING :token`` line starts, when the token
    is one word of printable ASCII not starting with ':' (PONG then says it as it is,
    ``irc.message.encode``'s rule); else -1 (the line goes the way every line goes)."""
    if line[:5] != b"PING ":
        return -1
    start = 6 if line[5:6] == b":" else 5
    token = line[start:]
    if not token or token[:1] == b":" or not _PING_TOKEN.fullmatch(token):
        return -1
    return start


def _irc_handed_back(protocol, line: bytes, plain, turn_ends_at: int):
    return turn_ends_at, plain if plain is not None else protocol.event_of(line), 0.0
