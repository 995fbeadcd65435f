# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of ``chatcore._codec_py``: same names, same behaviour, less time.

``chatcore._codec_py`` is the specification; ``tests/test_codec_differential.py`` holds this
module to it. Only what a profile of the server showed to be hot is here: scanning and slicing
frames, output-buffer accounting with ``writev`` straight from the queued ``bytes``, and the
fan-out loop. UTF-8 and everything else stays in Python. Errors are raised as the Python twin
raises them: ``FrameError`` with the same code and message, the same ``OSError`` subclass
(``PyErr_SetFromErrno``, as ``os.writev`` does), and rare argument shapes take a slow path
that runs the twin's own Python expression.
"""
import re
import struct

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.number cimport PyNumber_Index
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.unicode cimport (PyUnicode_1BYTE_KIND, PyUnicode_DATA, PyUnicode_GET_LENGTH,
                              PyUnicode_KIND, PyUnicode_READ)
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy, memmove
from posix.uio cimport iovec

from .errors import ErrorCode, FrameError

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from *:
    """
    /* OSError subclass for err, exactly as os.writev raises it. Always returns NULL. */
    static PyObject *chatcore_oserror_from(int err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    """
    object chatcore_oserror_from(int err)

cdef extern from *:
    """
    #include <sys/socket.h>
    #include <sys/uio.h>
    /* The iovecs to fd: sendmsg for a socket, writev for anything else (a pipe: ENOTSOCK).
       sendmsg skips the VFS's part of writev (the file-position lock, the write hooks:
       fdget_pos and vfs_writev were ~3 % of the server's samples under rooms; see
       docs/hotpath.md, "The write path"). MSG_NOSIGNAL: a closed peer is EPIPE, never a
       signal (Python ignores SIGPIPE anyway, so os.writev's twin behaves the same). */
    static Py_ssize_t chatcore_write_iov(int fd, struct iovec *iov, int count) {
        struct msghdr msg;
        Py_ssize_t n;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = count;
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = writev(fd, iov, count);
        return n;
    }
    """
    Py_ssize_t chatcore_write_iov(int fd, iovec *iov, int count)

cdef enum:
    _HEADER_BYTES = 9                 # length u32 | type u8 | request_id u32
    _MIN_FRAME_LENGTH = 5             # type + request_id: a frame with no payload
    _IOV_MAX = 1024                   # Linux refuses writev with more buffers (UIO_MAXIOV)
    _MIN_CAPACITY_BYTES = 1024        # smallest receive-buffer allocation
    _SHRINK_FACTOR = 4                # a waiting buffer past this many times what it holds
                                      # is cut down to it (docs/hotpath.md, "Memory")
    _MIN_CHUNK_SLOTS = 8              # first allocation of an OutputBuffer's chunk array
    _COALESCE_MAX_CHUNK_BYTES = 4096  # queued chunks up to this size are copied together
    _SCRATCH_BYTES = 262144           # room for copying small chunks together, per write
    _SCRATCH_HELD_CHUNKS = 4096       # chunks the scratch remembers holding (docs/hotpath.md)

# Small chunks are copied together here before writev: the kernel copies one long iovec
# faster than hundreds of 150-byte ones (fanout: 92.8 -> 85.3 ns of server CPU per delivery,
# medians of 3 alternating runs). Used only with the GIL held, by one write at a time.
cdef char _scratch[_SCRATCH_BYTES]

# What _scratch holds from the last write, in order: the first _held_count chunks copied there
# (each an owned reference, so that an equal pointer is the same immutable object, never a new
# one at a freed one's address) and the offset the first copy started at. The members of a room
# are written one after another and queue the same chunks, so the next write finds most of its
# bytes already in place and copies only from the first chunk that differs: on fanout the copy
# was ~40 % of the server's time (docs/hotpath.md, "The write path").
cdef PyObject *_held_chunks[_SCRATCH_HELD_CHUNKS]
cdef Py_ssize_t _held_skip = 0
cdef Py_ssize_t _held_count = 0


cdef inline void _forget_held(Py_ssize_t keep) noexcept:
    """Let go of the scratch record past its first ``keep`` chunks."""
    global _held_count
    while _held_count > keep:
        _held_count -= 1
        Py_DECREF(<object>_held_chunks[_held_count])


HEADER_BYTES = _HEADER_BYTES
COALESCE_MAX_CHUNK_BYTES = _COALESCE_MAX_CHUNK_BYTES
SCRATCH_BYTES = _SCRATCH_BYTES
MIN_FRAME_LENGTH = _MIN_FRAME_LENGTH
IOV_MAX = _IOV_MAX

# Frame lengths are u32, so any limit at or above 2**32 behaves like 2**32.
cdef unsigned long long _LENGTH_CEILING = 1ULL << 32

_pack_header = struct.Struct(">IBI").pack
_BAD_FRAME = ErrorCode.BAD_FRAME
_FRAME_TOO_LARGE = ErrorCode.FRAME_TOO_LARGE


cdef inline unsigned long _be32(const unsigned char *p) noexcept nogil:
    return ((<unsigned long>p[0] << 24) | (<unsigned long>p[1] << 16) |
            (<unsigned long>p[2] << 8) | <unsigned long>p[3])


cdef object _snapshot(object data):
    """An immutable copy of a bytes-like object (TypeError for anything else, e.g. str)."""
    with memoryview(data) as view:
        return view.tobytes()


def encode_frame(msg_type, request_id, payload=b""):
    """One frame as bytes."""
    cdef int overflow_t = 0, overflow_r = 0
    cdef long t, r
    cdef Py_ssize_t n
    cdef bytes out
    cdef unsigned char *p
    if PyLong_CheckExact(msg_type) and PyLong_CheckExact(request_id) and \
            PyBytes_CheckExact(payload):
        t = PyLong_AsLongAndOverflow(msg_type, &overflow_t)
        r = PyLong_AsLongAndOverflow(request_id, &overflow_r)
        n = PyBytes_GET_SIZE(payload)
        if (not overflow_t and not overflow_r and 0 <= t <= 0xFF and 0 <= r <= 0xFFFFFFFF
                and n <= 0xFFFFFFFF - _MIN_FRAME_LENGTH):
            out = PyBytes_FromStringAndSize(NULL, _HEADER_BYTES + n)
            p = <unsigned char *>PyBytes_AS_STRING(out)
            n += _MIN_FRAME_LENGTH
            p[0] = (n >> 24) & 0xFF
            p[1] = (n >> 16) & 0xFF
            p[2] = (n >> 8) & 0xFF
            p[3] = n & 0xFF
            p[4] = <unsigned char>t
            p[5] = (r >> 24) & 0xFF
            p[6] = (r >> 16) & 0xFF
            p[7] = (r >> 8) & 0xFF
            p[8] = r & 0xFF
            memcpy(p + _HEADER_BYTES, PyBytes_AS_STRING(payload), n - _MIN_FRAME_LENGTH)
            return out
    # Anything unusual (bool, int subclass, bytearray, out of range): the twin's expression,
    # so results and errors (struct.error, TypeError) are the twin's.
    return _pack_header(len(payload) + _MIN_FRAME_LENGTH, msg_type, request_id) + payload


cdef class FrameDecoder:
    """Splits a byte stream into frames: ``receive_data`` buffers, ``next_frame`` takes one.

    A length below the minimum or above ``max_frame_bytes`` breaks the stream: ``next_frame``
    raises ``FrameError`` then and on every later call, after the good frames before it.
    The header is judged as soon as its 4 length bytes arrive, so a too-large frame is refused
    before it is buffered: ``max_frame_bytes`` is the hard cap on incomplete input.
    """

    cdef object _max_obj                  # as given (after operator.index), for messages
    cdef unsigned long long _max          # the same, capped at 2**32
    cdef unsigned char *_buf
    cdef Py_ssize_t _cap                  # bytes allocated at _buf
    cdef Py_ssize_t _start                # first byte not yet returned as a frame
    cdef Py_ssize_t _end                  # one past the last byte received
    cdef object _error                    # the sticky FrameError, or None

    def __cinit__(self):
        self._buf = NULL
        self._cap = self._start = self._end = 0
        self._max_obj = 65536
        self._max = 65536
        self._error = None

    def __init__(self, max_frame_bytes=65536):
        self.max_frame_bytes = max_frame_bytes
        self._start = self._end = 0
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def max_frame_bytes(self):
        """Largest accepted frame length (type + request_id + payload); an int >= 5."""
        return self._max_obj

    @max_frame_bytes.setter
    def max_frame_bytes(self, value):
        value = PyNumber_Index(value)
        if value < _MIN_FRAME_LENGTH:
            raise ValueError(f"max_frame_bytes must be at least {_MIN_FRAME_LENGTH}")
        self._max_obj = value
        self._max = value if value < _LENGTH_CEILING else _LENGTH_CEILING

    @property
    def buffered_bytes(self):
        """Bytes received but not yet returned as frames."""
        return self._end - self._start

    @property
    def capacity_bytes(self):
        """Bytes of memory the receive buffer holds now (0 when nothing is buffered)."""
        return self._cap

    cdef int _reserve(self, Py_ssize_t n) except -1:
        """Room for ``n`` more bytes at ``_end``; moves each byte O(1) times amortized.

        The buffer grows geometrically with what arrives, but never past the end of the
        frame it is collecting (its length prefix says where) unless the new bytes go past
        it: a declared length reserves nothing up front.
        """
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t new_cap, frame_end
        cdef unsigned long length
        cdef unsigned char *new_buf
        if live == 0:
            self._start = self._end = 0
        if self._end + n <= self._cap:
            return 0
        if self._start >= live and live + n <= self._cap:
            # The bytes moved (live) are fewer than those consumed since the last move.
            memmove(self._buf, self._buf + self._start, live)
        else:
            new_cap = max(self._cap * 2, live + n, <Py_ssize_t>_MIN_CAPACITY_BYTES)
            if live >= 4:
                length = _be32(self._buf + self._start)
                frame_end = 4 + <Py_ssize_t>length
                # Only while that frame is unfinished: bytes piling up behind finished ones
                # (nobody reading them yet) keep doubling, or each append would copy all.
                if _MIN_FRAME_LENGTH <= length <= self._max and live < frame_end < new_cap:
                    new_cap = max(frame_end, live + n)
            new_buf = <unsigned char *>PyMem_Malloc(new_cap)
            if new_buf == NULL:
                raise MemoryError()
            if live:
                memcpy(new_buf, self._buf + self._start, live)
            PyMem_Free(self._buf)
            self._buf = new_buf
            self._cap = new_cap
        self._start = 0
        self._end = live
        return 0

    cdef inline void _waiting(self) noexcept:
        """The buffered bytes are an unfinished frame: hold little more memory than they
        need while the rest is awaited. The bytes moved here are fewer than those consumed
        since the buffer last grew, so each byte is still moved O(1) times."""
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t new_cap
        cdef unsigned char *new_buf
        if self._cap <= _MIN_CAPACITY_BYTES or self._cap <= live * _SHRINK_FACTOR:
            return
        if live == 0:
            self._release()
            return
        memmove(self._buf, self._buf + self._start, live)
        self._start = 0
        self._end = live
        new_cap = max(live, <Py_ssize_t>_MIN_CAPACITY_BYTES)
        new_buf = <unsigned char *>PyMem_Realloc(self._buf, new_cap)
        if new_buf != NULL:         # else the larger buffer, still valid, stays
            self._buf = new_buf
            self._cap = new_cap

    def receive_data(self, data):
        """Buffer more of the stream (any bytes-like object)."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
            self._reserve(n)
            memcpy(self._buf + self._end, PyBytes_AS_STRING(data), n)
            self._end += n
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._reserve(view.len)
            memcpy(self._buf + self._end, view.buf, view.len)
            self._end += view.len
        finally:
            PyBuffer_Release(&view)

    cdef object _broken(self, unsigned long length):
        """Record and return the error for a bad length prefix."""
        if length < _MIN_FRAME_LENGTH:
            self._error = FrameError(
                _BAD_FRAME,
                f"frame length {length} is below the minimum of {_MIN_FRAME_LENGTH}")
        else:
            self._error = FrameError(
                _FRAME_TOO_LARGE,
                f"frame length {length} exceeds the limit of {self._max_obj} bytes")
        return self._error

    cdef inline object _take(self, unsigned long length):
        """The frame at ``_start`` (known complete, ``length`` after its prefix) as a tuple."""
        cdef const unsigned char *p = self._buf + self._start
        frame = (p[4], _be32(p + 5),
                 PyBytes_FromStringAndSize(<const char *>p + _HEADER_BYTES,
                                           length - _MIN_FRAME_LENGTH))
        self._start += 4 + length
        return frame

    def next_frame(self):
        """The next complete frame as ``(type, request_id, payload)``, or None if incomplete."""
        cdef unsigned long length
        cdef Py_ssize_t available
        if self._error is not None:
            raise self._error
        available = self._end - self._start
        if available < 4:
            self._waiting()
            return None
        length = _be32(self._buf + self._start)
        if length < _MIN_FRAME_LENGTH or length > self._max:
            raise self._broken(length)
        if <unsigned long long>available < 4 + <unsigned long long>length:
            self._waiting()
            return None
        frame = self._take(length)
        if self._start == self._end:
            self._release()
        return frame

    cdef inline void _release(self) noexcept:
        """Everything was consumed: give the memory back, so thousands of idle connections
        hold no receive buffers (allocating one per read costs far less than the read)."""
        PyMem_Free(self._buf)
        self._buf = NULL
        self._cap = self._start = self._end = 0

    def read_frames(self):
        """Every complete frame buffered, in order, as a list of ``next_frame`` tuples.

        The bulk form of ``next_frame`` (one call per read instead of one per frame), with the
        same error semantics: when a bad length prefix follows good frames, those frames are
        returned and ``FrameError`` is raised by the next call (of either method); when the bad
        prefix comes first, or the stream was already broken, it raises at once. An empty list
        means more data is needed.
        """
        cdef unsigned long length
        cdef list frames = []
        if self._error is not None:
            raise self._error
        while self._end - self._start >= 4:
            length = _be32(self._buf + self._start)
            if length < _MIN_FRAME_LENGTH or length > self._max:
                error = self._broken(length)
                if not frames:
                    raise error
                break
            if <unsigned long long>(self._end - self._start) < 4 + <unsigned long long>length:
                break
            frames.append(self._take(length))
        if self._start == self._end:
            self._release()
        elif self._error is None:
            self._waiting()
        return frames


cdef class OutputBuffer:
    """Bytes queued for one connection, written with one ``sendmsg`` per call (``writev``
    for a file descriptor that is not a socket).

    Appended objects are kept by reference (a fan-out shares one ``bytes`` among all its
    recipients); a partial write keeps an offset into the first object instead of copying.
    ``owner`` is free for the caller (the connection this buffer belongs to). ``limit``
    (0: none) is the queue size past which the owner must act even if the buffer was not
    empty: ``append`` and ``fanout`` report the buffer again when an append crosses it.
    """

    cdef public object owner
    cdef public Py_ssize_t limit
    # The socket ``write_all`` writes this buffer to by itself (-1: it hands the buffer to
    # ``owner.flush()``); the owner sets it while a completed write needs nothing more of it.
    cdef public int direct_fd
    # The queue is _chunks[_head:_tail], each an owned reference to an exact ``bytes`` (so no
    # reference cycle can pass through it and the GC need not see it).
    cdef PyObject **_chunks
    cdef Py_ssize_t _slots                # allocated length of _chunks
    cdef Py_ssize_t _head
    cdef Py_ssize_t _tail
    cdef Py_ssize_t _offset               # bytes of _chunks[_head] already written
    cdef Py_ssize_t _pending
    cdef bint _closed

    def __cinit__(self):
        self._chunks = NULL
        self._slots = self._head = self._tail = 0
        self._offset = self._pending = 0
        self._closed = False
        self.direct_fd = -1

    def __init__(self, owner=None, Py_ssize_t limit=0):
        self.owner = owner
        self.limit = limit
        self._drop()
        self._closed = False

    def __dealloc__(self):
        self._drop()
        PyMem_Free(self._chunks)

    @property
    def pending_bytes(self):
        return self._pending

    @property
    def closed(self):
        return self._closed

    def __len__(self):
        return self._pending

    cdef void _drop(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self._head, self._tail):
            Py_DECREF(<object>self._chunks[i])
        self._head = self._tail = 0
        self._offset = self._pending = 0

    cdef inline int _push(self, object data, Py_ssize_t size) except -1:
        """Queue an exact, non-empty ``bytes`` of ``size`` bytes."""
        cdef Py_ssize_t live, new_slots
        cdef PyObject **new_chunks
        if self._tail == self._slots:
            live = self._tail - self._head
            if self._head >= live and self._head:
                # As many slots are free at the front as are in use: slide down, O(1) amortized.
                memmove(self._chunks, self._chunks + self._head, live * sizeof(PyObject *))
            else:
                new_slots = max(self._slots * 2, <Py_ssize_t>_MIN_CHUNK_SLOTS)
                new_chunks = <PyObject **>PyMem_Realloc(self._chunks,
                                                        new_slots * sizeof(PyObject *))
                if new_chunks == NULL:
                    raise MemoryError()
                self._chunks = new_chunks
                self._slots = new_slots
                if self._head:
                    memmove(self._chunks, self._chunks + self._head,
                            live * sizeof(PyObject *))
            self._head = 0
            self._tail = live
        Py_INCREF(data)
        self._chunks[self._tail] = <PyObject *>data
        self._tail += 1
        self._pending += size
        return 0

    def append(self, data):
        """Queue ``data``; True if the buffer was empty before or just crossed ``limit``.

        ``bytes`` are kept by reference; any other bytes-like object is copied to ``bytes``
        first, so a later change to it cannot corrupt what is sent or the byte count.
        """
        cdef Py_ssize_t size, before
        if self._closed:
            return False
        if not PyBytes_CheckExact(data):
            data = _snapshot(data)
        size = PyBytes_GET_SIZE(data)
        if size == 0:
            return False
        before = self._pending
        self._push(data, size)
        return before == 0 or (self.limit > 0 and before <= self.limit < before + size)

    def write_to(self, fd):
        """Write as much as the kernel takes; returns the bytes written (0 if it took none).

        Runs of small chunks are copied together into one iovec (at most SCRATCH_BYTES in
        all), except those the scratch buffer still holds from the write before; larger
        chunks are written from where they lie. Raises OSError for errors other than a full
        socket buffer (reset, broken pipe).
        """
        cdef int err = 0
        cdef Py_ssize_t written = self._write(fd, &err)
        if written < 0:
            chatcore_oserror_from(err)
        return written

    cdef Py_ssize_t _write(self, int cfd, int *err) except -2:
        """``write_to`` without the exception: -1 and ``err`` set for an error (EAGAIN is a
        write of 0); -2 only when a signal handler raised during EINTR."""
        global _held_count, _held_skip
        cdef iovec iov[_IOV_MAX]
        cdef int count = 0
        cdef Py_ssize_t written, i, size, used = 0, skip, copied = 0
        cdef bint last_in_scratch = False
        cdef const char *base
        cdef PyObject *chunk
        if not self._pending:
            return 0
        skip = self._offset
        i = self._head
        while i < self._tail:
            chunk = self._chunks[i]
            base = PyBytes_AS_STRING(<object>chunk) + skip
            size = PyBytes_GET_SIZE(<object>chunk) - skip
            if size <= _COALESCE_MAX_CHUNK_BYTES and used + size <= _SCRATCH_BYTES:
                if not last_in_scratch:
                    if count == _IOV_MAX:
                        break
                    iov[count].iov_base = _scratch + used
                    iov[count].iov_len = 0
                    count += 1
                    last_in_scratch = True
                iov[count - 1].iov_len += <size_t>size
                # The copy number ``copied`` lands where the last write's did: if that was
                # this same chunk (and, for the first, from the same offset), it is there.
                if (copied >= _held_count or _held_chunks[copied] != chunk
                        or (copied == 0 and _held_skip != skip)):
                    _forget_held(copied)
                    memcpy(_scratch + used, base, size)
                    if copied < _SCRATCH_HELD_CHUNKS:
                        Py_INCREF(<object>chunk)
                        _held_chunks[copied] = chunk
                        _held_count = copied + 1
                        if copied == 0:
                            _held_skip = skip
                copied += 1
                used += size
            else:
                if count == _IOV_MAX:
                    break
                iov[count].iov_base = <void *>base
                iov[count].iov_len = <size_t>size
                count += 1
                last_in_scratch = False
            skip = 0
            i += 1
        # The GIL stays held: the socket is non-blocking, and the chunks and the scratch
        # buffer must not change under the call.
        while True:
            written = chatcore_write_iov(cfd, iov, count)
            if written >= 0:
                break
            err[0] = errno
            if err[0] == EINTR:
                PyErr_CheckSignals()   # raises if a signal handler did (PEP 475): -2
                continue
            if err[0] == EAGAIN or err[0] == EWOULDBLOCK:
                return 0
            return -1
        self._consume(written)
        return written

    cdef void _consume(self, Py_ssize_t written) noexcept:
        cdef Py_ssize_t left, size
        if written == self._pending:    # all of it, as most writes: no sizes to look up
            self._drop()
            return
        self._pending -= written
        left = written + self._offset
        while self._head < self._tail:
            size = PyBytes_GET_SIZE(<object>self._chunks[self._head])
            if left < size:
                break
            left -= size
            Py_DECREF(<object>self._chunks[self._head])
            self._head += 1
        self._offset = left
        if self._head == self._tail:
            self._head = self._tail = 0

    def peek(self, max_bytes):
        """The first ``max_bytes`` queued bytes (all, if fewer are queued), left in the queue.

        For writers other than ``write_to`` (a TLS session encrypts them): ``advance`` by
        what was taken once it is written, so ``pending_bytes`` keeps counting it till then.
        """
        cdef Py_ssize_t need, size, skip, i
        cdef char *out_p
        cdef object out
        value = PyNumber_Index(max_bytes)
        if value < 0:
            raise ValueError("max_bytes must not be negative")
        need = self._pending if value >= self._pending else value
        out = PyBytes_FromStringAndSize(NULL, need)
        out_p = PyBytes_AS_STRING(out)
        skip = self._offset
        i = self._head
        while need:
            size = PyBytes_GET_SIZE(<object>self._chunks[i]) - skip
            if size > need:
                size = need
            memcpy(out_p, PyBytes_AS_STRING(<object>self._chunks[i]) + skip, size)
            out_p += size
            need -= size
            skip = 0
            i += 1
        return out

    def advance(self, count):
        """Drop the first ``count`` queued bytes, as a ``write_to`` that wrote them would."""
        value = PyNumber_Index(count)
        if not 0 <= value <= self._pending:
            raise ValueError(f"cannot advance {value} bytes: {self._pending} are queued")
        self._consume(value)

    def close(self):
        """Drop everything queued; later appends are ignored."""
        self._closed = True
        self.direct_fd = -1
        self._drop()


def write_all(buffers):
    """Write every buffer of the list ``buffers`` that has a ``direct_fd``, as its owner's
    ``flush()`` would; returns ``(bytes written, the buffers left to owner.flush())``.

    A buffer is left to its owner when it has no ``direct_fd`` or when its write did not
    take everything (a full socket, or an error: nothing is consumed then, and the owner's
    own write meets the error again). One C loop for the per-turn flush instead of a
    Python call per connection (docs/hotpath.md, "The write path").
    """
    cdef Py_ssize_t total = 0, written
    cdef int err = 0
    cdef list left = []
    cdef OutputBuffer out
    if type(buffers) is not list:
        raise TypeError(f"write_all takes a list, not {type(buffers).__name__}")
    for item in <list>buffers:
        if not isinstance(item, OutputBuffer):
            raise TypeError(f"write_all takes OutputBuffers, not {type(item).__name__}")
        out = <OutputBuffer>item
        if out.direct_fd < 0:
            left.append(out)
            continue
        written = out._write(out.direct_fd, &err)
        if written > 0:
            total += written
        if out._pending:
            left.append(out)
    return total, left


def fanout(data, buffers, skip=None):
    """Queue one ``data`` object on every buffer; returns those that were empty before or
    just crossed their ``limit`` (the buffers whose owners must be flushed).

    Closed buffers are skipped, and ``skip`` (a buffer left out: a sender that is not sent
    its own message, as IRC does). A non-``bytes`` ``data`` is copied once, as in ``append``.
    """
    cdef Py_ssize_t size, before, i
    cdef PyObject *item
    cdef list members, became_pending
    if not PyBytes_CheckExact(data):
        data = _snapshot(data)
    size = PyBytes_GET_SIZE(data)
    if size == 0:
        return []
    members = buffers if type(buffers) is list else list(buffers)
    became_pending = []
    # Borrowed references: the refcount traffic on each buffer was a tenth of this loop under
    # fanout, and nothing below runs Python code or changes the list.
    for i in range(PyList_GET_SIZE(members)):
        item = PyList_GET_ITEM(members, i)
        if not isinstance(<object>item, OutputBuffer):
            raise TypeError(f"fanout takes OutputBuffers, not {type(<object>item).__name__}")
        if (<OutputBuffer>item)._closed or item == <PyObject *>skip:
            continue
        before = (<OutputBuffer>item)._pending
        if before == 0 or ((<OutputBuffer>item).limit > 0
                           and before <= (<OutputBuffer>item).limit < before + size):
            became_pending.append(<object>item)
        (<OutputBuffer>item)._push(data, size)
    return became_pending


# The text rule (docs/protocol.md, "Text"), as _codec_py.find_forbidden states it with a
# regex. Scanning the string's own storage costs ~0.5 ns a character against the regex's
# ~4 ns, on every chat message (see docs/hotpath.md).
_FORBIDDEN_TEXT_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


cdef inline bint _forbidden(Py_UCS4 c) noexcept nogil:
    if c < 0x20:
        return c != 0x09 and c != 0x0A
    return (0x7F <= c <= 0x9F) or (0xD800 <= c <= 0xDFFF)


def find_forbidden(text):
    """The index (in code points) of the first character no text may hold, or -1."""
    cdef Py_ssize_t i, n
    cdef unsigned int kind
    cdef void *data
    cdef const unsigned char *latin1
    if type(text) is not str:           # a subclass, or not text at all: the twin's way
        found = _FORBIDDEN_TEXT_CHARS.search(text)
        return -1 if found is None else found.start()
    n = PyUnicode_GET_LENGTH(text)
    kind = PyUnicode_KIND(text)
    data = PyUnicode_DATA(text)
    if kind == PyUnicode_1BYTE_KIND:
        latin1 = <const unsigned char *>data
        for i in range(n):
            if _forbidden(latin1[i]):
                return i
        return -1
    for i in range(n):
        if _forbidden(PyUnicode_READ(kind, data, i)):
            return i
    return -1
