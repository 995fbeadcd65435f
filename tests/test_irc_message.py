"""IRC messages parsed and encoded, and hub text turned into IRC lines."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.irc.message import Message, MessageError, encode, parse
from chatcore.irc.outlet import text_lines


@pytest.mark.parametrize("line, expected", [
    (b"NICK alice", Message("NICK", ["alice"])),
    (b"privmsg #a :hello  world ", Message("PRIVMSG", ["#a", "hello  world "])),
    (b"USER u 0 * :Real Name", Message("USER", ["u", "0", "*", "Real Name"])),
    (b":n!u@h PRIVMSG #a :x", Message("PRIVMSG", ["#a", "x"], "n!u@h")),
    (b"JOIN   #a   key  ", Message("JOIN", ["#a", "key"])),
    (b"PRIVMSG #a ::)", Message("PRIVMSG", ["#a", ":)"])),
    (b"PRIVMSG #a :", Message("PRIVMSG", ["#a", ""])),
    (b"@time=2020;x=a\\sb\\:c\\\\ CAP LS", Message("CAP", ["LS"], "",
                                               {"time": "2020", "x": "a b;c\\"})),
    (b"@flag PING x", Message("PING", ["x"], "", {"flag": ""})),
    ("PRIVMSG #a :héllo".encode(), Message("PRIVMSG", ["#a", "héllo"])),
])
def test_parse(line, expected):
    assert parse(line) == expected


@pytest.mark.parametrize("line, numeric, command", [
    (b"PRIVMSG a :\x00", "400", "PRIVMSG"),
    (b"PRIVMSG a :\xff", "INVALID_UTF8", "PRIVMSG"),
    (b":src NICK \xc3", "INVALID_UTF8", "NICK"),
    (b"@t=\xff PING x", "INVALID_UTF8", "PING"),
    (b"X " + b"y" * 509, "417", ""),
    (b"@" + b"t" * 8190 + b" PING x", "417", ""),
    (b":onlysource", "", ""),
    (b"@tagsonly", "", ""),
])
def test_parse_errors(line, numeric, command):
    with pytest.raises(MessageError) as error:
        parse(line)
    assert error.value.numeric == numeric
    assert error.value.command == command


def test_line_length_limits_are_inclusive():
    assert parse(b"X " + b"y" * 508).command == "X"                  # 510 + CRLF = 512
    assert parse(b"@" + b"t" * 8189 + b" PING x").command == "PING"  # 8191 with '@' and ' '


def test_encode_uses_trailing_only_when_needed():
    assert encode("PRIVMSG", "#a", "hi", source="n!u@h") == b":n!u@h PRIVMSG #a hi\r\n"
    assert encode("PRIVMSG", "#a", "hi there") == b"PRIVMSG #a :hi there\r\n"
    assert encode("PRIVMSG", "#a", "") == b"PRIVMSG #a :\r\n"
    assert encode("PRIVMSG", "#a", ":)") == b"PRIVMSG #a ::)\r\n"
    assert encode("PING", tags={"time": "a b;c"}) == b"@time=a\\sb\\:c PING\r\n"


@given(st.lists(st.text(st.characters(blacklist_characters="\r\n\0 ", min_codepoint=33,
                                      blacklist_categories=("Cs",)),
                        min_size=1, max_size=8), max_size=5),
       st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
               max_size=40))
def test_encode_then_parse_round_trips(middles, trailing):
    params = [m for m in middles if not m.startswith(":")] + [trailing]
    line = encode("PRIVMSG", *params, source="a!b@c")
    assert parse(line[:-2]) == Message("PRIVMSG", params, "a!b@c")


def test_text_lines_split_on_lf_and_fit_512_bytes():
    data = text_lines("PRIVMSG", "bob!bob@chatcore", "#r", "one\ntwo\n\nthree")
    assert data.split(b"\r\n")[:-1] == [b":bob!bob@chatcore PRIVMSG #r :one",
                                        b":bob!bob@chatcore PRIVMSG #r :two",
                                        b":bob!bob@chatcore PRIVMSG #r :three"]
    long_text = "é" * 1000 + "x"
    lines = text_lines("PRIVMSG", "bob!bob@chatcore", "#r", long_text).split(b"\r\n")[:-1]
    assert all(len(line) + 2 <= 512 for line in lines)
    assert "".join(parse(line).params[1] for line in lines) == long_text


def test_text_lines_replace_what_irc_cannot_carry():
    assert text_lines("PRIVMSG", "a!a@c", "b", "x\ry\0z") == \
        ":a!a@c PRIVMSG b :x\ufffdy\ufffdz\r\n".encode()
