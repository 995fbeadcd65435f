# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bulk counting and verification of received frames for the load generator, compiled.

Same names and behaviour as ``benchmarks/_verify_py.py`` (the specification; read its docstring
for the text layout); ``benchmarks.verify`` chooses between the two. A stream's per-sender state
is a small array searched linearly from the slot that matched last, because a receiver hears
from a handful of senders (a room's, or one peer) and they take turns.
"""
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memcpy

cdef enum:
    TEXT_HEADER_BYTES = 32
    LINEAR_BITS = 11
    LINEAR_US = 2048
    SUB_BUCKETS = 1024
    OCTAVES = 25
    HIST_BUCKETS = LINEAR_US + OCTAVES * SUB_BUCKETS
    MAX_FRAME_BYTES = 16 << 20
    ROOM_MESSAGE = 0xA0
    DIRECT_MESSAGE = 0x90
    ACK = 0x82
    USER_JOINED = 0xA1
    PAD = 0x2E
    MAX_LINE_BYTES = 64 * 1024
    IRC_OTHER = 0x00


cdef inline int _bit_length(uint64_t v) noexcept nogil:
    cdef int n = 0
    while v:
        v >>= 1
        n += 1
    return n


cdef inline Py_ssize_t _bucket_of(int64_t us) noexcept nogil:
    cdef int shift
    cdef Py_ssize_t index
    if us < LINEAR_US:
        return us if us > 0 else 0
    shift = _bit_length(<uint64_t>us) - LINEAR_BITS
    index = LINEAR_US + (shift - 1) * SUB_BUCKETS + ((us >> shift) - SUB_BUCKETS)
    return index if index < HIST_BUCKETS else HIST_BUCKETS - 1


def bucket_of(long long us):
    return _bucket_of(us)


cdef inline int _hex(const unsigned char *p, int n, uint64_t *out) noexcept nogil:
    """Parse n lowercase hex digits; 0 on success, -1 on any other byte."""
    cdef uint64_t v = 0
    cdef unsigned char c
    cdef int i
    for i in range(n):
        c = p[i]
        if 48 <= c <= 57:
            v = (v << 4) | (c - 48)
        elif 97 <= c <= 102:
            v = (v << 4) | (c - 87)
        else:
            return -1
    out[0] = v
    return 0


cdef class Tally:
    cdef public Py_ssize_t text_bytes
    cdef uint64_t counts_[256]
    cdef public unsigned long long messages, duplicates, reordered, gaps, malformed
    cdef uint64_t *hist_

    def __cinit__(self, Py_ssize_t text_bytes):
        self.hist_ = <uint64_t *>malloc(HIST_BUCKETS * sizeof(uint64_t))
        if self.hist_ == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(HIST_BUCKETS):
            self.hist_[i] = 0
        for i in range(256):
            self.counts_[i] = 0
        self.text_bytes = text_bytes if text_bytes > TEXT_HEADER_BYTES else TEXT_HEADER_BYTES
        self.messages = self.duplicates = self.reordered = self.gaps = self.malformed = 0

    def __dealloc__(self):
        free(self.hist_)

    @property
    def counts(self):
        return [self.counts_[i] for i in range(256)]

    @property
    def hist(self):
        return [self.hist_[i] for i in range(HIST_BUCKETS)]

    def snapshot(self):
        cdef Py_ssize_t i
        return {
            "counts": {i: self.counts_[i] for i in range(256) if self.counts_[i]},
            "messages": self.messages, "duplicates": self.duplicates,
            "reordered": self.reordered, "gaps": self.gaps, "malformed": self.malformed,
            "hist": {i: self.hist_[i] for i in range(HIST_BUCKETS) if self.hist_[i]},
        }


cdef class Stream:
    cdef public Tally tally
    cdef public Py_ssize_t acks
    cdef bytearray _tail
    cdef uint64_t *_ids
    cdef int64_t *_lasts
    cdef Py_ssize_t _n, _cap, _hint

    def __cinit__(self, Tally tally):
        self.tally = tally
        self.acks = 0
        self._tail = bytearray()
        self._ids = NULL
        self._lasts = NULL
        self._n = self._cap = self._hint = 0

    def __dealloc__(self):
        free(self._ids)
        free(self._lasts)

    @property
    def buffered_bytes(self):
        return len(self._tail)

    def feed(self, data, long long now_us):
        cdef list others = []
        cdef Py_ssize_t used
        if len(self._tail):
            self._tail += data
            used = self._scan_object(self._tail, now_us, others)
            del self._tail[:used]
        else:
            used = self._scan_object(data, now_us, others)
            if used < len(data):
                self._tail += data[used:]
        return others

    cdef Py_ssize_t _scan_object(self, data, int64_t now_us, list others) except -1:
        cdef const unsigned char[::1] view = data
        if view.shape[0] == 0:
            return 0
        return self._scan(&view[0], view.shape[0], now_us, others)

    cdef Py_ssize_t _scan(self, const unsigned char *buf, Py_ssize_t end, int64_t now_us,
                          list others) except -1:
        cdef Py_ssize_t pos = 0, start, stop
        cdef uint32_t length, request_id
        cdef unsigned char msg_type
        cdef Tally tally = self.tally
        while end - pos >= 4:
            length = ((<uint32_t>buf[pos] << 24) | (<uint32_t>buf[pos + 1] << 16) |
                      (<uint32_t>buf[pos + 2] << 8) | buf[pos + 3])
            if length < 5 or length > MAX_FRAME_BYTES:
                raise ValueError(f"bad frame length {length}")
            if end - pos < 4 + <Py_ssize_t>length:
                break
            msg_type = buf[pos + 4]
            start = pos + 9
            stop = pos + 4 + length
            tally.counts_[msg_type] += 1
            if msg_type == ROOM_MESSAGE or msg_type == DIRECT_MESSAGE:
                self._message(buf, start, stop, msg_type == ROOM_MESSAGE, now_us)
            elif msg_type == ACK:
                self.acks += 1
            elif msg_type != USER_JOINED:
                request_id = ((<uint32_t>buf[pos + 5] << 24) | (<uint32_t>buf[pos + 6] << 16) |
                              (<uint32_t>buf[pos + 7] << 8) | buf[pos + 8])
                others.append((msg_type, request_id, buf[start:stop]))
            pos = stop
        return pos

    cdef int _message(self, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t stop,
                      bint room, int64_t now_us) except -1:
        cdef Tally tally = self.tally
        cdef int i
        for i in range(2 if room else 1):
            if pos + 2 > stop:
                tally.malformed += 1
                return 0
            pos += 2 + ((<Py_ssize_t>buf[pos] << 8) | buf[pos + 1])
        pos += 16
        return self._text(buf, pos, stop, now_us)

    cdef int _text(self, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t stop,
                   int64_t now_us) except -1:
        cdef Tally tally = self.tally
        cdef uint64_t sender, seq, sent_us
        cdef int64_t last
        cdef Py_ssize_t k, slot
        if stop - pos != tally.text_bytes:
            tally.malformed += 1
            return 0
        if (_hex(buf + pos, 8, &sender) < 0 or _hex(buf + pos + 8, 8, &seq) < 0 or
                _hex(buf + pos + 16, 16, &sent_us) < 0):
            tally.malformed += 1
            return 0
        for k in range(pos + TEXT_HEADER_BYTES, stop):
            if buf[k] != PAD:
                tally.malformed += 1
                return 0
        slot = self._find(sender)
        last = self._lasts[slot]
        if <int64_t>seq > last:
            tally.gaps += <uint64_t>(<int64_t>seq - last - 1)
            self._lasts[slot] = seq
            tally.messages += 1
            tally.hist_[_bucket_of(now_us - <int64_t>sent_us)] += 1
        elif <int64_t>seq == last:
            tally.duplicates += 1
        else:
            tally.reordered += 1
        return 0

    cdef Py_ssize_t _find(self, uint64_t sender) except -1:
        """The slot of ``sender``, added with last = -1 when new."""
        cdef Py_ssize_t k, n = self._n, h = self._hint
        for k in range(n):
            if self._ids[h] == sender:
                self._hint = h + 1 if h + 1 < n else 0
                return h
            h += 1
            if h == n:
                h = 0
        if n == self._cap:
            self._cap = self._cap * 2 if self._cap else 8
            self._ids = <uint64_t *>realloc(self._ids, self._cap * sizeof(uint64_t))
            self._lasts = <int64_t *>realloc(self._lasts, self._cap * sizeof(int64_t))
            if self._ids == NULL or self._lasts == NULL:
                raise MemoryError()
        self._ids[n] = sender
        self._lasts[n] = -1
        self._n = n + 1
        return n


cdef inline Py_ssize_t _find_byte(const unsigned char *buf, Py_ssize_t start, Py_ssize_t end,
                                  unsigned char byte) noexcept nogil:
    cdef const void *hit
    if end <= start:
        return -1
    hit = memchr(buf + start, byte, end - start)
    return -1 if hit == NULL else <Py_ssize_t>(<const unsigned char *>hit - buf)


cdef class IrcStream(Stream):
    """IRC lines, as ``benchmarks._verify_py.IrcStream`` (the specification) reads them."""
    cdef int64_t _acked_to

    def __cinit__(self, Tally tally):
        self._acked_to = 0

    def feed(self, data, long long now_us):
        cdef list others = []
        cdef Py_ssize_t used
        if len(self._tail):
            self._tail += data
            used = self._scan_object(self._tail, now_us, others)
            del self._tail[:used]
        else:
            used = self._scan_object(data, now_us, others)
            if used < len(data):
                self._tail += data[used:]
        if len(self._tail) > MAX_LINE_BYTES:
            raise ValueError(f"a line of more than {MAX_LINE_BYTES} bytes")
        return others

    cdef Py_ssize_t _scan(self, const unsigned char *buf, Py_ssize_t end, int64_t now_us,
                          list others) except -1:
        cdef Py_ssize_t pos = 0, nl, stop, start
        cdef int kind
        cdef Tally tally = self.tally
        while True:
            nl = _find_byte(buf, pos, end, 10)
            if nl < 0:
                break
            stop = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            start = pos
            pos = nl + 1
            kind = self._line(buf, start, stop, now_us)
            tally.counts_[kind] += 1
            if kind == IRC_OTHER:
                others.append(buf[start:stop])
        return pos

    cdef int _line(self, const unsigned char *buf, Py_ssize_t start, Py_ssize_t end,
                   int64_t now_us) except -1:
        cdef Py_ssize_t sp1, sp2, k, last
        cdef int64_t acked
        if end <= start or buf[start] != 58:                       # ":"
            return IRC_OTHER
        sp1 = _find_byte(buf, start, end, 32)
        if sp1 < 0:
            return IRC_OTHER
        sp2 = _find_byte(buf, sp1 + 1, end, 32)
        if sp2 < 0:
            return IRC_OTHER
        if sp2 - sp1 - 1 == 7 and memcmp(buf + sp1 + 1, b"PRIVMSG", 7) == 0:
            k = sp2
            while True:                                          # the first " :" after sp2
                k = _find_byte(buf, k, end, 32)
                if k < 0 or k + 1 >= end:
                    return IRC_OTHER
                if buf[k + 1] == 58:
                    break
                k += 1
            self._text(buf, k + 2, end, now_us)
            if sp2 + 1 < end and buf[sp2 + 1] == 35:             # "#"
                return ROOM_MESSAGE
            return DIRECT_MESSAGE
        if sp2 - sp1 - 1 == 4 and memcmp(buf + sp1 + 1, b"PONG", 4) == 0:
            last = end - 1
            while last >= sp2 and buf[last] != 32:
                last -= 1
            k = last + 1
            if k < end and buf[k] == 58:
                k += 1
            if k < end and end - k <= 18:
                acked = 0
                while k < end and 48 <= buf[k] <= 57:
                    acked = acked * 10 + (buf[k] - 48)
                    k += 1
                if k == end and acked > self._acked_to:
                    self.acks += acked - self._acked_to
                    self._acked_to = acked
            return ACK
        return IRC_OTHER
