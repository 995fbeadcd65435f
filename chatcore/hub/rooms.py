"""Rooms: membership, topics, and room messages (``send_room`` is the busiest request).

Every event of a room (message, action, topic, join, leave) reaches the members the same
way: on a room whose members are all on this node it is delivered at once; on a room the
backplane marks ``shared`` (members on other cluster nodes, or its own events still on the
way) the backplane carries it (one PUBLISH in a cluster) and hands it back, to this node
too, in the broker's order, which is what makes the order the same for every member
wherever they are. The request is answered (Ack, Ok, RoomJoined) once its event is
delivered here, so a sender sees its own message before its Ack, as on one server. What
other nodes tell about their members and their events is in ``remote_rooms``.
"""
from __future__ import annotations

import itertools

from .. import events as ev
from ..codec import find_forbidden
from ..errors import ChatError, ErrorCode
from ..events import Reason
from ..listing import MEMBER_INDEX_MIN_MEMBERS, NameIndex
from .checks import answer_or_return, check_identifier, check_text, quote
from .model import Room, Session

# Work units (Hub.work_done) of one list entry built: one unit is one delivery queued, and a
# list entry (built, sorted, encoded) costs 5-40x a delivery (measured: 4-12 us against
# 0.26-0.8 us, both builds).
LIST_ENTRY_WORK_UNITS = 20


def _ignore(outcome) -> None:
    pass


