"""Pure-Python frame codec and output buffers: the specification of the hot path.

``chatcore._speedups`` (built from ``ext/``) implements the same names with the same behaviour;
``chatcore.codec`` chooses between the two. Frame layout (docs/protocol.md)::

    length u32 | type u8 | request_id u32 | payload      (big-endian; length counts type onward)
"""
from __future__ import annotations

import operator
import os
import re
import struct

from .errors import ErrorCode, FrameError

HEADER = struct.Struct(">IBI")
HEADER_BYTES = HEADER.size            # 9
MIN_FRAME_LENGTH = 5                  # type + request_id: a frame with no payload
# Linux refuses writev with more buffers than this (UIO_MAXIOV).
IOV_MAX = 1024
# Runs of queued chunks up to this size are joined into one buffer before writev, at most
# SCRATCH_BYTES per write: the kernel copies one long iovec faster than hundreds of short
# ones (measured under the fan-out load; see ext/_speedups.pyx).
COALESCE_MAX_CHUNK_BYTES = 4096
SCRATCH_BYTES = 262144
# Compact the receive buffer only once this much has been consumed, so each byte is moved
# O(1) times however slowly a large frame arrives.
_COMPACT_AFTER_BYTES = 65536
# While an unfinished frame is awaited, a buffer holding more than this many times the bytes
# it still needs (and more than _MIN_CAPACITY_BYTES) is cut down to them (docs/hotpath.md,
# "Memory"): what a waiting connection's input costs stays near what it counts for in the
# server's held-input budget.
_SHRINK_FACTOR = 4
_MIN_CAPACITY_BYTES = 1024

_unpack_header = HEADER.unpack_from
_unpack_length = struct.Struct(">I").unpack_from
_pack_header = HEADER.pack


