# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The load generator's receive side, compiled: one call per epoll batch reads every ready
socket into one preallocated buffer, splits frames and checks stamps with no Python object per
frame.

Same names and behaviour as ``benchmarks/_verify_py.py`` (the specification; read its docstring
for the text layout and for ``Receiver``); ``benchmarks.verify`` chooses between the two. A
stream's per-sender state is a small array searched linearly from the slot after the one that
matched last, because a receiver hears from a handful of senders (a room's, or one peer) and
they take turns.
"""
cimport cython
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memcpy, memmove, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import os

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)

cdef extern from *:
    """
    #include <errno.h>
    #include <sys/epoll.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    /* epoll_wait with a timeout in microseconds (epoll_pwait2, Linux 5.11), else in whole
       milliseconds rounded up: a paced sender must wake on time, not up to 1 ms late. */
    static int loadgen_epoll_wait_us(int epfd, struct epoll_event *events, int maxevents,
                                     long long timeout_us) {
    #ifdef SYS_epoll_pwait2
        static int missing = 0;
        if (timeout_us >= 0 && !missing) {
            struct timespec ts = {timeout_us / 1000000, (timeout_us % 1000000) * 1000};
            int n = (int)syscall(SYS_epoll_pwait2, epfd, events, maxevents, &ts, NULL, 0);
            if (n >= 0 || errno != ENOSYS)
                return n;
            missing = 1;
        }
    #endif
        return epoll_wait(epfd, events, maxevents,
                          timeout_us < 0 ? -1 : (int)((timeout_us + 999) / 1000));
    }
    """
    int loadgen_epoll_wait_us(int epfd, epoll_event *events, int maxevents,
                              long long timeout_us) nogil

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* The value of the eight lowercase hex digits at p; ORs nonzero bits into *bad if any of
       the bytes is not one. Eight bytes at once (SWAR): all below 0x80 (so no sum below carries
       into the next byte), each in '0'-'9' or 'a'-'f', then each byte's nibble packed in order. */
    static inline uint32_t loadgen_hex8(const unsigned char *p, uint64_t *bad) {
        const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
        uint64_t w, digit, alpha, x;
        memcpy(&w, p, 8);
    #if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        w = __builtin_bswap64(w);
    #endif
        digit = (w + 0x50 * ones) & ~(w + 0x46 * ones);   /* 0x30 <= byte <= 0x39 */
        alpha = (w + 0x1F * ones) & ~(w + 0x19 * ones);   /* 0x61 <= byte <= 0x66 */
        *bad |= (w & high) | (~(digit | alpha) & high);
        x = (w & 0x0F * ones) + 9 * ((w >> 6) & ones);    /* each byte: its digit's value */
        x = __builtin_bswap64(x);                         /* the first digit on top */
        x = (x | (x >> 4)) & 0x00FF00FF00FF00FFULL;
        x = (x | (x >> 8)) & 0x0000FFFF0000FFFFULL;
        return (uint32_t)(x | (x >> 16));
    }
    /* Whether the n bytes at p are all the pad byte '.', sixteen at a time (GCC/Clang vector
       extensions: SSE2 on x86-64); the last sixteen may overlap the ones before. */
    typedef unsigned char loadgen_v16 __attribute__((vector_size(16)));
    static inline int loadgen_is_pad(const unsigned char *p, Py_ssize_t n) {
        const uint64_t dots = 0x2E2E2E2E2E2E2E2EULL;
        uint64_t a, b;
        Py_ssize_t i;
        if (n >= 16) {
            loadgen_v16 v, acc = {0}, pad;
            memset(&pad, 0x2E, 16);
            for (i = 0; i + 16 <= n; i += 16) {
                memcpy(&v, p + i, 16);
                acc |= v ^ pad;
            }
            memcpy(&v, p + n - 16, 16);
            acc |= v ^ pad;
            memcpy(&a, &acc, 8);
            memcpy(&b, (const unsigned char *)&acc + 8, 8);
            return (a | b) == 0;
        }
        if (n >= 8) {
            memcpy(&a, p, 8);
            memcpy(&b, p + n - 8, 8);
            return ((a ^ dots) | (b ^ dots)) == 0;
        }
        for (a = 0, i = 0; i < n; i++)
            a |= p[i] ^ 0x2E;
        return a == 0;
    }
    #define LOADGEN_MAX_SEQ 0xFFFFFFFFLL       /* eight hex digits */
    /* The eight bytes at p as they lie in memory: a key that stands for the hex digits. */
    static inline uint64_t loadgen_raw8(const unsigned char *p) {
        uint64_t w;
        memcpy(&w, p, 8);
        return w;
    }
    /* The raw eight lowercase hex digits of v. */
    static inline uint64_t loadgen_hex8_raw(uint32_t v) {
        unsigned char s[8];
        int i;
        for (i = 7; i >= 0; i--) {
            s[i] = "0123456789abcdef"[v & 15];
            v >>= 4;
        }
        return loadgen_raw8(s);
    }
    /* The raw digits of value + 1, given raw, the (valid) raw digits of value < 0xFFFFFFFF:
       mostly the last digit moves on by one, which on a little-endian machine is the top byte. */
    static inline uint64_t loadgen_hex8_next(uint64_t raw, uint32_t value) {
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t last = raw >> 56;
        if (last != '9' && last != 'f')
            return raw + (1ULL << 56);
        if (last == '9')
            return raw + ((uint64_t)('a' - '9') << 56);
    #endif
        return loadgen_hex8_raw(value + 1);
    }
    """
    int loadgen_is_pad(const unsigned char *p, Py_ssize_t n) nogil
    uint64_t loadgen_raw8(const unsigned char *p) nogil
    int64_t MAX_SEQ "LOADGEN_MAX_SEQ"
    uint64_t loadgen_hex8_raw(uint32_t v) nogil
    uint64_t loadgen_hex8_next(uint64_t raw, uint32_t value) nogil
    uint32_t loadgen_hex8(const unsigned char *p, uint64_t *bad) nogil
    int __builtin_clzll(unsigned long long) nogil
    void __builtin_prefetch(const void *p) nogil

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
    MAX_EVENTS = 1024                  # epoll events taken per poll, as select.epoll's default
    READ_BITS = EPOLLIN | EPOLLHUP | EPOLLERR
    SMALL_TAIL_BYTES = 4096            # a kept tail buffer larger than this is given back
    PREFETCH_BYTES = 1024              # how far ahead of the frame being checked the scan asks
                                       # for the bytes: a large recv leaves them out of the cache

RECV_BYTES = 256 * 1024
READ_BUDGET_BYTES = 256 * 1024

cdef inline int64_t _now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef inline Py_ssize_t _bucket_of(int64_t us) noexcept nogil:
    cdef int shift
    cdef Py_ssize_t index
    if us < LINEAR_US:
        return us if us > 0 else 0
    shift = (64 - __builtin_clzll(<unsigned long long>us)) - LINEAR_BITS
    index = LINEAR_US + (shift - 1) * SUB_BUCKETS + ((us >> shift) - SUB_BUCKETS)
    return index if index < HIST_BUCKETS else HIST_BUCKETS - 1


def bucket_of(long long us):
    return _bucket_of(us)


cdef class Tally:
    cdef public Py_ssize_t text_bytes
    cdef uint64_t counts_[256]
    cdef public unsigned long long messages, duplicates, reordered, gaps, malformed
    cdef uint64_t *hist_

    def __cinit__(self, Py_ssize_t text_bytes):
        self.text_bytes = text_bytes if text_bytes > TEXT_HEADER_BYTES else TEXT_HEADER_BYTES
        self.hist_ = <uint64_t *>malloc(HIST_BUCKETS * sizeof(uint64_t))
        if self.hist_ == NULL:
            raise MemoryError()
        memset(self.hist_, 0, HIST_BUCKETS * sizeof(uint64_t))
        memset(self.counts_, 0, sizeof(self.counts_))
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


cdef struct Sender:
    # What a stream knows of one sender. Every raw key (eight digits as they lie in memory) is
    # valid lowercase hex and stands for the value beside it, so an incoming field equal to one
    # is both checked and parsed: only a field that differs is parsed digit by digit.
    uint64_t id_raw
    int64_t last                        # the last sequence number seen (-1: none yet)
    uint64_t next_raw                   # the digits of next_seq: the one expected after last
    int64_t next_seq
    uint64_t sent_raw_high, sent_raw_low    # the digits of the last send time seen, and it
    uint64_t sent_us


cdef inline int _check_text(Stream st, Tally tally, const unsigned char *buf, Py_ssize_t pos,
                            Py_ssize_t stop, int64_t now_us) except -1:
    """Check the stamped text ``buf[pos:stop]``: order, loss, duplicates, latency."""
    cdef const unsigned char *p = buf + pos
    cdef uint64_t id_raw, seq_raw, high_raw, low_raw, sent_us
    cdef uint64_t bad = 0
    cdef int64_t seq, last
    cdef Py_ssize_t h = st._hint
    cdef Sender *sender = NULL
    cdef bint fresh_time = True
    if stop - pos != tally.text_bytes:
        tally.malformed += 1
        return 0
    id_raw = loadgen_raw8(p)
    seq_raw = loadgen_raw8(p + 8)
    high_raw = loadgen_raw8(p + 16)
    low_raw = loadgen_raw8(p + 24)
    if h < st._n and st._senders[h].id_raw == id_raw:      # the usual case: senders take turns
        sender = &st._senders[h]
    else:
        h = st._find(id_raw)
        if h >= 0:
            sender = &st._senders[h]
        else:
            loadgen_hex8(p, &bad)                           # a new sender: check its id
    if sender != NULL and seq_raw == sender.next_raw:
        seq = sender.next_seq
    else:
        seq = loadgen_hex8(p + 8, &bad)
    if sender != NULL and high_raw == sender.sent_raw_high and low_raw == sender.sent_raw_low:
        sent_us = sender.sent_us                            # a burst shares its send time
        fresh_time = False
    else:
        sent_us = (<uint64_t>loadgen_hex8(p + 16, &bad) << 32) | loadgen_hex8(p + 24, &bad)
    if bad or not loadgen_is_pad(p + TEXT_HEADER_BYTES, stop - pos - TEXT_HEADER_BYTES):
        tally.malformed += 1
        return 0
    if sender == NULL:
        h = st._add(id_raw)
        sender = &st._senders[h]
    st._hint = h + 1 if h + 1 < st._n else 0
    if fresh_time:
        sender.sent_raw_high, sender.sent_raw_low, sender.sent_us = high_raw, low_raw, sent_us
    last = sender.last
    if seq > last:
        tally.gaps += <uint64_t>(seq - last - 1)
        sender.last = seq
        if seq < MAX_SEQ:
            sender.next_raw = loadgen_hex8_next(seq_raw, <uint32_t>seq)
            sender.next_seq = seq + 1
        tally.messages += 1
        tally.hist_[_bucket_of(now_us - <int64_t>sent_us)] += 1
    elif seq == last:
        tally.duplicates += 1
    else:
        tally.reordered += 1
    return 0


cdef class Stream:
    cdef public Tally tally
    cdef public Py_ssize_t acks
    cdef unsigned char *_tail           # an incomplete frame (line) carried to the next feed
    cdef Py_ssize_t _tail_len, _tail_cap, _max_tail
    cdef Sender *_senders
    cdef Py_ssize_t _n, _cap, _hint     # senders known, room for, and the one expected next

    def __cinit__(self, Tally tally):
        self.tally = tally
        self.acks = 0
        self._tail = NULL
        self._tail_len = self._tail_cap = 0
        self._max_tail = 4 + MAX_FRAME_BYTES     # never reached: a longer length is refused
        self._senders = NULL
        self._n = self._cap = self._hint = 0

    def __dealloc__(self):
        free(self._tail)
        free(self._senders)

    @property
    def buffered_bytes(self):
        return self._tail_len

    def feed(self, data, long long now_us):
        cdef const unsigned char[::1] view = data
        cdef list others = []
        if view.shape[0]:
            self._feed(&view[0], view.shape[0], now_us, others)
        return others

    cdef int _feed(self, const unsigned char *data, Py_ssize_t n, int64_t now_us,
                   list others) except -1:
        cdef Py_ssize_t used
        if self._tail_len == 0:
            used = self._scan(data, n, now_us, others)
            return self._keep(data + used, n - used)
        self._reserve(self._tail_len + n)
        memcpy(self._tail + self._tail_len, data, n)
        self._tail_len += n
        used = self._scan(self._tail, self._tail_len, now_us, others)
        return self._keep(self._tail + used, self._tail_len - used)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char *grown
        if n <= self._tail_cap:
            return 0
        cap = max(n, 2 * self._tail_cap, 256)
        grown = <unsigned char *>realloc(self._tail, cap)
        if grown == NULL:
            raise MemoryError()
        self._tail, self._tail_cap = grown, cap
        return 0

    @cython.final
    cdef int _keep(self, const unsigned char *rest, Py_ssize_t n) except -1:
        """Keep ``rest`` (which may lie inside the tail buffer itself) as the new tail."""
        if n > self._max_tail:
            raise ValueError(f"a line of more than {self._max_tail} bytes")
        if n > self._tail_cap:
            self._reserve(n)
        if n:
            memmove(self._tail, rest, n)
        self._tail_len = n
        if self._tail_cap > SMALL_TAIL_BYTES and n <= SMALL_TAIL_BYTES:
            self._tail = <unsigned char *>realloc(self._tail, SMALL_TAIL_BYTES)
            self._tail_cap = SMALL_TAIL_BYTES
        return 0

    cdef Py_ssize_t _scan(self, const unsigned char *buf, Py_ssize_t end, int64_t now_us,
                          list others) except -1:
        cdef Py_ssize_t pos = 0, start, stop, p
        cdef uint32_t length, request_id
        cdef unsigned char msg_type
        cdef Tally tally = self.tally
        cdef int i
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
            if stop + PREFETCH_BYTES + 128 < end:     # every line of the frame that far on
                __builtin_prefetch(buf + stop + PREFETCH_BYTES)
                __builtin_prefetch(buf + stop + PREFETCH_BYTES + 64)
                __builtin_prefetch(buf + stop + PREFETCH_BYTES + 128)
            tally.counts_[msg_type] += 1
            if msg_type == ROOM_MESSAGE or msg_type == DIRECT_MESSAGE:
                p = start
                for i in range(2 if msg_type == ROOM_MESSAGE else 1):   # room, sender / sender
                    if p + 2 > stop:
                        tally.malformed += 1
                        break
                    p += 2 + ((<Py_ssize_t>buf[p] << 8) | buf[p + 1])
                else:
                    _check_text(self, tally, buf, p + 16, stop, now_us)  # after msg_id, time
            elif msg_type == ACK:
                self.acks += 1
            elif msg_type != USER_JOINED:
                request_id = ((<uint32_t>buf[pos + 5] << 24) | (<uint32_t>buf[pos + 6] << 16) |
                              (<uint32_t>buf[pos + 7] << 8) | buf[pos + 8])
                others.append((msg_type, request_id, buf[start:stop]))
            pos = stop
        return pos

    @cython.final
    cdef Py_ssize_t _find(self, uint64_t id_raw) noexcept:
        """The index of the sender whose id's digits are ``id_raw``, or -1. The search starts
        at the one expected next: senders take turns."""
        cdef Py_ssize_t k, n = self._n, h = self._hint
        for k in range(n):
            if h >= n:
                h = 0
            if self._senders[h].id_raw == id_raw:
                return h
            h += 1
        return -1

    @cython.final
    cdef Py_ssize_t _add(self, uint64_t id_raw) except -1:
        """A new sender (``id_raw`` checked), nothing seen from it yet: its index."""
        cdef Py_ssize_t n = self._n, cap
        cdef Sender *grown
        cdef Sender *sender
        if n == self._cap:
            cap = self._cap * 2 if self._cap else 8
            grown = <Sender *>realloc(self._senders, cap * sizeof(Sender))
            if grown == NULL:
                raise MemoryError()
            self._senders, self._cap = grown, cap
        sender = &self._senders[n]
        sender.id_raw = id_raw
        sender.last = -1
        sender.next_seq = 0
        sender.next_raw = loadgen_hex8_raw(0)
        sender.sent_raw_high = sender.sent_raw_low = loadgen_hex8_raw(0)
        sender.sent_us = 0
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
        self._max_tail = MAX_LINE_BYTES

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
            _check_text(self, self.tally, buf, k + 2, end, now_us)
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


cdef class Receiver:
    """Reads every ready registered socket of one epoll set, as ``_verify_py.Receiver`` does."""
    cdef object _ep                     # the select.epoll whose set is waited on (kept alive)
    cdef int _epfd
    cdef unsigned char *_buf
    cdef Py_ssize_t _cap
    cdef list _by_fd                    # fd -> Stream or None
    cdef list _scratch                  # frames of the socket being read; handed out if any
    cdef epoll_event *_events
    cdef Py_ssize_t _budget             # bytes read from one socket per poll, at most (about)
    cdef public long long last_rx_us

    def __cinit__(self, ep, Py_ssize_t buffer_bytes=RECV_BYTES,
                  Py_ssize_t budget_bytes=READ_BUDGET_BYTES):
        self._ep = ep
        self._epfd = ep.fileno()
        self._cap = max(buffer_bytes, 64)
        self._budget = max(budget_bytes, 1)
        self._buf = <unsigned char *>malloc(self._cap)
        self._events = <epoll_event *>malloc(MAX_EVENTS * sizeof(epoll_event))
        if self._buf == NULL or self._events == NULL:
            raise MemoryError()
        self._by_fd = []
        self._scratch = []
        self.last_rx_us = 0

    def __dealloc__(self):
        free(self._buf)
        free(self._events)

    def add(self, int fd, Stream stream not None):
        if fd < 0:
            raise ValueError(f"bad file descriptor {fd}")
        while len(self._by_fd) <= fd:
            self._by_fd.append(None)
        self._by_fd[fd] = stream

    def remove(self, int fd):
        if 0 <= fd < len(self._by_fd):
            self._by_fd[fd] = None

    def poll(self, timeout=None):
        cdef int n, i, fd
        cdef long long us
        cdef double wait_us
        cdef uint32_t mask
        cdef list out = []
        cdef object stream
        if timeout is None or timeout < 0:
            us = -1
        else:                                # to the microsecond (see loadgen_epoll_wait_us)
            wait_us = min(<double>timeout * 1e6, 2e12)
            us = <long long>wait_us
            if us < wait_us:
                us += 1
        with nogil:
            n = loadgen_epoll_wait_us(self._epfd, self._events, MAX_EVENTS, us)
        if n < 0:
            if errno == EINTR:
                PyErr_CheckSignals()
                return out
            raise OSError(errno, os.strerror(errno))
        for i in range(n):
            fd = self._events[i].data.fd
            mask = self._events[i].events
            stream = self._by_fd[fd] if fd < len(self._by_fd) else None
            if stream is None or not mask & READ_BITS:
                out.append((fd, mask, None, None, 0))
            else:
                self._receive(fd, mask, <Stream>stream, out)
        return out

    cdef int _receive(self, int fd, uint32_t mask, Stream st, list out) except -1:
        """Read ``fd`` until a read comes back short of its room (the socket is drained) or
        ``budget_bytes`` were read, scanning every read's bytes while they are in the cache."""
        cdef Py_ssize_t n, held, used, room, total = 0
        cdef bint in_front
        cdef int err
        cdef int64_t now_us = 0
        cdef object problem = None
        cdef list frames = self._scratch
        while True:
            held = st._tail_len
            in_front = held <= self._cap // 2
            if in_front:                 # the tail goes first, then the socket's bytes
                if held:
                    memcpy(self._buf, st._tail, held)
                room = self._cap - held
                n = recv(fd, self._buf + held, room, 0)
            else:                        # a large frame under way: append to its tail
                room = self._cap
                n = recv(fd, self._buf, room, 0)
            err = errno
            if n > 0:
                now_us = _now_us()
                self.last_rx_us = now_us
                try:
                    if in_front:
                        st._tail_len = 0
                        used = st._scan(self._buf, held + n, now_us, frames)
                        st._keep(self._buf + used, held + n - used)
                    else:
                        st._feed(self._buf, n, now_us, frames)
                except ValueError as exc:
                    problem = exc
                    del frames[:]
                    break
                total += n
                if n < room or total >= self._budget:
                    break
            else:
                if n == 0:
                    problem = EOFError()
                elif err != EAGAIN and err != EINTR:       # EWOULDBLOCK is EAGAIN on Linux
                    problem = OSError(err, os.strerror(err))
                break
        mask &= ~(<uint32_t>READ_BITS)
        if frames or problem is not None or st.acks or mask:
            if frames:
                self._scratch = []
            if not now_us:
                now_us = _now_us()
            out.append((fd, mask, frames, problem, now_us))
        return 0


# -- the send side ----------------------------------------------------------------------------

cdef const char *_HEX = b"0123456789abcdef"


cdef inline void _put_hex(char *p, uint64_t v, int digits) noexcept nogil:
    cdef int i
    for i in range(digits - 1, -1, -1):
        p[i] = _HEX[v & 15]
        v >>= 4


def encode_sends(int msg_type, bytes prefix, unsigned long long sender, long long seq,
                 Py_ssize_t count, long long now_us, Py_ssize_t size):
    """``count`` frames of ``msg_type`` with ``prefix``, as ``_verify_py.encode_sends`` makes
    them: the first written whole, the others copied from it with their request id and
    sequence number replaced."""
    cdef Py_ssize_t text = size if size > TEXT_HEADER_BYTES else TEXT_HEADER_BYTES
    cdef Py_ssize_t plen = len(prefix)
    cdef Py_ssize_t length = 5 + plen + text, frame = 4 + length, k
    cdef bytes out
    cdef char *p
    cdef char *q
    cdef uint32_t rid
    if count <= 0:
        return b""
    out = PyBytes_FromStringAndSize(NULL, frame * count)
    p = PyBytes_AS_STRING(out)
    p[0], p[1], p[2], p[3] = (length >> 24) & 255, (length >> 16) & 255, (length >> 8) & 255, \
        length & 255
    p[4] = msg_type
    memcpy(p + 9, PyBytes_AS_STRING(prefix), plen)
    q = p + 9 + plen                               # the text
    _put_hex(q, sender & 0xFFFFFFFF, 8)
    _put_hex(q + 16, <uint64_t>now_us, 16)
    memset(q + TEXT_HEADER_BYTES, PAD, text - TEXT_HEADER_BYTES)
    for k in range(count):
        q = p + k * frame
        if k:
            memcpy(q, p, frame)
        rid = <uint32_t>((seq + k + 1) & 0xFFFFFFFF)
        q[5], q[6], q[7], q[8] = (rid >> 24) & 255, (rid >> 16) & 255, (rid >> 8) & 255, \
            rid & 255
        _put_hex(q + 9 + plen + 8, <uint64_t>((seq + k) & 0xFFFFFFFF), 8)
    return out
