"""Bulk counting and verification of received frames, pure Python: the specification.

``chatcore._loadgen`` (built from ``ext/_loadgen.pyx``) implements the same names with the same
behaviour; ``benchmarks.verify`` chooses between the two. A ``Stream`` splits one connection's
byte stream into frames without building an event per frame: it counts every frame by type in a
shared ``Tally``, checks RoomMessage and DirectMessage texts (written by ``stamp``) for per-sender
order, and records each one's latency in the tally's histogram. Acks are only counted (they drive
a sender's window); every other frame is handed back to the caller as ``(type, request_id,
payload)``.

``Receiver`` is the receive loop: ``poll(timeout)`` waits on an epoll set and reads every ready
socket registered with ``add(fd, stream)`` once, into one preallocated buffer, feeding its stream;
only what the caller must act on comes back (see ``Receiver.poll``), so a socket that brought
nothing but verified messages costs the caller nothing.

``IrcStream`` is the same for IRC lines (``--proto irc``): it checks the text of every
``PRIVMSG`` the same way, counts a PONG whose token is a number N as acknowledging messages up
to N (the sender's ``PING :N``), and hands every other line back without its line end.

``encode_sends`` is the sending side's one hot spot: a sender's burst of stamped requests.

Message text (ASCII, ``TEXT_HEADER_BYTES`` long, then padding to the requested size)::

    sender id: 8 hex | sequence number: 8 hex | send time, CLOCK_MONOTONIC microseconds: 16 hex
"""
from __future__ import annotations

import os
import select
import struct
import time

TEXT_HEADER_BYTES = 32
PAD_BYTE = 0x2E                         # "."

ROOM_MESSAGE = 0xA0
DIRECT_MESSAGE = 0x90
ACK = 0x82

# Latency histogram: 1 us buckets below LINEAR_US, then SUB_BUCKETS per power of two (~0.1 %
# error, HdrHistogram's idea), up to 2**(LINEAR_BITS + OCTAVES) us (~20 h).
LINEAR_BITS = 11
LINEAR_US = 1 << LINEAR_BITS            # 2048
SUB_BUCKETS = 1 << (LINEAR_BITS - 1)    # 1024
OCTAVES = 25
HIST_BUCKETS = LINEAR_US + OCTAVES * SUB_BUCKETS

# Frames longer than this break the stream: nothing the benchmark asks for comes near it.
MAX_FRAME_BYTES = 16 << 20

_HEADER = struct.Struct(">IBI")
_U16 = struct.Struct(">H")
_HEX_DIGITS = b"0123456789abcdef"


def bucket_of(us: int) -> int:
    """The histogram bucket of a latency in microseconds (negative counts as 0)."""
    if us < LINEAR_US:
        return us if us > 0 else 0
    shift = us.bit_length() - LINEAR_BITS
    index = LINEAR_US + (shift - 1) * SUB_BUCKETS + ((us >> shift) - SUB_BUCKETS)
    return index if index < HIST_BUCKETS else HIST_BUCKETS - 1


def bucket_floor(index: int) -> int:
    """The smallest latency (us) that falls in bucket ``index``."""
    if index < LINEAR_US:
        return index
    shift = (index - LINEAR_US) // SUB_BUCKETS + 1
    return (SUB_BUCKETS + (index - LINEAR_US) % SUB_BUCKETS) << shift


def stamp(sender: int, seq: int, send_us: int, size: int) -> bytes:
    """The text of message ``seq`` from ``sender``, padded to ``size`` bytes (at least the header)."""
    head = b"%08x%08x%016x" % (sender & 0xFFFFFFFF, seq & 0xFFFFFFFF, send_us)
    return head + b"." * (size - TEXT_HEADER_BYTES) if size > TEXT_HEADER_BYTES else head


def encode_sends(msg_type: int, prefix: bytes, sender: int, seq: int, count: int, now_us: int,
                 size: int) -> bytes:
    """``count`` request frames of ``msg_type`` (SendRoom, SendDirect): ``prefix`` (the target's
    encoded name), then the stamped text of message ``seq``, ``seq + 1``, ... from ``sender``;
    request id = sequence number + 1."""
    length = 5 + len(prefix) + max(size, TEXT_HEADER_BYTES)
    pack = _HEADER.pack
    parts = []
    for k in range(count):
        parts.append(pack(length, msg_type, (seq + k + 1) & 0xFFFFFFFF))
        parts.append(prefix)
        parts.append(stamp(sender, seq + k, now_us, size))
    return b"".join(parts)


