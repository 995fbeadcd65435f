"""Validation of names and texts, and the small helpers every part of the hub shares."""
from __future__ import annotations

import re
import secrets

from .. import events as ev
from ..codec import find_forbidden
from ..errors import ChatError, ErrorCode

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+\Z")
QUOTE_MAX_CHARS = 40            # client text echoed in an error is cut to this
RESUME_TOKEN_BYTES = 24         # 192 random bits: not guessable, short on the wire


# The room key a join gives for a member continuing its membership: a session resumed from
# another node that the shared state still has in the room. The room's admission modes
# (+i +k +l, bans) are for newcomers; it passes them (``Moderation._admit``).
CONTINUING = object()


def check_text(what: str, text: str, limit_bytes: int, *, empty_ok: bool = False) -> None:
    """Raise TEXT_INVALID when ``text`` is empty (unless allowed), longer than
    ``limit_bytes`` in UTF-8, or holds a character that is not text."""
    if not text:
        if empty_ok:
            return
        raise ChatError(ErrorCode.TEXT_INVALID, f"{what} text is empty")
    # UTF-8 is at most 4 bytes a character: skip the encode for all short texts.
    if len(text) * 4 > limit_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit_bytes:
            raise ChatError(ErrorCode.TEXT_INVALID,
                            f"{what} is {size} bytes; the limit is {limit_bytes}")
    # The text rule (docs/protocol.md, "Text"): no character a terminal would act on.
    position = find_forbidden(text)
    if position >= 0:
        code_point = ord(text[position])
        kind = "a lone surrogate" if 0xD800 <= code_point <= 0xDFFF else "a control character"
        raise ChatError(ErrorCode.TEXT_INVALID,
                        f"{what} holds U+{code_point:04X} ({kind}) at position "
                        f"{position}; of the control characters only LF and TAB "
                        f"are allowed")


def answer_or_return(done, result):
    """A request's result for a caller that passed ``done`` (given) or not (returned)."""
    if done is None:
        return result
    done(result)
    return None


def check_identifier(what: str, name: str, limit: int, code: ErrorCode) -> None:
    """Names and room names: 1..limit characters of letters, digits, '_', '-' and '.'."""
    if not name:
        raise ChatError(code, f"{what} is empty")
    if len(name) > limit:
        raise ChatError(code, f"{what} is {len(name)} characters long; the limit is {limit}")
    if not _NAME_CHARS.match(name):
        raise ChatError(code, f"{what} {quote(name)} may only contain letters, digits, "
                              f"'_', '-' and '.'")


def quote(value: str) -> str:
    """``value`` for an error message: quoted, and cut short so an error about a huge name
    is not itself huge."""
    if len(value) > QUOTE_MAX_CHARS:
        return repr(value[:QUOTE_MAX_CHARS]) + "..."
    return repr(value)


def new_token() -> str:
    return secrets.token_urlsafe(RESUME_TOKEN_BYTES)


def rtt_us(rtt_seconds: float | None) -> int:
    if rtt_seconds is None:
        return ev.UNKNOWN_RTT
    return min(int(rtt_seconds * 1_000_000), ev.UNKNOWN_RTT - 1)
