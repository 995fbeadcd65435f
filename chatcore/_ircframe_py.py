"""Pure-Python IRC line framer and PRIVMSG reader: the specification of ``chatcore._ircframe``.

``chatcore.codec`` chooses between the two. IRC lines end in CR, LF or CRLF (clients send all
three); empty lines are skipped, so CRLF is one line end and a CR cut from its LF by a read
boundary changes nothing.

``read_privmsg`` recognises the commonest line of all, ``PRIVMSG target :text`` in its plain
form, so the front end can hand it to the hub without the general parser (``irc.message``)
and the command table; any other line gives None and takes the general way.
"""
from __future__ import annotations

import operator
import re

from .errors import LineTooLong

# The longest line the framer hands out, line end excluded: 8191 bytes of tags (with the '@'
# and the space after them) and 512 of message (with its CRLF; modern.ircdocs.horse, "Message
# tags"). Anything longer is junk whatever it holds, and the connection is dropped.
MAX_IRC_LINE_BYTES = 8191 + 510
# Compact the receive buffer only once this much has been consumed, so each byte is moved
# O(1) times however many short lines one read holds.
_COMPACT_AFTER_BYTES = 65536

_LINE_END = re.compile(rb"[\r\n]")
# What only the general parser and strip_formatting handle: C0 controls (NUL, formatting,
# CTCP's \x01), DEL, and C1 controls (U+0080-U+009F, \xc2\x80-\xc2\x9f in UTF-8).
_NOT_PLAIN = re.compile(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]")
_PRIVMSG = b"PRIVMSG "
# The longest plain PRIVMSG line, line end excluded: IRC's 512 bytes with CRLF (longer ones
# get 417 from the general parser).
MAX_PLAIN_PRIVMSG_BYTES = 510


class LineDecoder:
    """Splits a byte stream into IRC lines: ``receive_data`` buffers, ``next_line`` takes one.

    The search for a line end resumes where the last one stopped, so a long line arriving a
    byte at a time costs O(bytes). A line longer than ``max_line_bytes`` (line end excluded),
    or that many bytes without any line end, breaks the stream: ``next_line`` raises
    ``LineTooLong`` then and on every later call, after the good lines before it.
    """

    __slots__ = ("_max_line_bytes", "_buf", "_start", "_scan", "_error")

    def __init__(self, max_line_bytes: int = MAX_IRC_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._start = 0           # first byte not yet returned
        self._scan = 0            # no line end in _buf[_start:_scan]
        self._error: LineTooLong | None = None

    @property
    def max_line_bytes(self) -> int:
        """Longest line accepted, line end excluded; an int >= 1."""
        return self._max_line_bytes

    @max_line_bytes.setter
    def max_line_bytes(self, value: int) -> None:
        value = operator.index(value)
        if value < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max_line_bytes = value

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as lines (line ends included)."""
        return len(self._buf) - self._start

    def receive_data(self, data) -> None:
        """Buffer more of the stream (any bytes-like object)."""
        if self._start >= _COMPACT_AFTER_BYTES:
            del self._buf[:self._start]
            self._scan -= self._start
            self._start = 0
        self._buf += data

    def _too_long(self) -> LineTooLong:
        self._error = LineTooLong(f"line longer than {self._max_line_bytes} bytes")
        return self._error

    def next_line(self) -> bytes | None:
        """The next non-empty line without its line end, or None until one is complete."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        limit = self._max_line_bytes
        while True:
            start = self._start
            found = _LINE_END.search(buf, self._scan)
            if found is None:
                if len(buf) - start > limit:
                    raise self._too_long()
                self._scan = len(buf)
                return None
            end = found.start()
            if end - start > limit:
                raise self._too_long()
            self._start = self._scan = end + 1
            if self._start == len(buf):
                line = bytes(buf[start:end])
                buf.clear()
                self._start = self._scan = 0
            else:
                line = bytes(buf[start:end])
            if line:
                return line


class PlainPrivmsg:
    """A ``PRIVMSG target :text`` line read by ``read_privmsg``: one target (a channel or a
    nick, no list), no tags, no source, plain UTF-8 text (no control character)."""

    __slots__ = ("target", "text")

    def __init__(self, target: str, text: str):
        self.target = target
        self.text = text

    def __eq__(self, other) -> bool:
        return (type(other).__name__ == "PlainPrivmsg" and self.target == other.target
                and self.text == other.text)

    def __repr__(self) -> str:
        return f"PlainPrivmsg({self.target!r}, {self.text!r})"


def read_privmsg(line: bytes) -> PlainPrivmsg | None:
    """``line`` (line end removed) as a PlainPrivmsg when it is exactly ``PRIVMSG``, one
    space, a target without ``,`` or a leading ``:``, one space, ``:`` and a non-empty text,
    at most MAX_PLAIN_PRIVMSG_BYTES, all UTF-8 without control characters; else None (the
    general parser decides, with the same outcome for lines this would take)."""
    if not line.startswith(_PRIVMSG) or len(line) > MAX_PLAIN_PRIVMSG_BYTES:
        return None
    space = line.find(b" ", 8)
    if space <= 8 or line[8] == 0x3A or b"," in line[8:space]:      # 0x3A ':'
        return None
    if line[space + 1:space + 2] != b":" or len(line) == space + 2:
        return None
    if _NOT_PLAIN.search(line) is not None:
        return None
    try:
        target = line[8:space].decode("utf-8")
        text = line[space + 2:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return PlainPrivmsg(target, text)
