"""The IRC client protocol, sans-IO, in the shape the connection's input loop expects:
``receive_data`` buffers, ``next_event`` gives a ``Message``, a ``PlainPrivmsg`` (the
commonest line, ``PRIVMSG target :text``, read by the compiled framer without the general
parser), a ``BadLine`` to answer, or NEED_DATA, and raises a fatal ProtocolError when the
stream is junk."""
from __future__ import annotations

from dataclasses import dataclass

from ..codec import LineDecoder, PlainPrivmsg, read_privmsg  # noqa: F401 - re-exported
from ..errors import ErrorCode, LineTooLong, ProtocolError
from ..protocol import NEED_DATA
from .message import MessageError, parse


@dataclass(slots=True)
class BadLine:
    """A line that is no message: answered with ``numeric`` (none when it is empty) and
    dropped; the stream goes on."""
    numeric: str
    command: str
    text: str


class IrcProtocol:
    __slots__ = ("lines",)

    def __init__(self):
        self.lines = LineDecoder()

    @property
    def buffered_bytes(self) -> int:
        return self.lines.buffered_bytes

    def receive_data(self, data) -> None:
        self.lines.receive_data(data)

    def discard_input(self) -> None:
        """Drop what is buffered (a closing connection handles no more input)."""
        self.lines = LineDecoder()

    def next_event(self):
        try:
            line = self.lines.next_line()
        except LineTooLong as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"Input line too long ({exc.message})",
                                fatal=True) from None
        if line is None:
            return NEED_DATA
        return self.event_of(line)

    def event_of(self, line: bytes):
        """The event of one line ``lines`` gave (``next_event`` is next_line + this; the
        lane, chatcore.lane, hands lines back through it)."""
        plain = read_privmsg(line)
        if plain is not None:
            return plain
        try:
            return parse(line)
        except MessageError as exc:
            return BadLine(exc.numeric, exc.command, exc.text)
