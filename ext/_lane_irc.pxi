# The IRC part of the lane (included by _lane.pyx, which it shares names with): the
# server-time tag and the relayed PRIVMSG line as the IRC outlet writes them, which of a
# room's outlets the lane delivers to, and run_irc, the lane of an IRC connection.


cdef inline void _put2(unsigned char *p, unsigned int v) noexcept nogil:
    p[0] = 48 + (v // 10) % 10
    p[1] = 48 + v % 10


cdef void _put_time_tag(unsigned char *p, long long timestamp_ms) noexcept nogil:
    """``@time=YYYY-MM-DDTHH:MM:SS.mmmZ `` (outlet.time_tag: UTC, milliseconds), the date
    from the day number by the civil-from-days rule of the proleptic Gregorian calendar."""
    cdef long long seconds = timestamp_ms // 1000
    cdef long long millis = timestamp_ms - seconds * 1000
    cdef long long days = seconds // 86400
    cdef long long rest = seconds - days * 86400
    cdef long long z = days + 719468
    cdef long long era = (z if z >= 0 else z - 146096) // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    cdef long long day = doy - (153 * mp + 2) // 5 + 1
    cdef long long month = mp + 3 if mp < 10 else mp - 9
    cdef long long year = yoe + era * 400 + (1 if month <= 2 else 0)
    memcpy(p, b"@time=", 6)
    _put2(p + 6, <unsigned int>(year // 100))
    _put2(p + 8, <unsigned int>(year % 100))
    p[10] = 45
    _put2(p + 11, <unsigned int>month)
    p[13] = 45
    _put2(p + 14, <unsigned int>day)
    p[16] = 84
    _put2(p + 17, <unsigned int>(rest // 3600))
    p[19] = 58
    _put2(p + 20, <unsigned int>((rest // 60) % 60))
    p[22] = 58
    _put2(p + 23, <unsigned int>(rest % 60))
    p[25] = 46
    p[26] = 48 + <unsigned char>(millis // 100)
    _put2(p + 27, <unsigned int>(millis % 100))
    p[29] = 90
    p[30] = 32


def time_tag(timestamp_ms):
    """The ``server-time`` tag of ``timestamp_ms`` as the lane writes it (for the tests:
    it must equal ``chatcore.irc.outlet.time_tag``)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _TIME_TAG_BYTES)
    _put_time_tag(<unsigned char *>PyBytes_AS_STRING(out), timestamp_ms)
    return out


cdef bytes _irc_line(bint timed, bytes irc_head, const unsigned char *text,
                     Py_ssize_t text_size, long long timestamp_ms):
    """``[@time=... ]:source PRIVMSG target :text\r\n``: what the IRC outlet's text_lines
    makes of one line that fits."""
    cdef Py_ssize_t head_size = PyBytes_GET_SIZE(irc_head)
    cdef Py_ssize_t tag_size = _TIME_TAG_BYTES if timed else 0
    cdef bytes line = PyBytes_FromStringAndSize(NULL, tag_size + head_size + text_size + 2)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(line)
    if timed:
        _put_time_tag(q, timestamp_ms)
    memcpy(q + tag_size, PyBytes_AS_STRING(irc_head), head_size)
    q += tag_size + head_size
    memcpy(q, text, text_size)
    q[text_size] = 13
    q[text_size + 1] = 10
    return line


cdef int _kind_of(object outlet, object native_outlet, object front):
    """Which encoding ``outlet`` writes (_NATIVE, _IRC, _IRC_TIMED), or -1 for another."""
    if outlet is native_outlet:
        return _NATIVE
    if front is not None:
        if outlet is front.outlet:
            return _IRC
        if outlet is front.timed_outlet:
            return _IRC_TIMED
    return -1


cdef list _targets(object room, object native_outlet, object front):
    """``room``'s (kind, outlet, endpoints) in the hub's order, when the lane may deliver to
    it (a room of this node only, not gated, every member attached here); else None."""
    cdef int kind
    if room is None or room.shared or room.modes.gated:
        return None
    targets = []
    for room_outlet, endpoints in (<dict>room.endpoints).items():
        kind = _kind_of(room_outlet, native_outlet, front)
        if kind < 0:
            return None
        targets.append((kind, room_outlet, endpoints))
    return targets or None


cdef bint _has_irc(list targets):
    for target in targets:
        if (<int>(<tuple>target)[0]) != _NATIVE:
            return True
    return False


cdef tuple _irc_skip(object front, object session):
    """The outlet and buffer the IRC outlet leaves the sender out of (no echo-message)."""
    if front is None:
        return None, None
    user = (<dict>front.users).get(session.name.casefold())
    if user is None or user.echo_message:
        return None, None
    return user.outlet, user.outbuf


cdef inline bint _irc_fits(object irc_head, Py_ssize_t text_size,
                           const unsigned char *text, object front):
    """Whether the text is one IRC line after ``irc_head`` and nothing captures output now
    (a labeled command's answer): as the twin's ``_irc_fits``."""
    cdef Py_ssize_t i
    if PyBytes_GET_SIZE(irc_head) + text_size + 2 > _IRC_MAX_LINE_BYTES or front.capturing:
        return False
    for i in range(text_size):
        if text[i] == 10:
            return False
    return True


cdef void _to_room(list targets, object native_outlet, bytes data, object irc_head,
                   const unsigned char *text, Py_ssize_t text_size, long long timestamp_ms,
                   object skip_outlet, object skip_buffer) except *:
    """The message to every encoding of the room, as the hub's outlets deliver it."""
    cdef list pending = native_outlet.pending
    cdef int kind
    cdef bytes untimed = None, timed = None
    for target in targets:
        kind = (<tuple>target)[0]
        endpoints = (<tuple>target)[2]
        if kind == _NATIVE:
            native_outlet.deliveries += len(endpoints)
            pending.extend(fanout(data, endpoints))
            continue
        if kind == _IRC:
            if untimed is None:
                untimed = _irc_line(False, irc_head, text, text_size, timestamp_ms)
            line = untimed
        else:
            if timed is None:
                timed = _irc_line(True, irc_head, text, text_size, timestamp_ms)
            line = timed
        pending.extend(fanout(line, endpoints,
                              skip_buffer if (<tuple>target)[1] is skip_outlet else None))


cdef bytes _irc_source(const char *sender, Py_ssize_t sender_size):
    return b"".join((b":", sender[:sender_size], b"!", sender[:sender_size], b"@",
                     _IRC_USER_HOST))


cdef Py_ssize_t _plain_ping(const unsigned char *buf, Py_ssize_t n) noexcept nogil:
    """Where the token of a ``PING token`` or ``PING :token`` line starts, when the token is
    one word of printable ASCII not starting with ':'; else -1 (``_lane_py._plain_ping``)."""
    cdef Py_ssize_t i, start
    if n < 6 or memcmp(buf, b"PING ", 5) != 0:
        return -1
    start = 6 if buf[5] == 58 else 5           # ':'
    if start >= n or buf[start] == 58:
        return -1
    for i in range(start, n):
        if buf[i] < 33 or buf[i] > 126:
            return -1
    return start


cdef bytes _pong(bytes head, const unsigned char *token, Py_ssize_t token_size):
    cdef Py_ssize_t head_size = PyBytes_GET_SIZE(head)
    cdef bytes line = PyBytes_FromStringAndSize(NULL, head_size + token_size + 2)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(line)
    memcpy(q, PyBytes_AS_STRING(head), head_size)
    memcpy(q + head_size, token, token_size)
    q[head_size + token_size] = 13
    q[head_size + token_size + 1] = 10
    return line


cdef Py_ssize_t _plain_privmsg(const unsigned char *buf, Py_ssize_t n) noexcept nogil:
    """Where the space before the text of a ``PRIVMSG target :text`` line is, when
    ``read_privmsg`` could take the line (its byte rules; UTF-8 is checked after); else -1."""
    cdef Py_ssize_t i, space = -1
    cdef unsigned char c
    if n < 8 or n > _MAX_PLAIN_PRIVMSG_BYTES or memcmp(buf, b"PRIVMSG ", 8) != 0:
        return -1
    if n == 8 or buf[8] == 58:                  # ':'
        return -1
    for i in range(8, n):
        c = buf[i]
        if c < 32 or c == 127 or (c == 0xC2 and i + 1 < n and 0x80 <= buf[i + 1] <= 0x9F):
            return -1
        if space < 0:
            if c == 32:
                space = i
            elif c == 44:                       # ','
                return -1
    if space <= 8 or space + 2 >= n or buf[space + 1] != 58:
        return -1
    return space


def run_irc(conn, long long turn_ends_at, now):
    """``run`` for a registered IRC connection: its plain PRIVMSG lines to a room or a user
    (see ``chatcore._lane_py.run_irc``: same arguments, same result)."""
    global _OPEN
    if _OPEN is None:
        from .connection.closing import State
        _OPEN = State.OPEN
    protocol = conn.protocol
    next_line = protocol.lines.next_line
    hub = conn.hub
    native_outlet = conn.server.outlet
    outbuf = conn.outbuf
    session = conn.session
    buckets = conn._buckets
    front = conn.irc
    stats = conn.stats                          # counted as native messages are (metrics)
    clock = hub._clock
    wallclock = hub._wallclock
    msg_ids = hub._msg_ids
    cdef dict sessions = hub.sessions
    cdef dict rooms = session.rooms
    cdef Py_ssize_t output_limit = conn.config.max_output_bytes
    cdef Py_ssize_t max_text_bytes = hub.limits.max_text_bytes
    cdef Py_ssize_t n, space, text_size, room_size, sender_size, target_size
    cdef unsigned long long msg_id, timestamp_ms
    cdef const unsigned char *p
    cdef const unsigned char *text
    cdef const char *room_name
    cdef const char *sender
    cdef bytes line, data
    cdef list targets = None
    cdef int peer_kind = _NATIVE
    cdef bint same, to_room
    cdef object last_target = None, found = None, irc_head = None, link = None
    cdef Py_ssize_t token_at
    batch_link = getattr(hub.backplane, "batch_link", None)     # shared rooms: see run
    sender_name = session.name          # kept referenced: ``sender`` points into it
    sender = PyUnicode_AsUTF8AndSize(sender_name, &sender_size)
    source = _irc_source(sender, sender_size)
    skip_outlet, skip_buffer = _irc_skip(front, session)
    echo_message = conn.echo_message
    while True:
        try:
            line = next_line()
        except LineTooLong:
            try:
                protocol.next_event()           # the protocol's own error for it
            except ProtocolError as exc:
                return turn_ends_at, exc, 0.0
            raise
        if line is None:
            return turn_ends_at, NEED_DATA, 0.0
        p = <const unsigned char *>PyBytes_AS_STRING(line)
        n = PyBytes_GET_SIZE(line)
        token_at = _plain_ping(p, n)
        if token_at > 0 and not conn._replies and conn._captured is None:
            # registration.ping: PONG with the token, a request's flood cost, no Ack.
            if buckets is not None:
                wait_seconds = buckets[_FLOOD_REQUEST].take(now)
                if wait_seconds:
                    return turn_ends_at, protocol.event_of(line), wait_seconds
            if outbuf.append(_pong(front.pong_prefix, p + token_at, n - token_at)):
                (<list>conn.outlet.pending).append(outbuf)
            if (conn.state is not _OPEN or conn._awaiting
                    or outbuf.pending_bytes > output_limit or hub.work_done >= turn_ends_at):
                return turn_ends_at, None, 0.0
            turn_ends_at -= 1
            continue
        space = _plain_privmsg(p, n)
        if space < 0 or conn._replies:
            return turn_ends_at, protocol.event_of(line), 0.0
        text = p + space + 2
        text_size = n - space - 2
        if text_size > max_text_bytes or not _valid_text(text, text_size):
            return turn_ends_at, protocol.event_of(line), 0.0
        target_size = space - 8
        same = (last_target is not None and PyBytes_GET_SIZE(last_target) == target_size
                and memcmp(PyBytes_AS_STRING(last_target), p + 8, target_size) == 0)
        to_room = p[8] == 35                    # '#'
        if to_room:
            # Hub.send_room (plain_privmsg's), for a member of a room of this node's members,
            # or of a room shared with other nodes (not gated): into its batch, as in run.
            if same:
                room = found
                if link is not None:
                    link = batch_link(room)
                    if link is None:
                        return turn_ends_at, protocol.event_of(line), 0.0
            else:
                key = _ascii_key(p + 9, target_size - 1)
                if key is None:
                    return turn_ends_at, protocol.event_of(line), 0.0
                room = rooms.get(key)
                link = targets = irc_head = None
                if room is not None and room.shared and not room.modes.gated:
                    link = batch_link(room) if batch_link is not None else None
                    if link is None:
                        return turn_ends_at, protocol.event_of(line), 0.0
                else:
                    targets = _targets(room, native_outlet, front)
                    if targets is None:
                        return turn_ends_at, protocol.event_of(line), 0.0
                    if _has_irc(targets):
                        irc_head = b"".join((source, b" PRIVMSG #", room.name.encode(),
                                             b" :"))
                found = room
                last_target = PyBytes_FromStringAndSize(<const char *>p + 8, target_size)
        else:
            # Hub.send_direct (plain_privmsg's), to a user of this node already in a
            # conversation with the sender, not away, the sender without echo-message.
            if same:
                peer = found
            else:
                key = _ascii_key(p + 8, target_size)
                if key is None:
                    return turn_ends_at, protocol.event_of(line), 0.0
                peer = sessions.get(key)
                if (peer is None or peer is session or peer.away or echo_message
                        or peer.key not in session.conversations):
                    return turn_ends_at, protocol.event_of(line), 0.0
                peer_kind = _kind_of(peer.outlet, native_outlet, front)
                if peer_kind < 0:
                    return turn_ends_at, protocol.event_of(line), 0.0
                irc_head = None
                if peer_kind != _NATIVE:
                    irc_head = b"".join((source, b" PRIVMSG ",
                                         peer.endpoint.owner.nick.encode(), b" :"))
                found = peer
                last_target = PyBytes_FromStringAndSize(<const char *>p + 8, target_size)
        if irc_head is not None and not _irc_fits(irc_head, text_size, text, front):
            return turn_ends_at, protocol.event_of(line), 0.0
        if buckets is not None:
            wait_seconds = buckets[_FLOOD_CHAT].take(now)
            if wait_seconds:
                return turn_ends_at, protocol.event_of(line), wait_seconds
        session.last_active = clock()
        msg_id = PyLong_AsUnsignedLongLong(next(msg_ids))
        timestamp_ms = _timestamp_ms(wallclock)
        if to_room and link is not None:
            # Delivered once back (run's shared rooms); an IRC line has no Ack.
            room_name = PyUnicode_AsUTF8AndSize(room.name, &room_size)
            data = _message_frame(_ROOM_MESSAGE, room_name, room_size, sender, sender_size,
                                  msg_id, timestamp_ms, text, text_size)
            hub.backplane.batch_frame(link, data, _shared_send(
                conn, None, room, sender_name, msg_id, timestamp_ms,
                PyBytes_FromStringAndSize(<const char *>text, text_size)))
            stats.room_messages += 1
        elif to_room:
            data = None
            if targets is not None and (len(targets) > 1
                                        or (<int>(<tuple>targets[0])[0]) == _NATIVE):
                room_name = PyUnicode_AsUTF8AndSize(room.name, &room_size)
                data = _message_frame(_ROOM_MESSAGE, room_name, room_size, sender,
                                      sender_size, msg_id, timestamp_ms, text, text_size)
            _to_room(targets, native_outlet, data, irc_head, text, text_size, timestamp_ms,
                     skip_outlet, skip_buffer)
            hub.work_done += len(room.members)
            stats.room_messages += 1
        else:
            if irc_head is None:
                data = _message_frame(_DIRECT_MESSAGE, NULL, 0, sender, sender_size, msg_id,
                                      timestamp_ms, text, text_size)
                native_outlet.deliveries += 1
            else:
                data = _irc_line(peer_kind == _IRC_TIMED, irc_head, text, text_size,
                                 timestamp_ms)
            endpoint = peer.endpoint
            if endpoint.append(data):
                (<list>native_outlet.pending).append(endpoint)
            hub.work_done += 1
            stats.direct_messages += 1
        # The head of Connection._handle_input's loop, for the next line.
        if (conn.state is not _OPEN or conn._awaiting or outbuf.pending_bytes > output_limit
                or hub.work_done >= turn_ends_at):
            return turn_ends_at, None, 0.0
        turn_ends_at -= 1
