"""How the interactive client draws a record: nick colours, your own name highlighted, and
lines wrapped to the terminal's width as continuation lines. Pure: fragments in, fragments out.

Wrapping here, not in the terminal, is part of safe rendering: a message padded to the width
of the screen cannot make its second half start at column 0 and pass for a line of its own.
"""
from __future__ import annotations

import re
import zlib

from prompt_toolkit.utils import get_cwidth

from .conversations import mentions
from .formatting import CONTINUATION, clock, format_text, safe_record, where_label

# Stable per name (a hash, not the order seen), so bob is the same colour in every window and
# every run. Bright and dark variants of six hues; no black or white, which vanish on one of
# the two usual backgrounds.
NICK_COLOURS = ("ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan", "ansired",
                "ansibrightgreen", "ansibrightyellow", "ansibrightblue", "ansibrightmagenta",
                "ansibrightcyan", "ansibrightred")
OWN_NAME_STYLE = "bold"
MENTION_STYLE = "bold reverse"
PROBLEM_STYLE = "ansired"
MESSAGE_KINDS = ("message", "sent", "action")

Fragments = list[tuple[str, str]]


def colour_wanted(environ, is_terminal: bool) -> bool:
    """Colour only on a terminal that has it, and never when NO_COLOR is set (no-color.org)."""
    if environ.get("NO_COLOR"):
        return False
    return is_terminal and environ.get("TERM", "dumb") not in ("", "dumb")


def nick_colour(name: str) -> str:
    return NICK_COLOURS[zlib.crc32(name.casefold().encode("utf-8", "replace"))
                        % len(NICK_COLOURS)]


class Display:
    def __init__(self, own_name, colour: bool):
        self.own_name = own_name            # a callable: the name changes with /nick
        self.colour = colour                # False: bold and reverse only, no colours

    def _nick(self, name: str) -> Fragments:
        if name.casefold() == self.own_name().casefold():
            return [(OWN_NAME_STYLE, name)]
        return [(nick_colour(name) if self.colour else "", name)]

    def _text(self, text: str) -> Fragments:
        """Message text with every mention of your name highlighted."""
        me = self.own_name()
        if not me or not mentions(text, me):
            return [("", text)]
        pattern = re.compile(r"(?<![\w.-])" + re.escape(me) + r"(?![\w-])", re.IGNORECASE)
        fragments: Fragments = []
        position = 0
        for match in pattern.finditer(text):
            fragments += [("", text[position:match.start()]), (MENTION_STYLE, match.group())]
            position = match.end()
        return fragments + [("", text[position:])]

    def fragments(self, rec: dict) -> Fragments:
        kind = rec["type"]
        if kind not in MESSAGE_KINDS:
            line = format_text(rec, multiline=True)
            problem = self.colour and line[9:11] == "!!"
            return [(PROBLEM_STYLE if problem else "", line)]
        shown = safe_record(rec)
        head: Fragments = [("", clock(rec["ts"]) + (" * " if kind == "action" else " "))]
        where = ([("", "#"), *self._room(shown["room"])] if shown.get("room")
                 else self._nick(shown.get("to", "?")))
        return head + self._nick(shown["from"]) + [("", " -> ")] + where + [("", ": ")] \
            + self._text(shown["text"])

    def _room(self, room: str) -> Fragments:
        return [("bold" if self.colour else "", room)]


_SGR = {"bold": "1", "underline": "4", "reverse": "7"}
_SGR.update({f"ansi{name}": str(30 + i) for i, name in enumerate(
    ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "gray"))})
_SGR.update({f"ansibright{name}": str(90 + i) for i, name in enumerate(
    ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"))})


def to_ansi(fragments: Fragments, escapes: bool = True) -> str:
    """The text of ``fragments`` with their styles as SGR sequences (none if not ``escapes``).

    Only styles this module hands out are known; the text itself has been through
    ``safe_text``, so these are the only escape sequences in it.
    """
    out = []
    for style, text in fragments:
        codes = [_SGR[word] for word in style.split() if word in _SGR]
        if escapes and codes and text:
            out.append(f"\x1b[{';'.join(codes)}m{text}\x1b[0m")
        else:
            out.append(text)
    return "".join(out)


def wrap(fragments: Fragments, width: int) -> Fragments:
    """``fragments`` broken into lines of at most ``width`` columns; a broken line goes on
    as a continuation line."""
    if width <= len(CONTINUATION) + 10:
        return fragments
    wrapped: Fragments = []
    column = 0
    for style, text in fragments:
        piece: list[str] = []
        for char in text:
            if char == "\n":
                piece.append(char)
                column = 0
                continue
            char_width = get_cwidth(char)
            if column + char_width > width:
                piece.append("\n" + CONTINUATION)
                column = len(CONTINUATION)
            piece.append(char)
            column += char_width
        wrapped.append((style, "".join(piece)))
    return wrapped
