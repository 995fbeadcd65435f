# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of ``chatcore._ircframe_py``: the IRC line framer and the plain PRIVMSG
reader, same behaviour.

``chatcore._ircframe_py`` is the specification; ``tests/test_irc_framer.py`` holds this module
to it on random input split at random points.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp, memcpy, memmove

from .errors import LineTooLong

cdef enum:
    _MIN_CAPACITY_BYTES = 1024        # first receive-buffer allocation
    _MAX_IRC_LINE_BYTES = 8191 + 510  # as in the twin: tags, then a 512-byte line with CRLF
    _MAX_PLAIN_PRIVMSG_BYTES = 510    # as in the twin: IRC's 512 bytes with CRLF

MAX_IRC_LINE_BYTES = _MAX_IRC_LINE_BYTES
MAX_PLAIN_PRIVMSG_BYTES = _MAX_PLAIN_PRIVMSG_BYTES


cdef class LineDecoder:
    """Splits a byte stream into IRC lines: ``receive_data`` buffers, ``next_line`` takes one.

    The search for a line end resumes where the last one stopped, so a long line arriving a
    byte at a time costs O(bytes). A line longer than ``max_line_bytes`` (line end excluded),
    or that many bytes without any line end, breaks the stream: ``next_line`` raises
    ``LineTooLong`` then and on every later call, after the good lines before it.
    """

    cdef object _max_obj
    cdef Py_ssize_t _max
    cdef unsigned char *_buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start                # first byte not yet returned
    cdef Py_ssize_t _scan                 # no line end in _buf[_start:_scan]
    cdef Py_ssize_t _end                  # one past the last byte received
    cdef object _error

    def __cinit__(self):
        self._buf = NULL
        self._cap = self._start = self._scan = self._end = 0
        self._max_obj = _MAX_IRC_LINE_BYTES
        self._max = _MAX_IRC_LINE_BYTES
        self._error = None

    def __init__(self, max_line_bytes=_MAX_IRC_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._start = self._scan = self._end = 0
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def max_line_bytes(self):
        """Longest line accepted, line end excluded; an int >= 1."""
        return self._max_obj

    @max_line_bytes.setter
    def max_line_bytes(self, value):
        value = PyNumber_Index(value)
        if value < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max_obj = value
        # Larger limits behave alike: no buffer gets that big before memory runs out.
        self._max = value if value < (<Py_ssize_t>1 << 62) else (<Py_ssize_t>1 << 62)

    @property
    def buffered_bytes(self):
        """Bytes received but not yet returned as lines (line ends included)."""
        return self._end - self._start

    cdef int _reserve(self, Py_ssize_t n) except -1:
        """Room for ``n`` more bytes at ``_end``; moves each byte O(1) times amortized."""
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t new_cap
        cdef unsigned char *new_buf
        if self._end + n <= self._cap:
            return 0
        if self._start >= live and live + n <= self._cap:
            memmove(self._buf, self._buf + self._start, live)
        else:
            new_cap = max(self._cap * 2, live + n, <Py_ssize_t>_MIN_CAPACITY_BYTES)
            new_buf = <unsigned char *>PyMem_Malloc(new_cap)
            if new_buf == NULL:
                raise MemoryError()
            if live:
                memcpy(new_buf, self._buf + self._start, live)
            PyMem_Free(self._buf)
            self._buf = new_buf
            self._cap = new_cap
        self._scan -= self._start
        self._start = 0
        self._end = live
        return 0

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

    cdef object _too_long(self):
        self._error = LineTooLong(f"line longer than {self._max_obj} bytes")
        return self._error

    def next_line(self):
        """The next non-empty line without its line end, or None until one is complete."""
        cdef Py_ssize_t i, start
        cdef unsigned char c
        cdef const unsigned char *buf
        if self._error is not None:
            raise self._error
        while True:
            buf = self._buf
            start = self._start
            i = self._scan
            while i < self._end:
                c = buf[i]
                if c == 10 or c == 13:
                    break
                i += 1
            if i == self._end:
                if self._end - start > self._max:
                    raise self._too_long()
                self._scan = i
                return None
            if i - start > self._max:
                raise self._too_long()
            self._start = self._scan = i + 1
            if self._start == self._end:
                # Everything consumed: give the memory back, so idle connections hold none.
                line = PyBytes_FromStringAndSize(<const char *>buf + start, i - start) \
                    if i > start else None
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = self._start = self._scan = self._end = 0
                return line
            if i > start:
                return PyBytes_FromStringAndSize(<const char *>buf + start, i - start)


cdef class PlainPrivmsg:
    """A ``PRIVMSG target :text`` line read by ``read_privmsg``: one target (a channel or a
    nick, no list), no tags, no source, plain UTF-8 text (no control character)."""

    cdef readonly str target
    cdef readonly str text

    def __init__(self, str target, str text):
        self.target = target
        self.text = text

    def __eq__(self, other):
        return (type(other).__name__ == "PlainPrivmsg" and self.target == other.target
                and self.text == other.text)

    def __hash__(self):
        return hash((self.target, self.text))

    def __repr__(self):
        return f"PlainPrivmsg({self.target!r}, {self.text!r})"


def read_privmsg(line):
    """``line`` (line end removed) as a PlainPrivmsg when it is exactly ``PRIVMSG``, one
    space, a target without ``,`` or a leading ``:``, one space, ``:`` and a non-empty text,
    at most MAX_PLAIN_PRIVMSG_BYTES, all UTF-8 without control characters; else None (the
    general parser decides, with the same outcome for lines this would take)."""
    cdef const unsigned char *buf
    cdef Py_ssize_t n, i, space
    cdef unsigned char c
    cdef PlainPrivmsg event
    if not PyBytes_CheckExact(line):
        line = bytes(line)
    n = PyBytes_GET_SIZE(line)
    buf = <const unsigned char *>PyBytes_AS_STRING(line)
    if n < 8 or n > _MAX_PLAIN_PRIVMSG_BYTES or memcmp(buf, b"PRIVMSG ", 8) != 0:
        return None
    if n == 8 or buf[8] == 58:                  # ':'
        return None
    space = -1
    for i in range(8, n):
        c = buf[i]
        if c < 32 or c == 127 or (c == 0xC2 and i + 1 < n and 0x80 <= buf[i + 1] <= 0x9F):
            return None
        if space < 0:
            if c == 32:
                space = i
            elif c == 44:                       # ','
                return None
    if space <= 8 or space + 2 >= n or buf[space + 1] != 58:
        return None
    try:
        target = PyUnicode_DecodeUTF8(<const char *>buf + 8, space - 8, NULL)
        text = PyUnicode_DecodeUTF8(<const char *>buf + space + 2, n - space - 2, NULL)
    except UnicodeDecodeError:
        return None
    event = PlainPrivmsg.__new__(PlainPrivmsg)
    event.target = target
    event.text = text
    return event
