"""IRC text rules without a server: formatting codes, CTCP, server-time, labeled answers."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatcore.codec import find_forbidden
from chatcore.irc.caps import add_tags, labeled
from chatcore.irc.message import parse
from chatcore.irc.outlet import server_time, text_lines
from chatcore.irc.text import ctcp, parse_ctcp, strip_formatting


@given(st.text())
def test_stripped_text_always_passes_the_hub_text_rule(text):
    stripped = strip_formatting(text)
    assert find_forbidden(stripped) == -1
    assert strip_formatting(stripped) == stripped


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_text_without_control_characters_is_unchanged(text):
    assert strip_formatting(text) == text


def test_each_formatting_code_and_its_digits_go():
    assert strip_formatting("\x0312,04blue on red\x03 \x031,2x \x03,no") == "blue on red x ,no"
    assert strip_formatting("\x04ff0000,00ff00hex\x04") == "hex"
    assert strip_formatting("\x02b\x1di\x1fu\x1es\x11m\x16r\x0f") == "biusmr"
    assert strip_formatting("bell\x07 tab\t") == "bell\ufffd tab\t"


def test_ctcp_parsing():
    assert parse_ctcp("\x01ACTION waves\x01") == ("ACTION", "waves")
    assert parse_ctcp("\x01action waves") == ("ACTION", "waves")
    assert parse_ctcp("\x01VERSION\x01") == ("VERSION", "")
    assert parse_ctcp("plain") is None
    assert parse_ctcp("\x01") is None
    assert ctcp("PING", "123") == "\x01PING 123\x01"


def test_server_time_format():
    assert server_time(1796139029007) == "2026-12-01T15:30:29.007Z"
    assert server_time(1796139029999) == "2026-12-01T15:30:29.999Z"
    assert server_time(1796139030000) == "2026-12-01T15:30:30.000Z"


def test_actions_split_into_lines_that_fit():
    data = text_lines("PRIVMSG", "a!a@chatcore", "#r", "é" * 600, action=True)
    lines = data.split(b"\r\n")[:-1]
    assert all(len(line) + 2 <= 512 for line in lines)
    texts = [parse(line).params[-1] for line in lines]
    assert all(t.startswith("\x01ACTION ") and t.endswith("\x01") for t in texts)
    assert "".join(t[8:-1] for t in texts) == "é" * 600


def test_labeled_answers():
    assert add_tags(b":s PONG s x\r\n", b"label=1") == b"@label=1 :s PONG s x\r\n"
    assert add_tags(b"@time=t :s X\r\n", b"label=1") == b"@label=1;time=t :s X\r\n"
    assert labeled("a b", b"", "srv", b"") == b"@label=a\\sb :srv ACK\r\n"
    answer = labeled("L", b":s 1 x\r\n:s 2 x\r\n", "srv", b"").split(b"\r\n")[:-1]
    start, first, second, end = (parse(line) for line in answer)
    ref = start.params[0][1:]
    assert (start.command, start.tags, start.params[1]) == ("BATCH", {"label": "L"},
                                                            "labeled-response")
    assert first.tags == second.tags == {"batch": ref}
    assert (end.command, end.params) == ("BATCH", ["-" + ref])
