# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of ``chatcore._ircframe_py``: the IRC line framer, same behaviour.

``chatcore._ircframe_py`` is the specification; ``tests/test_irc_framer.py`` holds this module
to it on random input split at random points.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from libc.string cimport memcpy, memmove

from .errors import LineTooLong

cdef enum:
    _MIN_CAPACITY_BYTES = 1024        # first receive-buffer allocation
    _MAX_IRC_LINE_BYTES = 8191 + 510  # as in the twin: tags, then a 512-byte line with CRLF

MAX_IRC_LINE_BYTES = _MAX_IRC_LINE_BYTES


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
