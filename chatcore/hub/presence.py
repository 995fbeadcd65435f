"""Presence and lists: away, user details, and the paged user, room and server lists."""
from __future__ import annotations

import re

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..listing import KeyPage, NameIndex
from .checks import answer_or_return, check_text, quote, rtt_us
from .model import Page, Session
from .rooms import LIST_ENTRY_WORK_UNITS

_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]*\Z")


def _told_already() -> None:
    """A relayed AwayChanged back from the room channel: this node told its users at once."""


class Presence:
    """The presence and lists part of ``Hub``. Its state is the Hub's."""

    def set_away(self, session: Session, message: str) -> None:
        """Away with ``message`` (each time a new away period), or back when it is empty."""
        check_text("away message", message, self.limits.max_away_bytes, empty_ok=True)
        changed = session.away != message
        session.away = message
        session.away_replied = set()
        self.backplane.publish_user(session)
        if changed:
            self._tell_away(session)

    def _tell_away(self, session: Session) -> None:
        """AwayChanged to every user sharing a room with ``session``, once each (not to
        ``session`` itself: its reply says it)."""
        told: dict = {}
        for room in session.rooms.values():
            told.update(room.members)
        told.pop(session.key, None)
        event = ev.AwayChanged(session.name, session.away)
        if told:
            self._tell_once(told, event)
        for room in session.rooms.values():
            if room.shared:     # members on other nodes: the room channel's "away" kind
                self.backplane.relay_room(room, event, _told_already)

    def whois(self, session: Session, name: str, done=None):
        """A user's details, with the rooms it shares with ``session``; returned, or given
        to ``done`` (a user of another node is looked up in the cluster's shared state)."""
        user = self.sessions.get(name.casefold())
        if user is not None:
            common = sorted((ev.RoomInfo(room.name, len(room.members) + len(room.remote))
                             for key, room in user.rooms.items() if key in session.rooms),
                            key=lambda info: info.name.casefold())
            self.work_done += 1 + len(common) * LIST_ENTRY_WORK_UNITS
            return answer_or_return(done, ev.UserDetails(
                user.name, self.node.name, user.connected_at_ms,
                int(self._clock() - user.last_active), rtt_us(user.rtt_seconds), user.away,
                tuple(common)))
        missing = ChatError(ErrorCode.NO_SUCH_USER, f"no user named {quote(name)} is online")
        if done is None or not self.backplane.shared_users:
            raise missing

        def answered(record) -> None:
            if isinstance(record, ChatError):
                done(record)
            elif record is None:
                done(missing)
            else:
                done(self._remote_details(session, record))

        self.backplane.user_details(name.casefold(), answered)
        return None

    def _remote_details(self, session: Session, record: dict) -> ev.UserDetails:
        """UserDetails of a user of another node, from its record in shared state."""
        now_ms = int(self._wallclock() * 1000)
        common = sorted((ev.RoomInfo(room.name, len(room.members) + len(room.remote))
                         for room in (session.rooms.get(str(name).casefold())
                                      for name in record.get("rooms", ()))
                         if room is not None), key=lambda info: info.name.casefold())
        self.work_done += 1 + len(common) * LIST_ENTRY_WORK_UNITS
        return ev.UserDetails(str(record["name"]), str(record.get("node", "")),
                              int(record.get("since", 0)),
                              max(0, (now_ms - int(record.get("active", now_ms))) // 1000),
                              int(record.get("rtt", ev.UNKNOWN_RTT)),
                              str(record.get("away", "")), tuple(common),
                              realname=str(record.get("realname", "")))

    def list_users(self, room_name: str = "") -> list[ev.UserInfo]:
        """The first page of users (of one room), sorted by name."""
        return self.users_page(room_name).entries

    def list_rooms(self) -> list[ev.RoomInfo]:
        """The first page of rooms, sorted by name."""
        return self.rooms_page().entries

    def users_page(self, room_name: str = "", after: str = "", pattern: str = "",
                   limit: int = 0, done=None) -> Page | None:
        """A page of the users on the server, or in one room (none for an unknown room),
        in name order: see ``listing.NameIndex.page``. With ``done``, in a cluster, the
        users of every node (from shared state: one Redis round trip or two)."""
        if done is not None and not room_name and self.backplane.shared_users:
            self._check_pattern(pattern)
            page_size, scan_limit = self._page_bounds(limit)

            def answered(page) -> None:
                if isinstance(page, Page):
                    self.work_done += len(page.entries) * LIST_ENTRY_WORK_UNITS
                done(page)

            self.backplane.users_page(after.casefold(), pattern.casefold(), page_size,
                                      scan_limit, answered)
            return None
        if done is not None and room_name and self.backplane.lists_rooms:
            # A room's members on every node, from shared state (this node's view while
            # the broker cannot answer).
            self._check_pattern(pattern)
            page_size, scan_limit = self._page_bounds(limit)

            def answered_room(page) -> None:
                if page is None:
                    page = self.users_page(room_name, after, pattern, limit)
                else:
                    self.work_done += len(page.entries) * LIST_ENTRY_WORK_UNITS
                done(page)

            self.backplane.room_members_page(room_name.casefold(), after.casefold(),
                                             pattern.casefold(), page_size, scan_limit,
                                             answered_room)
            return None
        if room_name:
            room = self.rooms.get(room_name.casefold())
            if room is None:
                return answer_or_return(done, Page([], [], 0, True, ""))
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
        return answer_or_return(done, Page(entries, keys.keys, keys.total, keys.total_exact,
                                           keys.next_after))

    def rooms_page(self, after: str = "", pattern: str = "", limit: int = 0,
                   done=None) -> Page | None:
        """A page of the rooms in name order: see ``listing.NameIndex.page``. Returned, or
        given to ``done``: in a cluster the list (with cluster-wide member counts) is read
        from shared state (this node's view while the broker cannot answer)."""
        if done is not None and self.backplane.lists_rooms:
            self._check_pattern(pattern)
            page_size, scan_limit = self._page_bounds(limit)

            def answered(page) -> None:
                if page is None:
                    page = self.rooms_page(after, pattern, limit)
                else:
                    self.work_done += len(page.entries) * LIST_ENTRY_WORK_UNITS
                done(page)

            self.backplane.rooms_page(after.casefold(), pattern.casefold(), page_size,
                                      scan_limit, answered)
            return None
        keys = self._page(self._room_index, after, pattern, limit)
        rooms = self.rooms
        entries = [ev.RoomInfo(room.name, len(room.members) + len(room.remote))
                   for room in map(rooms.__getitem__, keys.keys)]
        self.work_done += len(entries) * LIST_ENTRY_WORK_UNITS
        return answer_or_return(done, Page(entries, keys.keys, keys.total, keys.total_exact,
                                           keys.next_after))

    def user_info(self, session: Session) -> ev.UserInfo:
        """A local user as a user list entry."""
        return ev.UserInfo(session.name, rtt_us(session.rtt_seconds),
                           int(self._clock() - session.last_active), self.node.name,
                           session.away)

    def _page(self, index: NameIndex, after: str, pattern: str, limit: int) -> KeyPage:
        self._check_pattern(pattern)
        page_size, scan_limit = self._page_bounds(limit)
        return index.page(after.casefold(), pattern.casefold(), page_size, scan_limit)

    def _check_pattern(self, pattern: str) -> None:
        limits = self.limits
        if len(pattern) > limits.max_list_pattern_chars:
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern is {len(pattern)} characters long; the limit is "
                            f"{limits.max_list_pattern_chars}")
        if not _PATTERN_CHARS.match(pattern):
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern {quote(pattern)} may only contain name characters "
                            f"and the wildcards * ? [ ] !")

    def _page_bounds(self, limit: int) -> tuple[int, int]:
        limits = self.limits
        page_size = min(limit, limits.max_list_page_entries) or limits.max_list_page_entries
        return page_size, limits.max_list_scan_entries

    def list_servers(self) -> list[ev.ServerInfo]:
        """This node first, then every live peer of the cluster."""
        node = self.node
        here = ev.ServerInfo(node.name, node.host, node.port, len(self.sessions),
                             self._load_permille(), 0)
        return [here, *self.backplane.peer_servers()]