def encode_frame(msg_type: int, request_id: int, payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    return _pack_header(len(payload) + MIN_FRAME_LENGTH, msg_type, request_id) + payload


class FrameDecoder:
    """Splits a byte stream into frames: ``receive_data`` buffers, ``next_frame`` takes one.

    A length below the minimum or above ``max_frame_bytes`` breaks the stream: ``next_frame``
    raises ``FrameError`` then and on every later call, after the good frames before it.
    The header is judged as soon as its 4 length bytes arrive, so a too-large frame is refused
    before it is buffered: ``max_frame_bytes`` is the hard cap on incomplete input.
    """

    __slots__ = ("_max_frame_bytes", "_buf", "_pos", "_error")

    def __init__(self, max_frame_bytes: int = 65536):
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        self._error: FrameError | None = None

    @property
    def max_frame_bytes(self) -> int:
        """Largest accepted frame length (type + request_id + payload); an int >= 5."""
        return self._max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        value = operator.index(value)
        if value < MIN_FRAME_LENGTH:
            raise ValueError(f"max_frame_bytes must be at least {MIN_FRAME_LENGTH}")
        self._max_frame_bytes = value

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    @property
    def capacity_bytes(self) -> int:
        """Bytes of memory the receive buffer holds now (0 when nothing is buffered)."""
        return self._buf.__alloc__() if self._buf else 0

    def _waiting(self, buf: bytearray, pos: int) -> None:
        """``buf[pos:]`` is an unfinished frame: keep little more memory than it needs."""
        live = len(buf) - pos
        if buf.__alloc__() > max(live * _SHRINK_FACTOR, _MIN_CAPACITY_BYTES):
            self._buf = buf[pos:]
            pos = 0
        self._pos = pos

    def receive_data(self, data) -> None:
        """Buffer more of the stream (any bytes-like object)."""
        if self._pos >= _COMPACT_AFTER_BYTES:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def _broken(self, length: int) -> FrameError:
        """Record and return the error for a bad length prefix."""
        if length < MIN_FRAME_LENGTH:
            self._error = FrameError(
                ErrorCode.BAD_FRAME,
                f"frame length {length} is below the minimum of {MIN_FRAME_LENGTH}")
        else:
            self._error = FrameError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame length {length} exceeds the limit of {self._max_frame_bytes} bytes")
        return self._error

    def next_frame(self):
        """The next complete frame as ``(type, request_id, payload)``, or None if incomplete."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 4:
            if buf:
                self._waiting(buf, pos)
            return None
        length = _unpack_length(buf, pos)[0]
        if length < MIN_FRAME_LENGTH or length > self._max_frame_bytes:
            raise self._broken(length)
        if available < 4 + length:
            self._waiting(buf, pos)
            return None
        _, msg_type, request_id = _unpack_header(buf, pos)
        end = pos + 4 + length
        payload = bytes(buf[pos + HEADER_BYTES:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return msg_type, request_id, payload

    def read_frames(self) -> list:
        """Every complete frame buffered, in order, as a list of ``next_frame`` tuples.

        The bulk form of ``next_frame`` (one call per read instead of one per frame), with the
        same error semantics: when a bad length prefix follows good frames, those frames are
        returned and ``FrameError`` is raised by the next call (of either method); when the bad
        prefix comes first, or the stream was already broken, it raises at once. An empty list
        means more data is needed.
        """
        if self._error is not None:
            raise self._error
        frames = []
        buf = self._buf
        pos = self._pos
        size = len(buf)
        limit = self._max_frame_bytes
        while size - pos >= 4:
            length = _unpack_length(buf, pos)[0]
            if length < MIN_FRAME_LENGTH or length > limit:
                error = self._broken(length)
                if not frames:
                    self._pos = pos
                    raise error
                break
            end = pos + 4 + length
            if end > size:
                break
            _, msg_type, request_id = _unpack_header(buf, pos)
            frames.append((msg_type, request_id, bytes(buf[pos + HEADER_BYTES:end])))
            pos = end
        if pos == size:
            buf.clear()
            self._pos = 0
        elif self._error is None:
            self._waiting(buf, pos)
        else:
            self._pos = pos
        return frames


class OutputBuffer:
    """Bytes queued for one connection, written with one ``writev`` per call.

    Appended objects are kept by reference (a fan-out shares one ``bytes`` among all its
    recipients); a partial write keeps an offset into the first object instead of copying.
    ``owner`` is free for the caller (the connection this buffer belongs to). ``limit``
    (0: none) is the queue size past which the owner must act even if the buffer was not
    empty: ``append`` and ``fanout`` report the buffer again when an append crosses it.
    ``direct_fd`` is the socket ``write_all`` writes the buffer to by itself (-1, the
    default: it hands the buffer to ``owner.flush()``); ``close`` resets it.
    """

    __slots__ = ("owner", "limit", "direct_fd", "_chunks", "_offset", "_pending", "_closed")

    def __init__(self, owner=None, limit: int = 0):
        self.owner = owner
        self.limit = limit
        self.direct_fd = -1
        self._chunks: list = []
        self._offset = 0          # bytes of _chunks[0] already written
        self._pending = 0
        self._closed = False

    @property
    def pending_bytes(self) -> int:
        return self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._pending

    def append(self, data: bytes) -> bool:
        """Queue ``data``; True if the buffer was empty before or just crossed ``limit``.

        ``bytes`` are kept by reference; any other bytes-like object is copied to ``bytes``
        first, so a later change to it cannot corrupt what is sent or the byte count.
        """
        if self._closed:
            return False
        if type(data) is not bytes:
            data = _snapshot(data)
        if not data:
            return False
        before = self._pending
        self._chunks.append(data)
        self._pending = after = before + len(data)
        limit = self.limit
        return not before or (limit > 0 and before <= limit < after)

    def write_to(self, fd: int) -> int:
        """Write as much as the kernel takes; returns the bytes written (0 if it took none).

        Runs of small chunks are joined into one buffer (at most SCRATCH_BYTES in all);
        larger chunks are written from where they lie. Raises OSError for errors other than
        a full socket buffer (reset, broken pipe).
        """
        if not self._pending:
            return 0
        chunks = self._chunks
        if len(chunks) <= IOV_MAX:
            # Every chunk fits in one writev as it is, and the compiled twin (which copies
            # runs together) offers the same bytes in this case: skip the copying, which
            # costs Python more than it saves the kernel.
            pieces = chunks[:]
            if self._offset:
                pieces[0] = memoryview(pieces[0])[self._offset:]
            return self._write(fd, pieces)
        pieces = []                 # what writev gets: joined runs and large chunks
        run: list = []              # small chunks still to be joined into one piece
        used = 0
        skip = self._offset
        for chunk in self._chunks:
            if skip:
                chunk = memoryview(chunk)[skip:]
                skip = 0
            size = len(chunk)
            if size <= COALESCE_MAX_CHUNK_BYTES and used + size <= SCRATCH_BYTES:
                if not run and len(pieces) == IOV_MAX:
                    break
                run.append(chunk)
                used += size
            else:
                if run:
                    pieces.append(b"".join(run))
                    run = []
                if len(pieces) == IOV_MAX:
                    break
                pieces.append(chunk)
        if run:
            pieces.append(b"".join(run))
        return self._write(fd, pieces)

    def _write(self, fd: int, pieces: list) -> int:
        try:
            if len(pieces) == 1:
                written = os.write(fd, pieces[0])
            else:
                written = os.writev(fd, pieces)
        except (BlockingIOError, InterruptedError):
            return 0
        self._consume(written)
        return written

    def _consume(self, written: int) -> None:
        self._pending -= written
        chunks = self._chunks
        left = written + self._offset
        done = 0
        for chunk in chunks:
            size = len(chunk)
            if left < size:
                break
            left -= size
            done += 1
        del chunks[:done]
        self._offset = left

    def peek(self, max_bytes: int) -> bytes:
        """The first ``max_bytes`` queued bytes (all, if fewer are queued), left in the queue.

        For writers other than ``write_to`` (a TLS session encrypts them): ``advance`` by
        what was taken once it is written, so ``pending_bytes`` keeps counting it till then.
        """
        max_bytes = operator.index(max_bytes)
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        need = min(max_bytes, self._pending)
        parts = []
        skip = self._offset
        for chunk in self._chunks:
            if not need:
                break
            piece = chunk[skip:skip + need]
            skip = 0
            parts.append(piece)
            need -= len(piece)
        return b"".join(parts)

    def advance(self, count: int) -> None:
        """Drop the first ``count`` queued bytes, as a ``write_to`` that wrote them would."""
        count = operator.index(count)
        if not 0 <= count <= self._pending:
            raise ValueError(f"cannot advance {count} bytes: {self._pending} are queued")
        self._consume(count)

    def close(self) -> None:
        """Drop everything queued; later appends are ignored."""
        self._closed = True
        self.direct_fd = -1
        self._chunks.clear()
        self._offset = 0
        self._pending = 0


def _snapshot(data) -> bytes:
    """An immutable copy of a bytes-like object (TypeError for anything else, e.g. str)."""
    with memoryview(data) as view:
        return view.tobytes()


def write_all(buffers: list) -> tuple:
    """Write every buffer of the list ``buffers`` that has a ``direct_fd``, as its owner's
    ``flush()`` would; returns ``(bytes written, the buffers left to owner.flush())``.

    A buffer is left to its owner when it has no ``direct_fd`` or when its write did not
    take everything (a full socket, or an error: nothing is consumed then, and the owner's
    own write meets the error again).
    """
    if type(buffers) is not list:
        raise TypeError(f"write_all takes a list, not {type(buffers).__name__}")
    total = 0
    left = []
    for out in buffers:
        if not isinstance(out, OutputBuffer):
            raise TypeError(f"write_all takes OutputBuffers, not {type(out).__name__}")
        fd = out.direct_fd
        if fd < 0:
            left.append(out)
            continue
        try:
            total += out.write_to(fd)
        except OSError:
            pass
        if out._pending:
            left.append(out)
    return total, left


def fanout(data: bytes, buffers, skip=None) -> list:
    """Queue one ``data`` object on every buffer; returns those that were empty before or
    just crossed their ``limit`` (the buffers whose owners must be flushed).

    Closed buffers are skipped, and ``skip`` (a buffer left out: a sender that is not sent
    its own message, as IRC does). A non-``bytes`` ``data`` is copied once, as in ``append``.
    """
    if type(data) is not bytes:
        data = _snapshot(data)
    if not data:
        return []
    size = len(data)
    became_pending = []
    for buf in buffers:
        if buf._closed or buf is skip:
            continue
        before = buf._pending
        limit = buf.limit
        if not before or (limit > 0 and before <= limit < before + size):
            became_pending.append(buf)
        buf._chunks.append(data)
        buf._pending = before + size
    return became_pending


# Characters no chat text may hold (docs/protocol.md, "Text"): a terminal acts on them (CR
# rewrites a line, ESC starts a control sequence, BEL rings), so a message holding one could
# forge another line. C0 except TAB and LF, DEL, C1; and lone surrogates, which UTF-8 cannot
# carry but another front end's decoder (surrogateescape) can produce.
FORBIDDEN_TEXT_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def find_forbidden(text: str) -> int:
    """The index (in code points) of the first character no text may hold, or -1."""
    found = FORBIDDEN_TEXT_CHARS.search(text)
    return -1 if found is None else found.start()