class Rooms:
    """The rooms part of ``Hub``. Its state is the Hub's."""

    def check_room_name(self, name: str) -> None:
        """Raise ROOM_INVALID saying why ``name`` cannot be a room name."""
        check_identifier("room name", name, self.limits.max_room_name_chars,
                          ErrorCode.ROOM_INVALID)

    def join(self, session: Session, room_name: str, room_key: str = "", done=None):
        """Join (creating the room on first join); False if already a member.

        Members are told ``UserJoined``; the joiner is also told the room's topic and
        members (``RoomJoined``), just after its modes (``RoomModes``), every time, whether
        or not it was a member already. ``room_key`` is the key of a +k room
        (``moderation``).
        The outcome (True, False or a ChatError) is returned, or given to ``done`` once
        known: a cluster node opening a room learns its members and topic from the broker
        first. Without ``done`` a join that completes later returns True.
        """
        self._touch(session)
        key = room_name.casefold()
        room = session.rooms.get(key)
        if room is not None:
            self._tell_room_state(session, room)
            return answer_or_return(done, False)
        self.check_room_name(room_name)
        if len(session.rooms) + session.joins_on_the_way >= self.limits.max_rooms_per_user:
            raise ChatError(ErrorCode.TOO_MANY_ROOMS,
                            f"you are in {len(session.rooms)} rooms"
                            + (f" and joining {session.joins_on_the_way} more"
                               if session.joins_on_the_way else "")
                            + f"; the limit is {self.limits.max_rooms_per_user}")
        outcome: list = []
        answer = done or outcome.append

        def finish(result) -> None:
            session.joins_on_the_way -= 1
            answer(result)

        session.joins_on_the_way += 1
        try:
            self._join_room(session, room_name, key, room_key, finish)
        except ChatError:
            session.joins_on_the_way -= 1
            raise
        if done is not None:
            return None
        if outcome and isinstance(outcome[0], ChatError):
            raise outcome[0]
        return outcome[0] if outcome else True

    def _join_room(self, session: Session, room_name: str, key: str, room_key,
                   finish) -> None:
        room = self.rooms.get(key)
        if room is None:
            if len(self.rooms) >= self.limits.max_rooms:
                raise ChatError(ErrorCode.SERVER_ROOM_LIMIT,
                                f"the server has {len(self.rooms)} rooms, its limit; "
                                f"join an existing one")
            room = self.rooms[key] = Room(room_name, key)
            self._room_index.add(key)
            self._found_room(session, room)
            room.opening = [(session, finish, room_key)]
            self.backplane.open_room(room, lambda snapshot: self._room_opened(room, snapshot))
        else:
            self._admit(session, room, room_key)
            if room.opening is not None:
                room.opening.append((session, finish, room_key))
            else:
                self._enter(room, session, finish)

    def _room_opened(self, room: Room, snapshot) -> None:
        """The backplane opened ``room`` on this node (``snapshot``: what other nodes have
        in it, or None): the joins that waited go ahead."""
        waiting, room.opening = room.opening, None
        if snapshot is not None:
            self.room_snapshot(room, snapshot)
        for session, finish, room_key in waiting:
            if snapshot is not None and snapshot.fields:
                try:                # the room was there already: its modes hold for all
                    self._admit(session, room, room_key)
                except ChatError as exc:
                    finish(exc)
                    continue
            self._enter(room, session, finish)
        self._drop_if_empty(room)

    def _enter(self, room: Room, session: Session, finish) -> None:
        room.entering += 1

        def entered(outcome=None) -> None:
            room.entering -= 1
            if isinstance(outcome, ChatError):
                finish(outcome)
            elif self.sessions.get(session.key) is not session or room.key in session.rooms:
                # Gone (or in already) while the join was out: undo it where it was told.
                if self.sessions.get(session.key) is not session:
                    self.backplane.leave_room(room, session, ev.UserLeft(
                        room.name, session.name, Reason.DISCONNECTED), lambda: None)
                finish(False)
            else:
                self._add_member(room, session)
                finish(True)
            self._drop_if_empty(room)

        self.backplane.join_room(room, session, entered)

    def _add_member(self, room: Room, session: Session) -> None:
        if self.rooms.get(room.key) is not room:        # dropped meanwhile: back it comes
            self.rooms[room.key] = room
            self._room_index.add(room.key)
        room.members[session.key] = session
        room.remote.pop(session.key, None)
        modes = room.modes
        if session.key in modes.remote_operators or session.key in modes.remote_voiced:
            self._adopt_remote_flags(room, session)
        if room.member_index is not None:
            room.member_index.add(session.key)
        elif len(room.members) > MEMBER_INDEX_MIN_MEMBERS:
            room.member_index = NameIndex(room.members)
        room.endpoints.setdefault(session.outlet, []).append(session.endpoint)
        session.rooms[room.key] = room
        self.backplane.user_rooms_changed(session)
        self._broadcast(room, ev.UserJoined(room.name, session.name))
        self._tell_room_state(session, room)

    def _tell_room_state(self, session: Session, room: Room) -> None:
        # Modes first: by the RoomJoined that ends the join, the joiner knows who is operator.
        session.outlet.deliver(session.endpoint, self._modes_event(room, True))
        limit = self.limits.max_join_members
        members = [ev.Member(member.name, bool(member.away)) for member in
                   itertools.islice(room.members.values(), limit)]
        if len(members) < limit and room.remote:
            members += [ev.Member(name, key in self.remote_away) for key, (name, _) in
                        itertools.islice(room.remote.items(), limit - len(members))]
        session.outlet.deliver(session.endpoint, ev.RoomJoined(
            room.name, room.topic, room.topic_by, room.topic_at_ms,
            len(room.members) + len(room.remote), tuple(members)))
        self.work_done += 1 + len(members) * LIST_ENTRY_WORK_UNITS

    def set_topic(self, session: Session, room_name: str, topic: str, done=None) -> None:
        """A member (an operator, in a +t room) sets (or, with an empty topic, clears) the
        topic; members are told (``done(None)`` once they are, here)."""
        self._touch(session)
        room = self._membership(session, room_name)
        self._check_topic(session, room)
        check_text("topic", topic, self.limits.max_topic_bytes, empty_ok=True)
        timestamp_ms = int(self._wallclock() * 1000)
        event = ev.TopicChanged(room.name, session.name, timestamp_ms, topic)
        if topic == room.topic:
            # Nothing changes (nor who set it, nor when; as in InspIRCd and ngIRCd): the
            # setter alone hears that this is the topic, the others are not told again.
            session.outlet.deliver(session.endpoint, event)
            self.work_done += 1
            if done is not None:
                done(None)
            return
        self._to_room(room, event, done)

    def leave(self, session: Session, room_name: str) -> None:
        self._touch(session)
        self._remove_member(self._membership(session, room_name), session, Reason.CLOSED)

    def _membership(self, session: Session, room_name: str) -> Room:
        room = session.rooms.get(room_name.casefold())
        if room is None:
            raise ChatError(ErrorCode.NOT_IN_ROOM, f"you are not in room {quote(room_name)}")
        return room

    def _remove_member(self, room: Room, session: Session, reason: Reason,
                       message: str = "", publish: bool = True) -> None:
        """``publish``: False when the shared state let the member go already (a kick on
        a cluster node): the members here are told at once."""
        event = ev.UserLeft(room.name, session.name, reason, message)
        del room.members[session.key]
        if room.member_index is not None:
            room.member_index.discard(session.key)
        endpoints = room.endpoints[session.outlet]
        endpoints.remove(session.endpoint)
        if not endpoints:
            del room.endpoints[session.outlet]
        del session.rooms[room.key]
        self.backplane.user_rooms_changed(session)
        # The leaver hears its own departure too, like its own join; the others in order.
        session.outlet.deliver(session.endpoint, event)
        self.work_done += 1
        if publish:
            self.backplane.leave_room(room, session, event,
                                      lambda: self._broadcast(room, event))
        else:
            self._broadcast(room, event)
        if room.members:
            self._left_room(room, session)
        self._drop_if_empty(room)

    def _drop_if_empty(self, room: Room) -> None:
        if (not room.members and not room.entering and room.opening is None
                and self.rooms.get(room.key) is room):
            del self.rooms[room.key]
            self._room_index.discard(room.key)
            room.remote.clear()
            self.backplane.close_room(room)

    def room_shared(self, session: Session, room_name: str) -> bool:
        """Whether a message to this room of ``session``'s is answered later (``done``)."""
        room = session.rooms.get(room_name.casefold())
        return room is not None and room.shared

    def send_room(self, session: Session, room_name: str, text: str, done=None):
        """Deliver ``text`` to every member, the sender included; (msg_id, ts_ms) for the
        Ack, returned or given to ``done`` once delivered here (see the module)."""
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
        if room.shared:
            return self._to_room(room, event, done, (msg_id, timestamp_ms))
        for outlet, endpoints in room.endpoints.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(room.members)
        return answer_or_return(done, (msg_id, timestamp_ms))

    def send_room_action(self, session: Session, room_name: str, text: str, done=None):
        """An action ("/me waves") to every member, like ``send_room``."""
        self._touch(session)
        room = self._membership(session, room_name)
        if room.modes.gated:
            self._check_speech(session, room)
        self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        return self._to_room(room, ev.RoomAction(room.name, session.name, msg_id,
                                                 timestamp_ms, text),
                             done, (msg_id, timestamp_ms))

    def _to_room(self, room: Room, event, done=None, result=None):
        """``event`` to every member of ``room`` (see the module), then ``done(result)``;
        without ``done`` the result is returned at once."""
        def deliver(told: bool = False) -> None:
            # told: the backplane already handed the event to the members (as frames)
            if not told:
                self.apply_room_event(room, event)
                self._broadcast(room, event)
            if done is not None:
                done(result)

        if not self.backplane.relay_room(room, event, deliver):
            deliver()
        return None if done is not None else result

    def _broadcast(self, room: Room, event) -> None:
        for outlet, endpoints in room.endpoints.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(room.members)
