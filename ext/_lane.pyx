# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of ``chatcore._lane_py``: the per-message lane (``run`` for native
frames, ``run_irc`` for IRC lines), same names, same behaviour, less time.

``chatcore._lane_py`` is the specification (and the hub path it shortens is that module's
specification); tests/test_lane_differential.py holds the three to each other. What is
compiled is what the profile of ``rooms`` showed to cost per message: splitting the payload,
the UTF-8 and text-rule check on the received bytes, the room or user key, and building the
outgoing frame, the IRC line (with its ``server-time`` tag) and the Ack from the received
bytes without decoding them; for IRC, recognising the plain PRIVMSG line without making
strings of it. The hub's state is read live, through its attributes, exactly where the twin
reads it. Names that are not ASCII are handed back (the twin casefolds them; the hub path
gives the same outcome). The IRC part (``run_irc``, the IRC line and its ``server-time`` tag,
a room's outlets) is in ``_lane_irc.pxi``, included at the end.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_AsUnsignedLongLong
from libc.string cimport memcmp, memcpy

from collections import deque

from .codec import fanout
from .events import RoomMessage
from .errors import FrameError, LineTooLong, ProtocolError
from .protocol import NEED_DATA

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL

cdef enum:
    _SEND_DIRECT = 0x12
    _SEND_ROOM = 0x22
    _DIRECT_MESSAGE = 0x90
    _ROOM_MESSAGE = 0xA0
    _ACK_TYPE = 0x82
    _ACK_BYTES = 25                 # length u32 | type | request_id u32 | msg_id | ts
    _HEADER_BYTES = 9
    _FLOOD_CHAT = 0                 # chatcore.connection.pacing: the chat messages' bucket
    _FLOOD_REQUEST = 1              # ... and the other requests'
    _IRC_MAX_LINE_BYTES = 512       # chatcore.irc.message.MAX_LINE_BYTES
    _MAX_PLAIN_PRIVMSG_BYTES = 510  # chatcore._ircframe_py: IRC's 512 bytes with CRLF
    _TIME_TAG_BYTES = 31            # "@time=YYYY-MM-DDTHH:MM:SS.mmmZ "
    _NATIVE = 0                     # a room's encodings (its outlets), as in the twin
    _IRC = 1
    _IRC_TIMED = 2

_OPEN = None                    # State.OPEN, imported at the first run: chatcore.connection
                                # imports this module
_IRC_USER_HOST = b"chatcore"    # chatcore.irc.outlet.USER_HOST


cdef inline void _put32(unsigned char *p, unsigned long long v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _put64(unsigned char *p, unsigned long long v) noexcept nogil:
    _put32(p, v >> 32)
    _put32(p + 4, v & 0xFFFFFFFFULL)


cdef bint _valid_text(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """Strict UTF-8 (as CPython's decoder: no overlong forms, surrogates or code points past
    U+10FFFF) holding nothing the text rule forbids: C0 controls but TAB and LF, DEL, C1."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, d
    cdef unsigned long long w, v
    while i < n:
        if i + 8 <= n:
            # Eight bytes at once when all are printable ASCII (0x20-0x7E): no byte with its
            # top bit set, none below 0x20, none equal to 0x7F (exact "some byte is" tests).
            memcpy(&w, p + i, 8)
            v = w ^ 0x7F7F7F7F7F7F7F7FULL
            if not ((w | ((w - 0x2020202020202020ULL) & ~w)
                     | ((v - 0x0101010101010101ULL) & ~v)) & 0x8080808080808080ULL):
                i += 8
                continue
        c = p[i]
        if c < 0x80:
            if (c < 0x20 and c != 0x09 and c != 0x0A) or c == 0x7F:
                return False
            i += 1
        elif c < 0xC2:
            return False                # a continuation byte, or an overlong lead (C0, C1)
        elif c < 0xE0:
            if i + 1 >= n:
                return False
            d = p[i + 1]
            if d < 0x80 or d > 0xBF or (c == 0xC2 and d < 0xA0):
                return False            # C2 80-C2 9F: the C1 controls
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            d = p[i + 1]
            if c == 0xE0:
                if d < 0xA0 or d > 0xBF:
                    return False
            elif c == 0xED:
                if d < 0x80 or d > 0x9F:
                    return False        # ED A0-ED BF: surrogates
            elif d < 0x80 or d > 0xBF:
                return False
            if p[i + 2] < 0x80 or p[i + 2] > 0xBF:
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            d = p[i + 1]
            if c == 0xF0:
                if d < 0x90 or d > 0xBF:
                    return False
            elif c == 0xF4:
                if d < 0x80 or d > 0x8F:
                    return False
            elif d < 0x80 or d > 0xBF:
                return False
            if (p[i + 2] < 0x80 or p[i + 2] > 0xBF or p[i + 3] < 0x80
                    or p[i + 3] > 0xBF):
                return False
            i += 4
        else:
            return False
    return True


def text_ok(text, max_text_bytes):
    """Whether ``text`` decodes as UTF-8 (the decoder's rule) and passes the hub's text
    check (``hub.checks.check_text``: not empty, at most ``max_text_bytes``, the text rule)."""
    cdef bytes raw = text
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    if n == 0 or n > max_text_bytes:
        return False
    return _valid_text(<const unsigned char *>PyBytes_AS_STRING(raw), n)


cdef object _ascii_key(const unsigned char *p, Py_ssize_t n):
    """The casefolded key of an ASCII name (casefold is lower() on ASCII), or None."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        if p[i] >= 0x80:
            return None
    key = PyUnicode_New(n, 127)
    cdef unsigned char *q = <unsigned char *>PyUnicode_DATA(key)
    for i in range(n):
        c = p[i]
        q[i] = c + 32 if 0x41 <= c <= 0x5A else c
    return key


cdef inline long long _timestamp_ms(object wallclock) except? -1:
    now = wallclock()
    if PyFloat_CheckExact(now):
        return <long long>(PyFloat_AS_DOUBLE(now) * 1000.0)    # int() truncates likewise
    return int(now * 1000)


cdef inline tuple _handed_back(object protocol, object frame, long long turn_ends_at):
    try:
        return turn_ends_at, protocol.event_of(frame), 0.0
    except ProtocolError as exc:
        return turn_ends_at, exc, 0.0


cdef bytes _message_frame(int msg_type, const char *room_name, Py_ssize_t room_size,
                          const char *sender, Py_ssize_t sender_size,
                          unsigned long long msg_id, unsigned long long timestamp_ms,
                          const unsigned char *text, Py_ssize_t text_size):
    """A RoomMessage (``room_name`` given) or DirectMessage frame (``room_name`` NULL)."""
    cdef Py_ssize_t total = _HEADER_BYTES + 2 + sender_size + 16 + text_size
    if room_name != NULL:
        total += 2 + room_size
    cdef bytes data = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(data)
    _put32(q, total - 4)
    q[4] = msg_type
    _put32(q + 5, 0)
    q += 9
    if room_name != NULL:
        q[0] = (room_size >> 8) & 0xFF
        q[1] = room_size & 0xFF
        memcpy(q + 2, room_name, room_size)
        q += 2 + room_size
    q[0] = (sender_size >> 8) & 0xFF
    q[1] = sender_size & 0xFF
    memcpy(q + 2, sender, sender_size)
    q += 2 + sender_size
    _put64(q, msg_id)
    _put64(q + 8, timestamp_ms)
    memcpy(q + 16, text, text_size)
    return data


def run(conn, long long turn_ends_at, now):
    """Handle ``conn``'s buffered frames from the point of ``Connection._handle_input`` where
    it takes the next event (see ``chatcore._lane_py.run``: same arguments, same result)."""
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
    front = conn.server.irc
    # The decoder itself, not protocol.next_frame: one call less a message. A broken stream
    # (or a frame error now) goes through next_frame for the protocol's sticky error.
    next_frame = protocol.next_frame if protocol._broken is not None \
        else protocol._decoder.next_frame
    append_reply = outbuf.append
    clock = hub._clock
    wallclock = hub._wallclock
    msg_ids = hub._msg_ids
    cdef dict sessions = hub.sessions
    cdef Py_ssize_t output_limit = conn.config.max_output_bytes
    cdef Py_ssize_t max_text_bytes = hub.limits.max_text_bytes
    cdef Py_ssize_t size, name_end, text_size, room_size, sender_size
    cdef unsigned long long msg_id, timestamp_ms, request_id
    cdef const unsigned char *p
    cdef const char *room_name
    cdef const char *sender
    cdef unsigned char *q
    cdef bytes payload, data, ack
    cdef dict endpoints
    cdef list targets = None
    cdef int msg_type, last_type = 0, peer_kind = _NATIVE
    cdef Py_ssize_t name_size
    cdef bint same
    cdef object last_name = None, found = None, native = None, irc_head = None
    cdef object skip_outlet = None, skip_buffer = None, source = None, link = None
    cdef bint owed
    cdef list slot
    # A room shared with other cluster nodes: its messages go into the turn's room batch
    # (the backplane's batch_link / batch_frame), their Acks queued as _pipeline queues them.
    batch_link = getattr(hub.backplane, "batch_link", None)
    cdef Py_ssize_t window = conn.config.max_room_sends_in_flight
    sender_name = session.name          # kept referenced: ``sender`` points into it
    sender = PyUnicode_AsUTF8AndSize(sender_name, &sender_size)
    # Counters and the activity stamp are written once, when the run ends, not per
    # message (nothing reads them meanwhile: the flusher, metrics and idle times do later).
    cdef Py_ssize_t deliveries = 0, room_messages = 0, direct_messages = 0
    cdef bint touched = False
    try:
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
            msg_type = (<tuple>frame)[0]
            # Replies still owed to messages to shared rooms: only another such message goes on
            # now (Connection._handle_input holds any other request behind them).
            owed = bool(conn._replies)
            if (msg_type != _SEND_ROOM and msg_type != _SEND_DIRECT) or (
                    owed and msg_type != _SEND_ROOM):
                return _handed_back(protocol, frame, turn_ends_at)
            payload = (<tuple>frame)[2]
            p = <const unsigned char *>PyBytes_AS_STRING(payload)
            size = PyBytes_GET_SIZE(payload)
            if size < 2:
                return _handed_back(protocol, frame, turn_ends_at)
            name_end = 2 + ((p[0] << 8) | p[1])
            text_size = size - name_end
            if (text_size <= 0 or text_size > max_text_bytes
                    or not _valid_text(p + name_end, text_size)):
                return _handed_back(protocol, frame, turn_ends_at)
            name_size = name_end - 2
            # The same room (or peer) as the message before, in this run: nothing but this loop
            # ran since it was judged, so the verdict and what it found still hold.
            same = (msg_type == last_type and last_name is not None
                    and PyBytes_GET_SIZE(last_name) == name_size
                    and memcmp(PyBytes_AS_STRING(last_name), p + 2, name_size) == 0)
            if not same:
                key = _ascii_key(p + 2, name_size)
                if key is None:
                    return _handed_back(protocol, frame, turn_ends_at)
            if msg_type == _SEND_ROOM:
                # Hub.send_room, for a member of a room of members of this node only (a room
                # of native members only, the commonest, without the list of encodings), or of
                # a room shared with other nodes (not gated) whose messages the backplane batches.
                if same:
                    room = found
                    if link is not None:
                        # Batching it may have published the batch (its limit): asked again.
                        link = batch_link(room)
                        if link is None:
                            return _handed_back(protocol, frame, turn_ends_at)
                else:
                    room = (<dict>session.rooms).get(key)
                    if room is None or room.modes.gated:
                        return _handed_back(protocol, frame, turn_ends_at)
                    link = None
                if same:
                    pass
                elif room.shared:
                    link = batch_link(room) if batch_link is not None else None
                    if link is None:
                        return _handed_back(protocol, frame, turn_ends_at)
                    native = targets = irc_head = None
                    found, last_type = room, msg_type
                    last_name = PyBytes_FromStringAndSize(<const char *>p + 2, name_size)
                else:
                    endpoints = room.endpoints
                    native = endpoints.get(outlet) if len(endpoints) == 1 else None
                    targets = None
                    irc_head = None
                    if native is None:
                        targets = _targets(room, outlet, front)
                        if targets is None:
                            return _handed_back(protocol, frame, turn_ends_at)
                        if _has_irc(targets):
                            if source is None:      # IRC members, first in this run
                                source = _irc_source(sender, sender_size)
                                skip_outlet, skip_buffer = _irc_skip(front, session)
                            irc_head = b"".join((source, b" PRIVMSG #", room.name.encode(),
                                                 b" :"))
                    found, last_type = room, msg_type
                    last_name = PyBytes_FromStringAndSize(<const char *>p + 2, name_size)
                if owed and link is None:
                    return _handed_back(protocol, frame, turn_ends_at)
                if irc_head is not None and not _irc_fits(irc_head, text_size, p + name_end,
                                                          front):
                    return _handed_back(protocol, frame, turn_ends_at)
            else:
                # Hub.send_direct, to a user of this node already in a conversation with the
                # sender and not away.
                if same:
                    peer = found
                else:
                    peer = sessions.get(key)
                    if (peer is None or peer is session or peer.away
                            or peer.key not in session.conversations):
                        return _handed_back(protocol, frame, turn_ends_at)
                    peer_kind = _kind_of(peer.outlet, outlet, front)
                    if peer_kind < 0:
                        return _handed_back(protocol, frame, turn_ends_at)
                    irc_head = None
                    if peer_kind != _NATIVE:
                        if source is None:
                            source = _irc_source(sender, sender_size)
                        irc_head = b"".join((source, b" PRIVMSG ",
                                             peer.endpoint.owner.nick.encode(), b" :"))
                    found, last_type = peer, msg_type
                    last_name = PyBytes_FromStringAndSize(<const char *>p + 2, name_size)
                if irc_head is not None and not _irc_fits(irc_head, text_size, p + name_end,
                                                          front):
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
                slot = [False, None, (<tuple>frame)[1]]
                replies.append(slot)
                touched = True
                msg_id = PyLong_AsUnsignedLongLong(next(msg_ids))
                timestamp_ms = _timestamp_ms(wallclock)
                room_name = PyUnicode_AsUTF8AndSize(room.name, &room_size)
                data = _message_frame(_ROOM_MESSAGE, room_name, room_size, sender, sender_size,
                                      msg_id, timestamp_ms, p + name_end, text_size)
                hub.backplane.batch_frame(link, data, _shared_send(
                    conn, slot, room, sender_name, msg_id, timestamp_ms,
                    PyBytes_FromStringAndSize(<const char *>p + name_end, text_size)))
                if len(replies) >= window and not conn._awaiting:
                    conn._awaiting = "pipeline"
                if (conn.state is not _OPEN or conn._awaiting
                        or outbuf.pending_bytes > output_limit or hub.work_done >= turn_ends_at):
                    return turn_ends_at, None, 0.0
                turn_ends_at -= 1
                continue
            touched = True
            msg_id = PyLong_AsUnsignedLongLong(next(msg_ids))
            timestamp_ms = _timestamp_ms(wallclock)
            if msg_type == _SEND_ROOM:
                room_name = PyUnicode_AsUTF8AndSize(room.name, &room_size)
                data = _message_frame(_ROOM_MESSAGE, room_name, room_size, sender, sender_size,
                                      msg_id, timestamp_ms, p + name_end, text_size)
                if targets is None:
                    deliveries += len(native)
                    (<list>outlet.pending).extend(fanout(data, native))
                else:
                    _to_room(targets, outlet, data, irc_head, p + name_end, text_size,
                             timestamp_ms, skip_outlet, skip_buffer)
                hub.work_done += len(room.members)
                room_messages += 1
            else:
                if irc_head is None:
                    data = _message_frame(_DIRECT_MESSAGE, NULL, 0, sender, sender_size,
                                          msg_id, timestamp_ms, p + name_end, text_size)
                    deliveries += 1
                else:
                    data = _irc_line(peer_kind == _IRC_TIMED, irc_head, p + name_end, text_size,
                                     timestamp_ms)
                endpoint = peer.endpoint
                if endpoint.append(data):
                    (<list>outlet.pending).append(endpoint)
                hub.work_done += 1
                direct_messages += 1
            request_id = (<tuple>frame)[1]
            ack = PyBytes_FromStringAndSize(NULL, _ACK_BYTES)
            q = <unsigned char *>PyBytes_AS_STRING(ack)
            _put32(q, _ACK_BYTES - 4)
            q[4] = _ACK_TYPE
            _put32(q + 5, request_id)
            _put64(q + 9, msg_id)
            _put64(q + 17, timestamp_ms)
            if append_reply(ack):
                (<list>outlet.pending).append(outbuf)
            # The head of Connection._handle_input's loop, for the next request.
            if (conn.state is not _OPEN or conn._awaiting or outbuf.pending_bytes > output_limit
                    or hub.work_done >= turn_ends_at):
                return turn_ends_at, None, 0.0
            turn_ends_at -= 1
    finally:
        if deliveries:
            outlet.deliveries += deliveries
        if room_messages:
            stats.room_messages += room_messages
        if direct_messages:
            stats.direct_messages += direct_messages
        if touched:
            session.last_active = clock()


cdef class SharedSend:
    """What follows a message the lane put in a shared room's batch, once the backplane
    hands it back (``chatcore._lane_py.SharedSend``): ``Hub._to_room``'s ``deliver(told)``
    and ``Requests._pipeline``'s ``done`` in one. ``slot`` None: an IRC sender's."""

    cdef object conn, slot, room, room_name, sender, text
    cdef unsigned long long msg_id, timestamp_ms

    def __call__(self, told=False):
        if not told:
            hub = self.conn.hub
            event = RoomMessage(self.room_name, self.sender, self.msg_id, self.timestamp_ms,
                                self.text.decode())
            hub.apply_room_event(self.room, event)
            hub._broadcast(self.room, event)
        slot = self.slot
        if slot is not None:
            (<list>slot)[0] = True
            (<list>slot)[1] = (self.msg_id, self.timestamp_ms)
            _release_replies(self.conn)


cdef _release_replies(object conn):
    """``Requests._release_replies`` with the Acks of the room sends at the head of the
    queue built here; whatever else is ready next (an Error, another request's reply) and
    the window reopening are left to it."""
    replies = conn._replies
    cdef bint is_open = conn.state is _OPEN
    cdef list head
    cdef bytes ack
    cdef unsigned char *q
    outbuf = conn.outbuf
    while replies:
        head = replies[0]
        if not head[0]:
            break
        outcome, request_id = head[1], head[2]
        if type(request_id) is not int or type(outcome) is not tuple:
            break
        replies.popleft()
        if is_open:
            conn.stats.room_messages += 1
            ack = PyBytes_FromStringAndSize(NULL, _ACK_BYTES)
            q = <unsigned char *>PyBytes_AS_STRING(ack)
            _put32(q, _ACK_BYTES - 4)
            q[4] = _ACK_TYPE
            _put32(q + 5, request_id)
            _put64(q + 9, (<tuple>outcome)[0])
            _put64(q + 17, (<tuple>outcome)[1])
            if outbuf.append(ack):
                (<list>conn.outlet.pending).append(outbuf)
    if (replies and (<list>replies[0])[0]) or conn._awaiting == "pipeline":
        conn._release_replies()


cdef SharedSend _shared_send(object conn, object slot, object room, object sender,
                             unsigned long long msg_id, unsigned long long timestamp_ms,
                             bytes text):
    cdef SharedSend send = SharedSend.__new__(SharedSend)
    send.conn, send.slot, send.room, send.sender = conn, slot, room, sender
    send.msg_id, send.timestamp_ms, send.text = msg_id, timestamp_ms, text
    send.room_name = room.name
    return send


include "_lane_irc.pxi"
