"""The room list and a room's member list, read a page at a time from the sorted sets in
Redis (``roomstate``): two round trips, the keys of the page (bounded by the page size or
the scan budget, as ``listing.NameIndex.page`` is), then their details. Never by asking
the other nodes.
"""
from __future__ import annotations

from .. import events as ev
from ..broker import BrokerUnavailable, ReplyError
from ..hub.model import Page
from ..listing import compile_pattern, split_pattern
from .roomstate import MEMBERS_SCRIPT, ROOMS_SCRIPT, _text


def _range(after: str, prefix: str) -> tuple[str, str]:
    """ZRANGEBYLEX bounds of the keys after ``after`` that start with ``prefix``."""
    low = "(" + after if after >= prefix else "[" + prefix
    high = "(" + prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "+"
    return low, high


class RoomLists:
    """The lists part of ``Cluster``: the hub's backplane answers these later."""

    lists_rooms = True

    def rooms_page(self, after: str, pattern: str, limit: int, scan_limit: int,
                   done) -> None:
        """``done(Page of RoomInfo)``, or ``done(None)`` if Redis cannot answer now."""
        def details(keys, total, total_exact, next_after) -> None:
            if not keys:
                done(Page([], [], total, total_exact, next_after))
                return

            def got(reply) -> None:
                if not isinstance(reply, list):
                    done(None)
                    return
                # A secret room (+s) stays out of room lists, as on one server; the total
                # still counts it (Redis keeps one set of all rooms), so a page that hid
                # one says its total is not exact.
                listed = [(key, ev.RoomInfo(_text(reply[i]), int(reply[i + 1])))
                          for key, i in zip(keys, range(0, len(reply) - 2, 3))
                          if "s" not in _text(reply[i + 2])]
                done(Page([info for _, info in listed], [key for key, _ in listed], total,
                          total_exact and len(listed) == len(keys), next_after))
            self.broker.call("EVAL", ROOMS_SCRIPT, 1, f"{self._prefix}:room:", *keys,
                             callback=got)

        self._key_page(self.rooms_key, after, pattern, limit, scan_limit, details, done)

    def room_members_page(self, room_key: str, after: str, pattern: str, limit: int,
                          scan_limit: int, done) -> None:
        """``done(Page of UserInfo)`` of one room (empty for an unknown room), or
        ``done(None)`` if Redis cannot answer now."""
        base = f"{self._prefix}:room:{room_key}"

        def details(keys, total, total_exact, next_after) -> None:
            if not keys:
                done(Page([], [], total, total_exact, next_after))
                return

            def got(reply) -> None:
                if not isinstance(reply, list):
                    done(None)
                    return
                found = [self.member_info(_text(reply[i]), *reply[i + 1:i + 4])
                         for i in range(0, len(reply) - 3, 4)]
                found = [entry for entry in found if entry is not None]
                done(Page([info for _, info in found], [key for key, _ in found], total,
                          total_exact, next_after))
            self.broker.call("EVAL", MEMBERS_SCRIPT, 2, base + ":who",
                             f"{self._prefix}:userinfo", self.alive_prefix, *keys,
                             callback=got)

        self._key_page(base + ":members", after, pattern, limit, scan_limit, details, done)

    def room_topics(self, room_keys: list, done) -> None:
        """``done(list of fields dicts)``: each room's kept topic fields (``topic``,
        ``topic_by``, ``topic_at``; empty for a room that is gone), one HMGET per room
        pipelined in one turn; ``done(None)`` if Redis cannot answer now."""
        if not self.broker.up or not room_keys:
            done(None if room_keys else [])
            return
        found: list = [None] * len(room_keys)
        waiting = [len(room_keys)]

        def answered(index: int):
            def got(reply) -> None:
                found[index] = reply
                waiting[0] -= 1
                if waiting[0]:
                    return
                if not all(isinstance(r, list) for r in found):
                    done(None)
                    return
                done([{name: _text(value) for name, value in
                       zip(("topic", "topic_by", "topic_at"), reply) if value is not None}
                      for reply in found])
            return got

        for index, key in enumerate(room_keys):
            self.broker.call("HMGET", f"{self._prefix}:room:{key}:info", "topic",
                             "topic_by", "topic_at", callback=answered(index))

    def _key_page(self, zset: str, after: str, pattern: str, limit: int, scan_limit: int,
                  then, done) -> None:
        """The keys of one page of ``zset`` (see NameIndex.page), to ``then(keys, total,
        total_exact, next_after)``."""
        if not self.broker.up:
            done(None)
            return
        prefix, rest = split_pattern(pattern)
        replies: list = []

        def failed(reply) -> bool:
            return isinstance(reply, BrokerUnavailable | ReplyError)

        if rest == "" and prefix:               # a plain name: at most one key matches
            def plain(reply) -> None:
                if failed(reply):
                    done(None)
                    return
                found = reply is not None
                then([prefix] if found and prefix > after else [], int(found), True, "")
            self.broker.call("ZSCORE", zset, prefix, callback=plain)
            return
        if not prefix:
            self.broker.call("ZCARD", zset, callback=replies.append)
            exact = rest in ("", "*")
        else:
            low, high = _range("", prefix)
            self.broker.call("ZLEXCOUNT", zset, low, high, callback=replies.append)
            exact = rest == "*"

        glob = rest not in ("", "*")
        wanted = scan_limit if glob else limit
        low, high = _range(after, prefix)

        def got(reply) -> None:
            total = replies[0] if replies else None
            if failed(reply) or failed(total) or not isinstance(reply, list):
                done(None)
                return
            keys = [_text(key) for key in reply]
            more = len(keys) > wanted
            keys = keys[:wanted]
            if not glob:
                then(keys, total, exact, keys[-1] if more and keys else "")
                return
            match = compile_pattern(pattern)
            out = [key for key in keys if match(key)][:limit]
            if len(out) == limit and out:
                later = keys.index(out[-1]) < len(keys) - 1 or more
                then(out, total, False, out[-1] if later else "")
            else:
                then(out, total, False, keys[-1] if more and keys else "")

        self.broker.call("ZRANGEBYLEX", zset, low, high, "LIMIT", 0, wanted + 1,
                         callback=got)
