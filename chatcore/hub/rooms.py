"""Rooms: membership, topics, and room messages (``send_room`` is the busiest request)."""
from __future__ import annotations

import itertools

from .. import events as ev
from ..codec import find_forbidden
from ..errors import ChatError, ErrorCode
from ..events import Reason
from ..listing import MEMBER_INDEX_MIN_MEMBERS, NameIndex
from .checks import check_identifier, check_text, quote
from .model import Room, Session

# Work units (Hub.work_done) of one list entry built: one unit is one delivery queued, and a
# list entry (built, sorted, encoded) costs 5-40x a delivery (measured: 4-12 us against
# 0.26-0.8 us, both builds).
LIST_ENTRY_WORK_UNITS = 20


class Rooms:
    """The rooms part of ``Hub``. Its state is the Hub's."""

    def check_room_name(self, name: str) -> None:
        """Raise ROOM_INVALID saying why ``name`` cannot be a room name."""
        check_identifier("room name", name, self.limits.max_room_name_chars,
                          ErrorCode.ROOM_INVALID)

    def join(self, session: Session, room_name: str, room_key: str = "") -> bool:
        """Join (creating the room on first join); False if already a member.

        Members are told ``UserJoined``; the joiner is also told the room's topic and
        members (``RoomJoined``), just after its modes (``RoomModes``), every time, whether or not it
        was a member already. ``room_key`` is the key of a +k room (``moderation``).
        """
        self._touch(session)
        key = room_name.casefold()
        room = session.rooms.get(key)
        if room is not None:
            self._tell_room_state(session, room)
            return False
        self.check_room_name(room_name)
        if len(session.rooms) >= self.limits.max_rooms_per_user:
            raise ChatError(ErrorCode.TOO_MANY_ROOMS,
                            f"you are in {len(session.rooms)} rooms; the limit is "
                            f"{self.limits.max_rooms_per_user}")
        room = self.rooms.get(key)
        if room is None:
            if len(self.rooms) >= self.limits.max_rooms:
                raise ChatError(ErrorCode.SERVER_ROOM_LIMIT,
                                f"the server has {len(self.rooms)} rooms, its limit; "
                                f"join an existing one")
            room = self.rooms[key] = Room(room_name, key)
            self._room_index.add(key)
            self._found_room(session, room)
        else:
            self._admit(session, room, room_key)
        room.members[session.key] = session
        if room.member_index is not None:
            room.member_index.add(session.key)
        elif len(room.members) > MEMBER_INDEX_MIN_MEMBERS:
            room.member_index = NameIndex(room.members)
        room.endpoints.setdefault(session.outlet, []).append(session.endpoint)
        session.rooms[key] = room
        self._broadcast(room, ev.UserJoined(room.name, session.name))
        self._tell_room_state(session, room)
        return True

    def _tell_room_state(self, session: Session, room: Room) -> None:
        # Modes first: by the RoomJoined that ends the join, the joiner knows who is operator.
        session.outlet.deliver(session.endpoint, self._modes_event(room, True))
        members = tuple(ev.Member(member.name, bool(member.away)) for member in
                        itertools.islice(room.members.values(), self.limits.max_join_members))
        session.outlet.deliver(session.endpoint, ev.RoomJoined(
            room.name, room.topic, room.topic_by, room.topic_at_ms, len(room.members), members))
        self.work_done += 1 + len(members) * LIST_ENTRY_WORK_UNITS

    def set_topic(self, session: Session, room_name: str, topic: str) -> None:
        """A member (an operator, in a +t room) sets (or, with an empty topic, clears) the
        topic; members are told."""
        self._touch(session)
        room = self._membership(session, room_name)
        self._check_topic(session, room)
        check_text("topic", topic, self.limits.max_topic_bytes, empty_ok=True)
        timestamp_ms = int(self._wallclock() * 1000)
        room.topic, room.topic_by = topic, (session.name if topic else "")
        room.topic_at_ms = timestamp_ms if topic else 0
        self._broadcast(room, ev.TopicChanged(room.name, session.name, timestamp_ms, topic))


    def leave(self, session: Session, room_name: str) -> None:
        self._touch(session)
        self._remove_member(self._membership(session, room_name), session, Reason.CLOSED)

    def _membership(self, session: Session, room_name: str) -> Room:
        room = session.rooms.get(room_name.casefold())
        if room is None:
            raise ChatError(ErrorCode.NOT_IN_ROOM, f"you are not in room {quote(room_name)}")
        return room

    def _remove_member(self, room: Room, session: Session, reason: Reason,
                       message: str = "") -> None:
        # The leaver hears its own departure too, like its own join.
        self._broadcast(room, ev.UserLeft(room.name, session.name, reason, message))
        del room.members[session.key]
        if room.member_index is not None:
            room.member_index.discard(session.key)
        endpoints = room.endpoints[session.outlet]
        endpoints.remove(session.endpoint)
        if not endpoints:
            del room.endpoints[session.outlet]
        del session.rooms[room.key]
        if not room.members:
            del self.rooms[room.key]
            self._room_index.discard(room.key)
        else:
            self._left_room(room, session)

    def send_room(self, session: Session, room_name: str, text: str) -> tuple[int, int]:
        """Deliver ``text`` to every member, the sender included; returns (msg_id, ts_ms)."""
        # The busiest request of all: helpers inlined.
        session.last_active = self._clock()
        room = session.rooms.get(room_name.casefold())
        if room is None:
            room = self._membership(session, room_name)
        if room.modes.gated:
            self._check_speech(session, room)
        if (not text or len(text) * 4 > self.limits.max_text_bytes
                or find_forbidden(text) >= 0):
            self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        event = ev.RoomMessage(room.name, session.name, msg_id, timestamp_ms, text)
        for outlet, endpoints in room.endpoints.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(room.members)
        return msg_id, timestamp_ms

    def send_room_action(self, session: Session, room_name: str,
                         text: str) -> tuple[int, int]:
        """An action ("/me waves") to every member, like ``send_room``."""
        self._touch(session)
        room = self._membership(session, room_name)
        if room.modes.gated:
            self._check_speech(session, room)
        self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        self._broadcast(room, ev.RoomAction(room.name, session.name, msg_id, timestamp_ms,
                                            text))
        return msg_id, timestamp_ms

    def _broadcast(self, room: Room, event) -> None:
        for outlet, endpoints in room.endpoints.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(room.members)
