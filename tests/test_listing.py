"""The sorted name index: paging through it with any pattern, page size and scan budget
gives exactly the matching names, in order, each once."""
from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from chatcore.listing import NameIndex, split_pattern

NAMES = st.sets(st.text("ab-c.", min_size=1, max_size=4), max_size=60)
PATTERNS = st.text("ab-c.*?[]!", max_size=5)


def read_all(index: NameIndex, pattern: str, limit: int, scan_limit: int) -> list:
    found, after = [], ""
    while True:
        page = index.page(after, pattern, limit, scan_limit)
        assert len(page.keys) <= limit
        found += page.keys
        if not page.next_after:
            return found
        assert page.next_after > after                  # every page makes progress
        after = page.next_after


@given(NAMES, PATTERNS, st.integers(1, 8), st.integers(1, 20))
def test_paging_yields_every_match_once_in_order(names, pattern, limit, scan_limit):
    index = NameIndex(names)
    expected = [name for name in sorted(names) if fnmatch.fnmatchcase(name, pattern or "*")]
    assert read_all(index, pattern, limit, scan_limit) == expected
    page = index.page("", pattern, limit, scan_limit)
    if page.total_exact:
        assert page.total == len(expected)
    else:
        assert page.total >= len(expected)


def test_totals_are_exact_for_prefixes_and_names():
    index = NameIndex(["dev-1", "dev-2", "devices", "lobby"])
    assert (index.page("", "dev-*", 10, 10).total, index.page("", "dev-*", 10, 10).total_exact) \
        == (2, True)
    assert index.page("", "lobby", 10, 10).keys == ["lobby"]
    assert index.page("lobby", "lobby", 10, 10).keys == []      # after the cursor: not again
    wild = index.page("", "dev*1", 10, 10)
    assert (wild.keys, wild.total, wild.total_exact) == (["dev-1"], 3, False)


def test_the_index_follows_adds_and_removals():
    index = NameIndex()
    for name in ("b", "a", "c"):
        index.add(name)
    index.discard("b")
    index.discard("zzz")                                # absent: nothing happens
    assert index.page("", "", 10, 10).keys == ["a", "c"] and len(index) == 2


def test_split_pattern():
    assert split_pattern("dev-*x") == ("dev-", "*x")
    assert split_pattern("lobby") == ("lobby", "")
    assert split_pattern("[ab]*") == ("", "[ab]*")
