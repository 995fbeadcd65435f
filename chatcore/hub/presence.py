"""Presence and lists: away, user details, and the paged user, room and server lists."""
from __future__ import annotations

import re

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..listing import KeyPage, NameIndex
from .checks import check_text, quote, rtt_us
from .model import Page, Session
from .rooms import LIST_ENTRY_WORK_UNITS

_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]*\Z")


class Presence:
    """The presence and lists part of ``Hub``. Its state is the Hub's."""

    def set_away(self, session: Session, message: str) -> None:
        """Away with ``message`` (each time a new away period), or back when it is empty."""
        check_text("away message", message, self.limits.max_away_bytes, empty_ok=True)
        session.away = message
        session.away_replied = set()

    def whois(self, session: Session, name: str) -> ev.UserDetails:
        """A user's details, with the rooms it shares with ``session``."""
        user = self.sessions.get(name.casefold())
        if user is None:
            raise ChatError(ErrorCode.NO_SUCH_USER, f"no user named {quote(name)} is online")
        common = sorted((ev.RoomInfo(room.name, len(room.members))
                         for key, room in user.rooms.items() if key in session.rooms),
                        key=lambda info: info.name.casefold())
        self.work_done += 1 + len(common) * LIST_ENTRY_WORK_UNITS
        return ev.UserDetails(user.name, self.node.name, user.connected_at_ms,
                              int(self._clock() - user.last_active), rtt_us(user.rtt_seconds),
                              user.away, tuple(common))

    def list_users(self, room_name: str = "") -> list[ev.UserInfo]:
        """The first page of users (of one room), sorted by name."""
        return self.users_page(room_name).entries

    def list_rooms(self) -> list[ev.RoomInfo]:
        """The first page of rooms, sorted by name."""
        return self.rooms_page().entries

    def users_page(self, room_name: str = "", after: str = "", pattern: str = "",
                   limit: int = 0) -> Page:
        """A page of the users on the server, or in one room (none for an unknown room),
        in name order: see ``listing.NameIndex.page``."""
        if room_name:
            room = self.rooms.get(room_name.casefold())
            if room is None:
                return Page([], [], 0, True, "")
            members = room.members
            index = room.member_index if room.member_index is not None else NameIndex(members)
        else:
            members, index = self.sessions, self._user_index
        keys = self._page(index, after, pattern, limit)
        now = self._clock()
        server = self.node.name
        entries = [ev.UserInfo(s.name, rtt_us(s.rtt_seconds), int(now - s.last_active),
                               server, s.away)
                   for s in map(members.__getitem__, keys.keys)]
        self.work_done += len(entries) * LIST_ENTRY_WORK_UNITS
        return Page(entries, keys.keys, keys.total, keys.total_exact, keys.next_after)

    def rooms_page(self, after: str = "", pattern: str = "", limit: int = 0) -> Page:
        """A page of the rooms in name order: see ``listing.NameIndex.page``."""
        keys = self._page(self._room_index, after, pattern, limit)
        rooms = self.rooms
        entries = [ev.RoomInfo(room.name, len(room.members))
                   for room in map(rooms.__getitem__, keys.keys)]
        self.work_done += len(entries) * LIST_ENTRY_WORK_UNITS
        return Page(entries, keys.keys, keys.total, keys.total_exact, keys.next_after)

    def _page(self, index: NameIndex, after: str, pattern: str, limit: int) -> KeyPage:
        limits = self.limits
        if len(pattern) > limits.max_list_pattern_chars:
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern is {len(pattern)} characters long; the limit is "
                            f"{limits.max_list_pattern_chars}")
        if not _PATTERN_CHARS.match(pattern):
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern {quote(pattern)} may only contain name characters "
                            f"and the wildcards * ? [ ] !")
        page_size = min(limit, limits.max_list_page_entries) or limits.max_list_page_entries
        return index.page(after.casefold(), pattern.casefold(), page_size,
                          limits.max_list_scan_entries)

    def list_servers(self) -> list[ev.ServerInfo]:
        """This node first, then every live peer of the cluster."""
        node = self.node
        here = ev.ServerInfo(node.name, node.host, node.port, len(self.sessions),
                             self._load_permille(), 0)
        return [here, *self.backplane.peer_servers()]
