"""What the backplane tells the hub about rooms that have members on other cluster nodes:
their members arriving and leaving, their events, a room's state when this node opens it,
and a node's members lost with it. ``Room.remote`` holds the members on other nodes.

A room's events change its state where they are delivered (``apply_room_event``): on every
node, in the same order. The state a node opening the room later must learn (the topic) is
kept by the backplane as fields (``ROOM_STATE_FIELDS``: the fields an event sets;
``ROOM_STATE_LOADERS``: how a room reads them back). A new kind of room event (moderation's,
say) adds its entries to these tables, and its name to the cluster's ``ROOM_EVENT_KINDS``.
"""
from __future__ import annotations

from .. import events as ev
from ..events import Reason
from .model import Room, RoomSnapshot
from .shared_moderation import load_shared_modes


def _apply_topic(room: Room, event: ev.TopicChanged) -> None:
    room.topic = event.topic
    room.topic_by = event.name if event.topic else ""
    room.topic_at_ms = event.timestamp_ms if event.topic else 0


def _topic_fields(event: ev.TopicChanged) -> dict:
    return {"topic": event.topic, "topic_by": event.name if event.topic else "",
            "topic_at": event.timestamp_ms if event.topic else 0}


def _load_topic(room: Room, fields: dict) -> None:
    room.topic = fields.get("topic", "")
    room.topic_by = fields.get("topic_by", "")
    try:
        room.topic_at_ms = int(fields.get("topic_at", 0))
    except ValueError:
        room.topic_at_ms = 0


def _kept_topic(fields: dict) -> tuple[str, str, int]:
    """(topic, set by, set at ms) from a room's kept state fields."""
    try:
        at_ms = int(fields.get("topic_at", 0))
    except ValueError:
        at_ms = 0
    return fields.get("topic", ""), fields.get("topic_by", ""), at_ms


def _load_name(room: Room, fields: dict) -> None:
    room.name = fields.get("name") or room.name         # as first spelt, cluster-wide


# Renames of users of other nodes remembered, to tell each local user of one only once.
RENAMES_REMEMBERED = 1000


# Event type -> how it changes the room where it is delivered.
ROOM_EVENT_APPLIERS = {ev.TopicChanged: _apply_topic}
# Event type -> the room state fields (str -> str or int) it sets, kept for later openers.
ROOM_STATE_FIELDS = {ev.TopicChanged: _topic_fields}
# Each reads a room's state back from those fields (a dict of str) when a node opens it.
ROOM_STATE_LOADERS = [_load_name, _load_topic, load_shared_modes]
# Events that change nothing where they are delivered, only told to every member: a node
# may hand them on in the encoding they came in (``room_frames_arrived``).
ROOM_BROADCAST_ONLY = (ev.RoomMessage, ev.RoomAction)


