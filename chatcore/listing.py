"""Sorted name indexes and the pages read from them (user, room and member lists).

A list the server answers grows with the server (100 000 rooms, say), so it is never built
whole: each index keeps its names sorted (``sortedcontainers.SortedList``, updated on every
create, delete, connect and disconnect) and a request reads one page of it, resuming after
a cursor, filtered by a glob pattern as IRC's LIST/ELIST and WHO masks are. The work of one
page is bounded by the page size and a scan budget, never by the size of the list.

Names are compared casefolded; a cursor is the casefolded name to resume after.
"""
from __future__ import annotations

import fnmatch
import functools
import itertools
import re
from dataclasses import dataclass

from sortedcontainers import SortedList

GLOB_CHARS = "*?["
# A room above this many members keeps its own sorted member index (about 0.4 KiB each);
# smaller ones are sorted when listed, which costs less than keeping an index.
MEMBER_INDEX_MIN_MEMBERS = 64
PATTERN_CACHE_ENTRIES = 256     # compiled patterns kept; fnmatch's own cache holds 32768


@dataclass(slots=True)
class KeyPage:
    """One page of keys from an index, before the caller turns them into entries."""
    keys: list
    total: int                  # keys that match the pattern in the whole index
    total_exact: bool           # False: ``total`` counts the candidates (an upper bound)
    next_after: str             # cursor for the next page; "" when nothing is left


class NameIndex:
    """Casefolded names in sorted order, read a page at a time."""

    __slots__ = ("_keys",)

    def __init__(self, keys=()):
        self._keys = SortedList(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys.add(key)

    def discard(self, key: str) -> None:
        self._keys.discard(key)

    def page(self, after: str, pattern: str, limit: int, scan_limit: int) -> KeyPage:
        """Up to ``limit`` keys matching ``pattern`` (a casefolded glob; "" for all) that
        sort after ``after``, examining at most ``scan_limit`` keys."""
        keys = self._keys
        prefix, rest = split_pattern(pattern)
        total, total_exact = self._count(prefix, rest)
        if rest == "" and prefix:
            # A plain name: at most one key can match.
            found = prefix > after and prefix in keys
            return KeyPage([prefix] if found else [], total, True, "")
        # Candidates are the keys in [first, end): after the cursor, within the prefix.
        first = keys.bisect_right(after) if after >= prefix else keys.bisect_left(prefix)
        end = self._prefix_end(prefix)
        if rest == "*" or rest == "":
            stop = min(first + limit, end)
            out = keys[first:stop]
            return KeyPage(out, total, total_exact, out[-1] if stop < end else "")
        stop = min(first + scan_limit, end)
        examined = keys[first:stop]
        out = list(itertools.islice(filter(compile_pattern(pattern), examined), limit))
        if len(out) == limit:
            # Full before the scan budget ran out: resume after the last match.
            more = keys.bisect_right(out[-1]) < end
            return KeyPage(out, total, False, out[-1] if more else "")
        return KeyPage(out, total, False, examined[-1] if stop < end else "")

    def _prefix_end(self, prefix: str) -> int:
        """The index just past the keys that start with ``prefix``."""
        if not prefix:
            return len(self._keys)
        return self._keys.bisect_left(prefix[:-1] + chr(ord(prefix[-1]) + 1))

    def _count(self, prefix: str, rest: str) -> tuple[int, bool]:
        keys = self._keys
        if not prefix:
            return len(keys), rest in ("", "*")
        if rest == "":
            return int(prefix in keys), True
        return self._prefix_end(prefix) - keys.bisect_left(prefix), rest == "*"


def split_pattern(pattern: str) -> tuple[str, str]:
    """``pattern`` as its literal prefix and the rest, which starts at the first glob
    character (``"dev-*x"`` -> ``("dev-", "*x")``)."""
    for index, char in enumerate(pattern):
        if char in GLOB_CHARS:
            return pattern[:index], pattern[index:]
    return pattern, ""


@functools.lru_cache(maxsize=PATTERN_CACHE_ENTRIES)
def compile_pattern(pattern: str):
    """The ``match`` of a glob (fnmatch rules, case-sensitive on casefolded input)."""
    return re.compile(fnmatch.translate(pattern)).match
