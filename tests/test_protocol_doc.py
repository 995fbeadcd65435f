"""docs/protocol.md must agree with the code, so the wire documentation cannot drift.

Checked against the code: the message-type table (code, name, direction, fields), the list
entry table, the error-code table, the reason table, and every hex dump in a ```frames
block (each must be exactly what ``encode_event`` produces today).

A ```frames block holds one or more frames. A frame starts with a line
``C->S Event(field=value, ..., request_id=N)`` (or ``S->C``); the lines after it are its
bytes as two-digit hex, with ``#`` starting a comment.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chatcore import events as ev
from chatcore.errors import ErrorCode
from chatcore.protocol import (BOTH, C2S, DEFAULT_MAX_FRAME_BYTES, LIST_ENTRIES,
                               PROTOCOL_VERSION, S2C, SCHEMA, encode_event)

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

DIRECTIONS = {C2S: "C→S", S2C: "S→C", BOTH: "both"}
ARROWS = {"C->S": C2S, "S->C": S2C}

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$", re.M)
_FENCE = re.compile(r"^```frames[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_HEX_BYTE = re.compile(r"[0-9a-fA-F]{2}")


def section(title: str) -> str:
    """The text under the first heading named ``title``, up to the next heading of its level."""
    headings = list(_HEADING.finditer(DOC))
    for index, match in enumerate(headings):
        if match.group(2) == title:
            level = len(match.group(1))
            end = len(DOC)
            for later in headings[index + 1:]:
                if len(later.group(1)) <= level:
                    end = later.start()
                    break
            return DOC[match.end():end]
    raise AssertionError(f"docs/protocol.md has no heading {title!r}")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table body row in ``text`` (header and separator rows dropped)."""
    rows = []
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        if index + 1 < len(lines) and re.fullmatch(r"\|[-:| ]+\|", lines[index + 1]):
            continue                        # a header row
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def fields_cell(fields) -> str:
    return ", ".join(f"`{name}` {kind}" for name, kind in fields) or "—"


# -- tables ------------------------------------------------------------------------------------

def test_message_type_table_matches_schema():
    documented = {}
    for cells in table_rows(section("Message types")):
        code, name, direction, fields = cells
        name = re.sub(r"^\[(\w+)\]\(#\w+\)$", r"\1", name)
        assert code not in documented, f"type {code} is listed twice"
        documented[code] = (name, direction, fields)
    expected = {f"`0x{code:02X}`": (cls.__name__, DIRECTIONS[direction], fields_cell(fields))
                for code, direction, cls, fields in SCHEMA}
    assert documented == expected


def test_every_message_type_has_its_own_section():
    for _, _, cls, _ in SCHEMA:
        section(cls.__name__)


def test_list_entry_table_matches_schema():
    documented = {}
    for cells in table_rows(section("Field kinds")):
        if cells[0].startswith("`") and cells[0].endswith("[]`"):
            documented[cells[0].strip("`")] = cells[1]
    expected = {kind: fields_cell(fields) for kind, (_, fields) in LIST_ENTRIES.items()}
    assert documented == expected


def test_error_code_table_matches_error_codes():
    documented = {}
    for cells in table_rows(section("Error codes")):
        number, name = int(cells[0]), cells[1].strip("`")
        assert name not in documented, f"{name} is listed twice"
        documented[name] = number
    assert documented == {code.name: code.value for code in ErrorCode}


def test_no_stale_constant_names_in_the_prose():
    """An upper-case name in backquotes is an error code or reason that exists today."""
    mentioned = set(re.findall(r"`([A-Z][A-Z_]+)`", DOC))
    known = {code.name for code in ErrorCode} | {reason.name for reason in ev.Reason}
    not_codes = {"UNKNOWN_RTT", "TCP_NODELAY", "SCHEMA", "ALICE"}
    assert mentioned - known - not_codes == set()


def test_reason_table_matches_reason_enum():
    documented = {}
    for cells in table_rows(section("Reasons")):
        documented[cells[1].strip("`")] = int(cells[0])
    assert documented == {reason.name: reason.value for reason in ev.Reason}


def test_constants_quoted_in_the_doc():
    assert f"protocol version **{PROTOCOL_VERSION}**" in DOC
    assert f"| `max_frame_bytes` | {DEFAULT_MAX_FRAME_BYTES} |" in DOC
    assert f"0x{ev.UNKNOWN_RTT:08X}" in DOC


# -- hex dumps ---------------------------------------------------------------------------------

def _literal(node: ast.expr):
    """A value from the doc's event notation: literals, tuples, lists, nested events."""
    if isinstance(node, ast.Call):
        return _event(node)
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(item) for item in node.elts)
    return ast.literal_eval(node)


def _event(node: ast.expr):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and isinstance(getattr(ev, node.func.id, None), type)):
        raise ValueError(f"not an event: {ast.unparse(node)}")
    cls = getattr(ev, node.func.id)
    return cls(*[_literal(arg) for arg in node.args],
               **{kw.arg: _literal(kw.value) for kw in node.keywords})


def parse_frames(block: str) -> list:
    """``(arrow, event source, bytes)`` for every frame in a ```frames block."""
    frames = []
    for number, line in enumerate(block.splitlines(), 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        arrow = content.split(None, 1)[0]
        if arrow in ARROWS:
            frames.append([arrow, content.split(None, 1)[1], bytearray()])
            continue
        tokens = content.split()
        if not frames or not all(_HEX_BYTE.fullmatch(token) for token in tokens):
            raise AssertionError(f"bad line {number} in a frames block: {line!r}")
        frames[-1][2] += bytes.fromhex("".join(tokens))
    return [(arrow, source, bytes(data)) for arrow, source, data in frames]


DUMPS = [frame for block in _FENCE.findall(DOC) for frame in parse_frames(block)]
_DIRECTION_OF = {cls: direction for _, direction, cls, _ in SCHEMA}


def test_the_doc_has_hex_dumps():
    sources = {source.split("(", 1)[0] for _, source, _ in DUMPS}
    assert {"Hello", "SendRoom", "Welcome", "RoomMessage", "Ack", "Ping", "Pong"} <= sources


@pytest.mark.parametrize("arrow, source, data", DUMPS, ids=[source for _, source, _ in DUMPS])
def test_hex_dump_is_what_encode_event_produces(arrow, source, data):
    event = _event(ast.parse(source, mode="eval").body)
    assert data.hex(" ") == encode_event(event).hex(" ")
    direction = _DIRECTION_OF[type(event)]
    assert direction in (BOTH, ARROWS[arrow]), f"{type(event).__name__} is never sent {arrow}"