class RemoteRooms:
    """The rooms-of-the-cluster part of ``Hub``. Its state is the Hub's."""

    def apply_room_event(self, room: Room, event) -> None:
        applier = ROOM_EVENT_APPLIERS.get(type(event))
        if applier is not None:
            applier(room, event)

    def room_snapshot(self, room: Room, snapshot: RoomSnapshot) -> None:
        """The room's state and its members on other nodes, as the broker has them: the
        local members are told who arrived and who is gone since they last knew."""
        for loader in ROOM_STATE_LOADERS:
            loader(room, snapshot.fields)
        old, new = room.remote, {key: entry for key, entry in snapshot.members.items()
                                 if key not in room.members}
        room.remote = new
        for key, message in snapshot.away.items():
            self.remote_away[key] = message
        if room.members:
            for key, (name, _) in old.items():
                if key not in new:
                    self._broadcast(room, ev.UserLeft(room.name, name, Reason.SERVER_LOST))
            for key, (name, _) in new.items():
                if key not in old:
                    self._broadcast(room, ev.UserJoined(room.name, name))

    def room_event_arrived(self, room_key: str, event) -> None:
        """An event of another node's member (a message, an action, a topic)."""
        room = self.rooms.get(room_key)
        if room is None or not room.members:
            return
        if type(event) is ev.AwayChanged:
            self._remote_away_changed(event)
            return
        self.apply_room_event(room, event)
        self._broadcast(room, event)

    def room_frames_arrived(self, room_key: str, frames: bytes, count: int, events) -> None:
        """``count`` events of another node's members (of ``ROOM_BROADCAST_ONLY``), already
        encoded as native frames (``frames``, back to back): an outlet that takes frames
        (``broadcast_frames``) queues them as they are on each of its members; any other
        gets the events, ``events()`` (built when first asked for)."""
        room = self.rooms.get(room_key)
        if room is None or not room.members:
            return
        for outlet, endpoints in room.endpoints.items():
            takes_frames = getattr(outlet, "broadcast_frames", None)
            if takes_frames is not None:
                takes_frames(endpoints, frames, count)
            else:
                for event in events():
                    outlet.broadcast(endpoints, event)
        self.work_done += count * len(room.members)

    def _remote_away_changed(self, event: ev.AwayChanged) -> None:
        """A member of another node went away or came back: it is published on each room
        channel it shares with this node, so only the first copy of a change is told, to
        every local member of those rooms once each (a node's channels arrive in its
        publishing order, on the one subscriber link)."""
        key = event.name.casefold()
        if self.remote_away.get(key, "") == event.message:
            return
        if event.message:
            self.remote_away[key] = event.message
        else:
            self.remote_away.pop(key, None)
        told: dict = {}
        for room in self.rooms.values():
            if key in room.remote:
                told.update(room.members)
        self._tell_once(told, event)

    def remote_members_joined(self, room_key: str, names, node: str,
                              away: dict | None = None) -> None:
        """Users of ``node`` joined (or, after an outage, are still in) the room; those
        not known yet are announced. ``away``: name -> away message of those away."""
        room = self.rooms.get(room_key)
        if room is None:
            return
        for name in names:
            key = name.casefold()
            if key in room.members:
                continue
            if away and isinstance(away.get(name), str) and away[name]:
                self.remote_away[key] = away[name]
            known = room.remote.get(key)
            room.remote[key] = (name, node)
            if known is None and room.members:
                self._broadcast(room, ev.UserJoined(room.name, name))

    def remote_member_left(self, room_key: str, event: ev.UserLeft, node: str) -> None:
        """A member of ``node`` (None: of whichever node) left (one whose session moved to
        another node meanwhile stays)."""
        room = self.rooms.get(room_key)
        key = event.name.casefold()
        if room is not None and (node is None or room.remote.get(key, ("", node))[1] == node):
            if room.remote.pop(key, None) is not None:
                self._forget_remote_flags(room, key)
                self._broadcast(room, event)
                if key in self.remote_away and not any(key in other.remote
                                                       for other in self.rooms.values()):
                    del self.remote_away[key]

    def remote_node_lost(self, node: str, reason: Reason = Reason.SERVER_LOST) -> list:
        """``node`` is gone: its members leave every room here, with ``reason``; the rooms
        they were in are returned."""
        changed = []
        for room in self.rooms.values():
            gone = [key for key, (_, where) in room.remote.items() if where == node]
            for key in gone:
                name, _ = room.remote.pop(key)
                self._forget_remote_flags(room, key)
                self.remote_away.pop(key, None)
                self._broadcast(room, ev.UserLeft(room.name, name, reason))
            if gone:
                changed.append(room)
        return changed

    def _renamed_in_rooms(self, session, old_name: str) -> None:
        """A local member took a new name: the other nodes sharing its rooms are told."""
        for room in session.rooms.values():
            self.backplane.rename_in_room(room, session, old_name)

    def remote_member_renamed(self, room_key: str, old_name: str, new_name: str,
                              node: str) -> None:
        """A member of ``node`` took a new name: this node's members of the room are told
        (once per user and rename, however many rooms or chats they share)."""
        room = self.rooms.get(room_key)
        old_key = old_name.casefold()
        if room is None or room.remote.get(old_key, ("", ""))[1] != node:
            return
        del room.remote[old_key]
        room.remote[new_name.casefold()] = (new_name, node)
        self._rename_remote_flags(room, old_key, new_name.casefold())
        if old_key in self.remote_away:
            self.remote_away[new_name.casefold()] = self.remote_away.pop(old_key)
        event = ev.NameChanged(old_name, new_name)
        told = [member for member in room.members.values()
                if self._first_told_of_rename(member, old_name, new_name)]
        for member in told:
            member.outlet.deliver(member.endpoint, event)
        self.work_done += len(told)

    def _first_told_of_rename(self, session, old_name: str, new_name: str) -> bool:
        """True the first time ``session`` is to be told of this rename of a user of
        another node (it may hear of it on several rooms' channels and its chat's)."""
        key = (old_name, new_name)
        told = self._renames_told.get(key)
        if told is None:
            told = self._renames_told[key] = set()
            while len(self._renames_told) > RENAMES_REMEMBERED:
                self._renames_told.popitem(last=False)
        if session.key in told:
            return False
        told.add(session.key)
        return True

    def room_topics(self, names: list, done) -> None:
        """``done(list of (topic, set by, set at ms))`` for rooms by name: this node's
        rooms from their state, the others' (rooms with no member here) from the shared
        state in a cluster (one round trip), ``("", "", 0)`` where none is known."""
        rooms = self.rooms
        known = {name: rooms[name.casefold()] for name in names if name.casefold() in rooms}
        remote = [name for name in names if name not in known]

        def answered(fields) -> None:
            kept = dict(zip(remote, fields or [{}] * len(remote)))
            topics = []
            for name in names:
                room = known.get(name)
                if room is not None:
                    topics.append((room.topic, room.topic_by, room.topic_at_ms))
                else:
                    topics.append(_kept_topic(kept.get(name, {})))
            done(topics)

        if remote and self.backplane.lists_rooms:
            self.backplane.room_topics([name.casefold() for name in remote], answered)
        else:
            answered(None)

    def room_member_count(self, room: Room) -> int:
        return len(room.members) + len(room.remote)
