"""IRC messages, sans-IO: one line of bytes <-> ``Message`` (modern.ircdocs.horse).

``[@tags] [:source] COMMAND [params...] [:trailing]``. Lines are UTF-8; tag values use the
IRCv3 escapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The non-tag part of a line, CRLF included (RFC 1459 section 2.3; modern.ircdocs.horse).
MAX_LINE_BYTES = 512
# The tag part of a line: the "@", the tags and the space after them (IRCv3 message-tags).
MAX_TAGS_BYTES = 8191

_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


# The IRCv3 UTF8ONLY standard reply's code: ``FAIL <command> INVALID_UTF8 :text``.
INVALID_UTF8 = "INVALID_UTF8"


class MessageError(ValueError):
    """A line that is no IRC message; ``numeric`` and ``text`` say what to answer."""

    def __init__(self, numeric: str, text: str, command: str = ""):
        super().__init__(text)
        self.numeric = numeric
        self.text = text
        self.command = command


@dataclass(slots=True)
class Message:
    command: str                                    # upper-cased; numerics as 3 digits
    params: list[str] = field(default_factory=list)
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def parse(line: bytes) -> Message:
    """One line (line end removed) as a Message; raises MessageError for what cannot be one.

    417 for a part too long, 400 for a NUL byte, ``INVALID_UTF8`` (answered with IRCv3's
    ``FAIL <command> INVALID_UTF8``, UTF8ONLY) for invalid UTF-8 (the command is named when
    it can be read), and an empty command gives MessageError with numeric "".
    """
    tags: dict[str, str] = {}
    body = line
    if line[:1] == b"@":
        space = line.find(b" ")
        if space < 0:
            raise MessageError("", "tags without a command")
        if space + 1 > MAX_TAGS_BYTES:
            raise MessageError("417", "Input line was too long")
        raw_tags, body = line[1:space], line[space + 1:].lstrip(b" ")
    else:
        raw_tags = b""
    if len(body) + 2 > MAX_LINE_BYTES:
        raise MessageError("417", "Input line was too long")
    command_guess = _command_guess(body)
    if b"\x00" in line:
        raise MessageError("400", "Line contains a NUL byte", command_guess)
    try:
        text = body.decode("utf-8")
        if raw_tags:
            tags = _parse_tags(raw_tags.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError(INVALID_UTF8, "Line is not valid UTF-8: this server takes UTF-8 "
                           "only (UTF8ONLY)", command_guess) from None
    source = ""
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    command, _, rest = text.partition(" ")
    if not command:
        raise MessageError("", "no command")
    params: list[str] = []
    while rest:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest[0] == ":":
            params.append(rest[1:])
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return Message(command.upper(), params, source, tags)


def _command_guess(body: bytes) -> str:
    """The command word of a line that cannot be decoded, for the error reply."""
    words = body.split(b" ")
    word = words[1] if body[:1] == b":" and len(words) > 1 else words[0]
    guess = word.decode("ascii", "replace").upper()[:32]
    return guess if guess.isascii() and guess.isalnum() else "*"


def _parse_tags(raw: str) -> dict[str, str]:
    tags = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = _unescape(value)
    return tags


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(_TAG_UNESCAPES.get(following, following))
        else:
            out.append(char)
    return "".join(out)


def escape_tag_value(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def encode(command: str, *params: str, source: str = "", tags: dict | None = None) -> bytes:
    """One line with its CRLF. The last parameter is sent as trailing (':') when it must be:
    empty, starting with ':' or holding a space. Parameters must hold no CR, LF or NUL."""
    parts = []
    if tags:
        parts.append("@" + ";".join(k if v == "" else f"{k}={escape_tag_value(v)}"
                                     for k, v in tags.items()))
    if source:
        parts.append(":" + source)
    parts.append(command)
    if params:
        parts.extend(params[:-1])
        last = params[-1]
        if not last or last[0] == ":" or " " in last:
            last = ":" + last
        parts.append(last)
    return (" ".join(parts) + "\r\n").encode("utf-8")
