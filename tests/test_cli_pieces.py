"""Unit tests of the client's pure pieces: conversations and unread state, safe text,
splitting long messages, completion and the drawing of lines."""
from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from chatcore.cli.actions import list_glob, split_text
from chatcore.cli.completion import ChatCompleter
from chatcore.cli.conversations import Conversations, Target, mentions
from chatcore.cli.display import Display, colour_wanted, nick_colour, to_ansi, wrap
from chatcore.cli.formatting import CONTINUATION, format_text, preview, record, safe_text

pytestmark = pytest.mark.timeout(30)

LOBBY, DEV, BOB = Target("room", "lobby"), Target("room", "dev"), Target("user", "bob")


# -- conversations ------------------------------------------------------------------------------

def test_unread_counts_and_mentions_for_the_others_only():
    convs = Conversations()
    convs.switch(LOBBY)
    convs.open(DEV)
    convs.note(LOBBY, {"text": "here"}, mention=True)
    convs.note(DEV, {"text": "a"})
    convs.note(DEV, {"text": "b"}, mention=True)
    convs.note(BOB, {"text": "psst"})                   # a new direct chat opens itself
    assert [(n, c.target.label, c.unread, c.mentioned) for n, c in convs.activity()] == [
        (2, "#dev", 2, True), (3, "bob", 1, False)]
    convs.switch(DEV)
    assert convs.get(DEV).unread == 0 and not convs.get(DEV).mentioned
    assert len(convs.get(DEV).log) == 2


def test_find_by_number_room_or_name_and_step_wraps():
    convs = Conversations()
    for target in (LOBBY, DEV, BOB):
        convs.open(target)
    assert convs.find("2").target == DEV
    assert convs.find("#LOBBY").target == LOBBY
    assert convs.find("Bob").target == BOB
    assert convs.find("dev").target == DEV            # a room without its '#'
    assert convs.find("4") is None and convs.find("0") is None
    assert convs.step(1).target == LOBBY               # nothing active: the first
    convs.switch(BOB)
    assert convs.step(1).target == LOBBY and convs.step(-1).target == DEV


def test_a_room_we_left_keeps_nothing_and_closing_the_active_one_leaves_none():
    convs = Conversations()
    convs.switch(LOBBY)
    convs.close(LOBBY)
    convs.note(LOBBY, {"text": "late"})
    assert convs.items == [] and convs.active is None


def test_rename_moves_the_chat():
    convs = Conversations()
    convs.switch(BOB)
    convs.rename("BOB", "robert")
    assert convs.active == Target("user", "robert") and convs.chats == ["robert"]


@pytest.mark.parametrize("text, expected", [
    ("hi alice", True), ("Alice: look", True), ("@alice!", True), ("alice.", True),
    ("alicelike", False), ("malice", False), ("alice-2 is here", False), ("", False)])
def test_mentions(text, expected):
    assert mentions(text, "alice") is expected


# -- safe text ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("bell\x07", "bell^G"), ("esc\x1b[31m", "esc^[[31m"), ("cr\r", "cr^M"), ("del\x7f", "del^?"),
    ("c1\x85", "c1<U+0085>"), ("rtl\u202eabc", "rtl<U+202E>abc"), ("iso\u2066", "iso<U+2066>"),
    ("tab\there", "tab here"), ("sep\u2028next", "sep\nnext"), ("lone\ud800", "lone<U+D800>"),
    ("emoji \U0001f600 ok", "emoji \U0001f600 ok"), ("zwj \u200d", "zwj \u200d")])
def test_safe_text(raw, shown):
    assert safe_text(raw) == shown


@given(st.text())
def test_safe_text_never_lets_a_control_character_through(text):
    shown = safe_text(text, newlines=False)
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in shown)


TS = int(time.mktime((2026, 1, 2, 10, 46, 0, 0, 0, -1)) * 1000)


def test_a_multi_line_message_has_continuation_lines():
    rec = record("message", TS, **{"from": "bob"}, room="lobby",
                 text="innocent\n10:46:30 bob -> #lobby: I resign")
    assert format_text(rec) == ("10:46:00 bob -> #lobby: innocent\n"
                                "         | 10:46:30 bob -> #lobby: I resign")


def test_notices_echo_only_a_preview_of_your_text():
    rec = record("not_delivered", TS, room="lobby", text="x" * 8300 + "\nsecond", reason="r")
    line = format_text(rec)
    assert "\n" not in line and len(line) < 150 and "(8307 bytes)" in line
    assert preview("two\nlines") == "two^Jlines"


# -- splitting ----------------------------------------------------------------------------------

def test_split_prefers_a_space_and_never_breaks_a_character():
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_text("é" * 6, 5) == ["éé", "éé", "éé"]


@given(st.text(min_size=1), st.integers(min_value=4, max_value=50))
def test_split_parts_fit_and_keep_the_text(text, limit):
    parts = split_text(text, limit)
    assert all(len(p.encode("utf-8", "surrogatepass")) <= limit for p in parts)
    joined = "".join(parts)
    assert len(joined) >= len(text) - len(parts)       # at most one break dropped a part
    assert set(joined) <= set(text)


# -- completion ---------------------------------------------------------------------------------

def complete(text: str) -> list[str]:
    completer = ChatCompleter(lambda: ["bob", "Bea", "carol"], lambda: ["lobby", "dev"])
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_completion():
    assert complete("/jo") == ["/join "]
    assert "/switch " in complete("/sw")
    assert complete("/chat b") == ["bob", "Bea"]
    assert complete("b") == ["bob: ", "Bea: "]        # first word of a line: addressed
    assert complete("hi @c") == ["carol"]
    assert complete("/join #l") == ["#lobby"]
    assert complete("/switch de") == ["#dev"]
    assert complete("nobody z") == []


# -- drawing ------------------------------------------------------------------------------------

def test_nick_colours_are_stable_and_colour_follows_no_color():
    assert nick_colour("Bob") == nick_colour("bob")
    assert colour_wanted({"TERM": "xterm"}, True)
    assert not colour_wanted({"TERM": "xterm", "NO_COLOR": "1"}, True)
    assert not colour_wanted({"TERM": "dumb"}, True)
    assert not colour_wanted({"TERM": "xterm"}, False)


def test_own_name_highlighted_and_plain_without_escapes():
    display = Display(lambda: "alice", colour=True)
    rec = record("message", TS, **{"from": "bob"}, room="lobby", text="hey Alice!")
    fragments = display.fragments(rec)
    assert ("bold reverse", "Alice") in fragments
    assert to_ansi(fragments, escapes=False) == "10:46:00 bob -> #lobby: hey Alice!"


def test_long_lines_wrap_into_continuation_lines():
    line = [("", "10:46:00 bob -> #lobby: " + "x" * 100)]
    text = to_ansi(wrap(line, 40), escapes=False)
    rows = text.split("\n")
    assert all(len(row) <= 40 for row in rows)
    assert all(row.startswith(CONTINUATION) for row in rows[1:])


def test_list_patterns():
    assert list_glob(None) == "" and list_glob("") == ""
    assert list_glob("dev") == "dev*" and list_glob("#dev") == "dev*"
    assert list_glob("*ops*") == "*ops*" and list_glob("a?c") == "a?c"
