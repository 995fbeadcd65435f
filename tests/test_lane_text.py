"""The lane's byte-level text check against the path it replaces: the decoder's strict UTF-8
and the hub's text check (``hub.checks.check_text`` on the decoded str), for both twins."""
from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatcore import _lane_py, lane
from chatcore.errors import ChatError
from chatcore.hub.checks import check_text
from tests.conftest import REQUIRE_EXTENSIONS

IMPLEMENTATIONS = [pytest.param(_lane_py.text_ok, id="lane-python"),
                   pytest.param(getattr(lane.lane_c, "text_ok", None), id="lane-cython",
                                marks=pytest.mark.skipif(
                                    lane.lane_c is None and not REQUIRE_EXTENSIONS,
                                    reason="chatcore._lane not built"))]


def accepted_by_the_hub_path(raw: bytes, max_text_bytes: int) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False                    # the decoder's BAD_UTF8
    try:
        check_text("message", text, max_text_bytes)
    except ChatError:
        return False                    # TEXT_INVALID: empty, too long, a forbidden character
    return True


# Bytes near every boundary of UTF-8 and of the text rule, mixed with plain text.
_EDGES = [bytes([b]) for b in (0x00, 0x08, 0x09, 0x0A, 0x0B, 0x1F, 0x20, 0x7E, 0x7F, 0x80,
                                0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4,
                                0xF5, 0xFF)] + [
    b"\xc2\x80", b"\xc2\x9f", b"\xc2\xa0", b"\xe0\x9f\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xef\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"a", b" ", "\u00e9".encode(), "\u20ac".encode(),
    "\U0001f600".encode()]
edgy = st.lists(st.sampled_from(_EDGES), max_size=12).map(b"".join)
raw_texts = st.one_of(edgy, st.binary(max_size=40),
                      st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("text_ok", IMPLEMENTATIONS)
@given(raw=raw_texts, max_text_bytes=st.sampled_from([1, 4, 16, 8192]))
@example(raw=b"\x7f", max_text_bytes=8192)
@example(raw=b"", max_text_bytes=8192)
@example(raw=b"x" * 17, max_text_bytes=16)
@example(raw="\u00e9".encode() * 8, max_text_bytes=16)
def test_the_lane_accepts_exactly_the_texts_the_hub_path_accepts(text_ok, raw, max_text_bytes):
    assert text_ok(raw, max_text_bytes) == accepted_by_the_hub_path(raw, max_text_bytes)


@pytest.mark.parametrize("text_ok", IMPLEMENTATIONS)
def test_every_single_code_point_is_judged_as_the_hub_judges_it(text_ok):
    for code_point in range(0x110000):
        raw = chr(code_point).encode("utf-8", "surrogatepass")
        assert text_ok(raw, 8) == accepted_by_the_hub_path(raw, 8), hex(code_point)


def test_the_compiled_lane_runs_with_the_compiled_codec():
    """The chooser: the compiled lane with the compiled codec, the twin with the fallback
    (CHATCORE_NO_EXTENSIONS=1); a missing chatcore._lane fails under CI."""
    from chatcore import codec
    if lane.NO_LANE:
        assert lane.run is None and lane.LANE_IMPLEMENTATION == "off"
    elif codec.IMPLEMENTATION == "python":
        assert lane.LANE_IMPLEMENTATION == "python"
    elif lane.lane_c is not None or REQUIRE_EXTENSIONS:
        assert lane.lane_c is not None, "chatcore._lane was not built"
        assert lane.LANE_IMPLEMENTATION == "cython"


@pytest.mark.parametrize("text_ok", IMPLEMENTATIONS)
def test_one_odd_byte_anywhere_in_a_long_ascii_text_is_judged_as_the_hub_judges_it(text_ok):
    # The compiled check takes printable ASCII eight bytes at a time: every position of the
    # word, and every byte value, once.
    for size in (8, 9, 15, 16, 17, 40):
        for position in range(size):
            for value in range(256):
                raw = bytearray(b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"[:size])
                raw[position] = value
                raw = bytes(raw)
                assert text_ok(raw, 64) == accepted_by_the_hub_path(raw, 64), (raw, position)
