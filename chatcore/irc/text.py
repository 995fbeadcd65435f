"""IRC message text as chatcore text and back: formatting codes, CTCP.

IRC clients colour and embolden text with control characters (modern.ircdocs.horse,
"Formatting"), which the hub's text rule refuses (docs/protocol.md, "Text": no character a
terminal would act on). The front end strips them from what IRC users send, so their
coloured text is delivered as plain text to everyone; any other control character left
becomes U+FFFD. CTCP (``\\x01COMMAND args\\x01``) is split off before that.
"""
from __future__ import annotations

import re

# Bold, italics, underline, strikethrough, monospace, reverse, reset, and colours with their
# (optional) ``fg[,bg]`` digits: mIRC colours \x03 take 1-2 digits each, hex colours \x04
# take 6 hex digits each.
_FORMATTING = re.compile(
    "\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    "|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
# What the text rule refuses (chatcore._codec_py.FORBIDDEN_TEXT_CHARS) minus the formatting
# codes already gone: shown as U+FFFD rather than refusing the whole message.
_OTHER_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
CTCP_DELIMITER = "\x01"

MAX_REALNAME_CHARS = 100            # NAMELEN in ISUPPORT: USER and SETNAME realnames


def strip_formatting(text: str) -> str:
    """``text`` with IRC formatting removed and other control characters as U+FFFD.

    Fast path: most lines hold no control character at all.
    """
    if text.isprintable():
        return text
    text = _FORMATTING.sub("", text)
    return _OTHER_CONTROLS.sub("\ufffd", text)


def parse_ctcp(text: str) -> tuple[str, str] | None:
    """(COMMAND, arguments) of a CTCP message, or None for plain text. The closing \\x01
    is optional, as clients send both forms."""
    if not text.startswith(CTCP_DELIMITER) or len(text) < 2:
        return None
    body = text[1:]
    if body.endswith(CTCP_DELIMITER):
        body = body[:-1]
    command, _, args = body.partition(" ")
    if not command:
        return None
    return command.upper(), args


def ctcp(command: str, args: str = "") -> str:
    return f"\x01{command} {args}\x01" if args else f"\x01{command}\x01"
