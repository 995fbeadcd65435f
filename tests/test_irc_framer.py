"""The IRC line framer: both implementations, whole, byte at a time and split everywhere."""
from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.codec import ircframe_c, ircframe_py
from chatcore.errors import LineTooLong

_MISSING = ircframe_c is None and not os.environ.get("CHATCORE_REQUIRE_EXTENSIONS")


@pytest.fixture(scope="session", params=[
    pytest.param("python", id="python"),
    pytest.param("cython", id="cython", marks=pytest.mark.skipif(
        _MISSING, reason="chatcore._ircframe is not built")),
])
def framer(request):
    """One implementation module of the IRC framer."""
    if request.param == "python":
        return ircframe_py
    if ircframe_c is None:
        pytest.fail("CHATCORE_REQUIRE_EXTENSIONS is set but chatcore._ircframe is not built",
                    pytrace=False)
    return ircframe_c


def run(module, chunks, max_line_bytes=None):
    """Every line the framer gives for ``chunks`` fed in turn, then the error if any."""
    decoder = (module.LineDecoder() if max_line_bytes is None
               else module.LineDecoder(max_line_bytes))
    out = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (line := decoder.next_line()) is not None:
                out.append(line)
    except LineTooLong as exc:
        out.append(exc)
    return out, decoder.buffered_bytes if not out or not isinstance(out[-1], LineTooLong) else -1


def test_cr_lf_and_crlf_all_end_lines(framer):
    assert run(framer, [b"NICK a\r\nUSER b\nPING c\rQUIT\r\n"])[0] == [
        b"NICK a", b"USER b", b"PING c", b"QUIT"]


def test_empty_lines_are_skipped(framer):
    assert run(framer, [b"\r\n\n\r\rPING x\r\n\r\n"]) == ([b"PING x"], 0)


def test_a_line_cut_across_many_reads_is_one_line(framer):
    data = b"PRIVMSG #room :hello there\r\n"
    assert run(framer, [bytes([b]) for b in data]) == ([data[:-2]], 0)


def test_crlf_split_between_reads_is_one_line_end(framer):
    assert run(framer, [b"PING a\r", b"\nPING b\r", b"\n"]) == ([b"PING a", b"PING b"], 0)


def test_incomplete_line_waits(framer):
    decoder = framer.LineDecoder()
    decoder.receive_data(b"PING partial")
    assert decoder.next_line() is None
    assert decoder.buffered_bytes == 12
    decoder.receive_data(b"ly\n")
    assert decoder.next_line() == b"PING partially"
    assert decoder.buffered_bytes == 0


def test_line_at_the_limit_passes_and_one_more_byte_breaks_the_stream(framer):
    assert run(framer, [b"x" * 20 + b"\n"], 20)[0] == [b"x" * 20]
    lines, _ = run(framer, [b"ok\n" + b"x" * 21 + b"\nnever\n"], 20)
    assert lines == [b"ok", LineTooLong("line longer than 20 bytes")]


def test_junk_without_a_line_end_breaks_the_stream_as_soon_as_it_passes_the_cap(framer):
    decoder = framer.LineDecoder(100)
    decoder.receive_data(b"y" * 100)
    assert decoder.next_line() is None
    decoder.receive_data(b"y")
    with pytest.raises(LineTooLong):
        decoder.next_line()
    with pytest.raises(LineTooLong):   # sticky
        decoder.next_line()


def test_default_cap_is_tags_plus_a_512_byte_line(framer):
    assert framer.MAX_IRC_LINE_BYTES == 8191 + 510
    assert framer.LineDecoder().max_line_bytes == 8701


def test_nul_and_invalid_utf8_are_passed_through_as_bytes(framer):
    assert run(framer, [b"A\x00B\xff\xfe\r\n"])[0] == [b"A\x00B\xff\xfe"]


def test_bad_limits_are_refused(framer):
    with pytest.raises(ValueError):
        framer.LineDecoder(0)
    with pytest.raises(TypeError):
        framer.LineDecoder(1.5)


def test_accepts_any_bytes_like_object(framer):
    assert run(framer, [bytearray(b"A\n"), memoryview(b"B\n")])[0] == [b"A", b"B"]


def test_many_lines_in_a_large_buffer_cost_linear_time(framer):
    # 200 000 LF-only lines: a framer that searched the whole buffer for a CR per line
    # would take minutes here, not milliseconds.
    data = b"PING x\n" * 200_000
    decoder = framer.LineDecoder()
    decoder.receive_data(data)
    count = 0
    while decoder.next_line() is not None:
        count += 1
    assert count == 200_000


# -- differential: the compiled framer behaves as the specification ----------------------

_stream = st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r"]),
    st.binary(min_size=30, max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
), max_size=30).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@given(data=_stream, cuts=st.lists(st.integers(min_value=0), max_size=12),
       limit=st.integers(min_value=1, max_value=60))
def test_any_split_gives_the_same_lines_as_feeding_whole(framer, data, cuts, limit):
    whole = run(ircframe_py, [data], limit)
    assert run(framer, [data], limit) == whole
    assert run(framer, _split(data, cuts), limit) == whole
    assert run(framer, [data[i:i + 1] for i in range(len(data))], limit) == whole


@pytest.mark.parametrize("text", [b"NICK a\r\nUSER u 0 * :Real\r\n", b"PING\rPONG\n\r\nX\n"])
def test_split_at_every_point(framer, text):
    whole = run(ircframe_py, [text])
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert run(framer, [text[:i], text[i:j], text[j:]]) == whole
