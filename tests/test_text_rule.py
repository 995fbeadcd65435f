"""The text rule's scanner (``find_forbidden``) on both hot-path builds: the compiled scan of
the string's storage must find exactly what the pure-Python regex finds."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.codec import codec_py

# Both sides of every edge of the rule, in each of CPython's storage kinds.
EDGES = [0x00, 0x08, 0x09, 0x0A, 0x0B, 0x0D, 0x1B, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0x9F, 0xA0,
         0xFF, 0x100, 0x2028, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000, 0xFEFF, 0xFFFF,
         0x10000, 0x10FFFF]
PREFIXES = ["", "ab", "ééé", "\u4e2d\u6587", "\U0001f600"]     # ASCII, Latin-1, UCS-2, UCS-4


def forbidden(code_point: int) -> bool:
    return ((code_point < 0x20 and code_point not in (0x09, 0x0A))
            or 0x7F <= code_point <= 0x9F or 0xD800 <= code_point <= 0xDFFF)


@pytest.mark.parametrize("code_point", EDGES, ids=lambda c: f"U+{c:04X}")
@pytest.mark.parametrize("prefix", PREFIXES, ids=["ascii", "latin1", "ucs2", "ucs4", "astral"])
def test_each_edge_in_each_storage_kind(codec, prefix, code_point):
    text = prefix + chr(code_point) + "z\x07"
    expected = len(prefix) if forbidden(code_point) else len(prefix) + 2
    assert codec.find_forbidden(text) == expected
    assert codec.find_forbidden(prefix + chr(code_point)) == (len(prefix)
                                                              if forbidden(code_point) else -1)


def test_clean_and_empty_texts(codec):
    assert codec.find_forbidden("") == -1
    assert codec.find_forbidden("line one\n\tline two " * 500) == -1


def test_subclasses_and_other_types_behave_alike(codec):
    class Text(str):
        pass

    assert codec.find_forbidden(Text("ok\x1b[2J")) == 2
    with pytest.raises(TypeError):
        codec.find_forbidden(b"bytes\x07")
    with pytest.raises(TypeError):
        codec.find_forbidden(None)


_characters = st.one_of(st.sampled_from([chr(c) for c in EDGES]),
                        st.characters(exclude_categories=()))


@given(st.text(alphabet=_characters, max_size=300))
def test_agrees_with_the_regex(codec, text):
    assert codec.find_forbidden(text) == codec_py.find_forbidden(text)