class Tally:
    """Counters shared by every stream of one process."""

    __slots__ = ("counts", "messages", "duplicates", "reordered", "gaps", "malformed",
                 "hist", "text_bytes")

    def __init__(self, text_bytes: int):
        self.text_bytes = max(text_bytes, TEXT_HEADER_BYTES)
        self.counts = [0] * 256          # frames received, by type
        self.messages = 0                # room and direct messages delivered in order
        self.duplicates = 0              # same sequence number as the one before it
        self.reordered = 0               # a sequence number below the last one seen
        self.gaps = 0                    # sequence numbers skipped (lost, or late: see reordered)
        self.malformed = 0               # texts that are not ours or have the wrong length
        self.hist = [0] * HIST_BUCKETS

    def snapshot(self) -> dict:
        """Plain data for JSON and for merging across processes."""
        return {
            "counts": {t: n for t, n in enumerate(self.counts) if n},
            "messages": self.messages, "duplicates": self.duplicates,
            "reordered": self.reordered, "gaps": self.gaps, "malformed": self.malformed,
            "hist": {i: n for i, n in enumerate(self.hist) if n},
        }


class Stream:
    """One connection's receive side: ``feed(data, now_us)`` returns the frames to handle."""

    __slots__ = ("tally", "acks", "_tail", "_last")

    def __init__(self, tally: Tally):
        self.tally = tally
        self.acks = 0                    # Acks seen; the caller subtracts what it has used
        self._tail = b""                 # an incomplete frame carried to the next feed
        self._last: dict = {}            # sender id -> last sequence number seen

    @property
    def buffered_bytes(self) -> int:
        return len(self._tail)

    def feed(self, data, now_us: int) -> list:
        """Scan ``data`` (any bytes-like); ``now_us`` is the receive time for latencies."""
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        tally = self.tally
        counts = tally.counts
        others = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            length = int.from_bytes(buf[pos:pos + 4], "big")
            if length < 5 or length > MAX_FRAME_BYTES:
                raise ValueError(f"bad frame length {length}")
            if end - pos < 4 + length:
                break
            _, msg_type, request_id = _HEADER.unpack_from(buf, pos)
            start = pos + 9
            pos += 4 + length
            counts[msg_type] += 1
            if msg_type == ROOM_MESSAGE or msg_type == DIRECT_MESSAGE:
                self._message(buf, start, pos, msg_type == ROOM_MESSAGE, now_us)
            elif msg_type == ACK:
                self.acks += 1
            elif msg_type != 0xA1:       # UserJoined: counted only
                others.append((msg_type, request_id, buf[start:pos]))
        self._tail = buf[pos:]
        return others

    def _message(self, buf: bytes, start: int, stop: int, room: bool, now_us: int) -> None:
        tally = self.tally
        pos = start
        for _ in range(2 if room else 1):              # room, sender  /  sender
            if pos + 2 > stop:
                tally.malformed += 1
                return
            pos += 2 + _U16.unpack_from(buf, pos)[0]
        pos += 16                                      # msg_id, timestamp_ms
        self._text(buf, pos, stop, now_us)

    def _text(self, buf: bytes, pos: int, stop: int, now_us: int) -> None:
        """Check the stamped text ``buf[pos:stop]``: order, loss, duplicates, latency."""
        tally = self.tally
        if stop - pos != tally.text_bytes:
            tally.malformed += 1
            return
        head = buf[pos:pos + TEXT_HEADER_BYTES]
        if head.translate(None, _HEX_DIGITS) or buf[pos + TEXT_HEADER_BYTES:stop].strip(b"."):
            tally.malformed += 1
            return
        sender = int(head[0:8], 16)
        seq = int(head[8:16], 16)
        sent_us = int(head[16:32], 16)
        last = self._last.get(sender, -1)
        if seq > last:
            tally.gaps += seq - last - 1
            self._last[sender] = seq
            tally.messages += 1
            tally.hist[bucket_of(now_us - sent_us)] += 1
        elif seq == last:
            tally.duplicates += 1
        else:
            tally.reordered += 1


# -- IRC lines --------------------------------------------------------------------------------

MAX_LINE_BYTES = 64 * 1024              # an unterminated line longer than this breaks the stream
IRC_OTHER = 0x00                         # line counts, under the native types' numbers
IRC_PRIVMSG_CHANNEL = ROOM_MESSAGE
IRC_PRIVMSG_NICK = DIRECT_MESSAGE
IRC_PONG = ACK


class IrcStream(Stream):
    """One IRC connection's receive side; ``acks`` counts messages acknowledged by PONG.

    A line is split at LF (a CR before it is dropped). ``:prefix PRIVMSG target :text``: its
    text is checked (target ``#...``: counted as a channel message, else as to a nick);
    ``:prefix PONG server :N`` with N all digits: messages up to N are acknowledged; every
    other line is returned.
    """

    __slots__ = ("_acked_to",)

    def __init__(self, tally: Tally):
        super().__init__(tally)
        self._acked_to = 0

    def feed(self, data, now_us: int) -> list:
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        counts = self.tally.counts
        others = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl
            start, pos = pos, nl + 1
            kind = self._line(buf, start, end, now_us)
            counts[kind] += 1
            if kind == IRC_OTHER:
                others.append(buf[start:end])
        self._tail = buf[pos:]
        if len(self._tail) > MAX_LINE_BYTES:
            raise ValueError(f"a line of more than {MAX_LINE_BYTES} bytes")
        return others

    def _line(self, buf: bytes, start: int, end: int, now_us: int) -> int:
        if end <= start or buf[start] != 0x3A:            # ":"
            return IRC_OTHER
        sp1 = buf.find(b" ", start, end)
        if sp1 < 0:
            return IRC_OTHER
        sp2 = buf.find(b" ", sp1 + 1, end)
        if sp2 < 0:
            return IRC_OTHER
        command = buf[sp1 + 1:sp2]
        if command == b"PRIVMSG":
            text = buf.find(b" :", sp2, end)
            if text < 0:
                return IRC_OTHER
            self._text(buf, text + 2, end, now_us)
            return IRC_PRIVMSG_CHANNEL if buf[sp2 + 1:sp2 + 2] == b"#" else IRC_PRIVMSG_NICK
        if command == b"PONG":
            last = buf.rfind(b" ", sp2, end)
            token = buf[last + 1:end]
            if token[:1] == b":":
                token = token[1:]
            if token.isdigit() and token.isascii() and len(token) <= 18:
                acked = int(token)
                if acked > self._acked_to:
                    self.acks += acked - self._acked_to
                    self._acked_to = acked
            return IRC_PONG
        return IRC_OTHER


# -- the receive loop -------------------------------------------------------------------------

# One read's buffer. Smaller ones (16-64 KiB, to verify bytes still in L1) cost more per delivery
# here: the syscalls per byte outweigh the cache (docs/benchmarks.md, the generator's ceiling).
RECV_BYTES = 256 * 1024
READ_BUDGET_BYTES = 256 * 1024          # a socket's reads per poll stop at this many bytes
_READ_BITS = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


class Receiver:
    """Reads the ready sockets of one ``select.epoll`` set into their streams.

    ``poll(timeout)`` waits like ``select.epoll.poll`` (whole milliseconds; the compiled one
    waits to the microsecond, for the paced sender) and returns ``(fd, mask, frames,
    problem, now_us)`` tuples for the caller to act on:

    * a socket not registered here (or ready without input): ``(fd, mask, None, None, 0)``,
      the event as epoll gave it;
    * a registered socket that was read: reads of up to ``buffer_bytes`` each (less the
      stream's carried tail when that is at most half of it, which goes in front), each fed to
      its stream at once, until a read comes back short of its room (the socket is drained),
      brings nothing, or ``budget_bytes`` were read in this poll. ``mask`` is epoll's without
      the input bits, ``frames`` what its stream handed back over those reads (a list),
      ``problem`` ``None``, ``EOFError()`` (the peer closed), the ``OSError`` of the read, or
      the ``ValueError`` of a broken stream (then ``frames`` is empty; otherwise frames read
      before the peer closed come with the ``EOFError``), and ``now_us`` the time of the last
      read. It is returned only if any of these is non-empty or its stream counted Acks;
      otherwise the caller never hears of it.
    """

    def __init__(self, ep, buffer_bytes: int = RECV_BYTES,
                 budget_bytes: int = READ_BUDGET_BYTES):
        self.ep = ep
        self.streams: dict = {}
        self.buf = bytearray(max(buffer_bytes, 64))
        self.view = memoryview(self.buf)
        self.budget = max(budget_bytes, 1)
        self.last_rx_us = 0              # time of the last read that brought bytes

    def add(self, fd: int, stream: Stream) -> None:
        if fd < 0:
            raise ValueError(f"bad file descriptor {fd}")
        self.streams[fd] = stream

    def remove(self, fd: int) -> None:
        self.streams.pop(fd, None)

    def poll(self, timeout=None) -> list:
        out = []
        for fd, mask in self.ep.poll(-1 if timeout is None else timeout):
            stream = self.streams.get(fd)
            if stream is None or not mask & _READ_BITS:
                out.append((fd, mask, None, None, 0))
                continue
            frames, problem, now_us = self._read(fd, stream)
            mask &= ~_READ_BITS
            if frames or problem is not None or stream.acks or mask:
                out.append((fd, mask, frames, problem, now_us or time.monotonic_ns() // 1000))
        return out

    def _read(self, fd: int, stream: Stream) -> tuple:
        frames, problem, now_us, total = [], None, 0, 0
        size = len(self.buf)
        while True:
            # A tail of up to half the buffer goes in front of the new bytes (the compiled loop
            # copies it there): the read takes what room is left.
            held = stream.buffered_bytes
            room = size - held if held <= size // 2 else size
            try:
                n = os.readv(fd, [self.view[:room]])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                problem = exc
                break
            if n == 0:
                problem = EOFError()
                break
            now_us = self.last_rx_us = time.monotonic_ns() // 1000
            try:
                frames += stream.feed(self.view[:n], now_us)
            except ValueError as exc:
                frames, problem = [], exc
                break
            total += n
            if n < room or total >= self.budget:
                break
        return frames, problem, now_us
