"""Rooms across nodes: one channel per room, every room event published on it once and
handed back, to its origin too, in the order Redis gives.

- ``{p}:room:{room key}``  channel of one room: its events (``ROOM_EVENT_KINDS``), joins,
  leaves and sync markers; a node subscribes while it has members in the room.

A node opens a room (its first member joins) in three steps: it subscribes the channel, runs
``SYNC_SCRIPT`` (publishes a ``sync`` marker and reads the room's state and members in one
atomic step), and goes ahead once it holds both the reply and its own marker back from the
channel: a join published before the marker is in the snapshot, one after it arrives on the
channel. Until then the room is ``shared`` (its events go through Redis); afterwards it is
shared while another node has members in it or this node's own events are still on the way,
and local otherwise (delivered at once, not published). The Redis state kept with each join
and leave is in ``roomstate``.

Every published room message carries ``seq``, numbered per (origin instance, room channel)
from 1; a receiver counts what it missed per (instance, channel), the only numbering it can
check since it hears only the channels it subscribes.

Events that change no kept state (messages, actions, away) are batched (``room_batches``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import events as ev
from ..broker import BrokerUnavailable, ReplyError
from ..errors import ChatError, ErrorCode
from ..events import Reason
from ..hub.model import Room, RoomSnapshot
from ..hub.remote_rooms import ROOM_STATE_FIELDS
from ..protocol import encode_event
from .envelope import ROOM_EVENT_KINDS, decode_room_batch, log
from .moderation import MODERATION_KINDS
from .room_batches import RoomBatches
from .roomstate import (JOIN_SCRIPT, LEAVE_SCRIPT, RENAME_SCRIPT, STATE_SCRIPT, SYNC_SCRIPT,
                        RoomState)

def _kind_of(event) -> str:
    for name, kind in ROOM_EVENT_KINDS.items():
        if type(event) is kind:
            return name
    raise ValueError(f"{type(event).__name__} is not a room event kind")


def _fields(event) -> dict:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
            if f.name != "request_id"}


@dataclass(eq=False, slots=True)
class RoomLink:
    """This node's side of one room channel."""
    room: Room
    channel: str
    seq: int = 0                                        # this instance's, on this channel
    pending: dict = field(default_factory=dict)         # own seq -> deliver, until it is back
    last_seq: dict = field(default_factory=dict)        # origin instance -> last seq heard
    gaps: int = 0
    syncing: bool = False
    subscribed: bool = False            # Redis confirmed the channel's subscription
    sync_seq: int = 0
    marker_seen: bool = False
    snapshot: RoomSnapshot | None = None
    buffered: list | None = None        # messages after the marker, before the snapshot
    on_synced: object = None
    exists: bool = True                 # False: the room was new cluster-wide at the sync
    batch: list | None = None           # native frames of this turn, not yet published
    batch_seq: int = 0                  # the seq of its first frame
    batch_bytes: int = 0


class ClusterRooms(RoomBatches, RoomState):
    """The rooms part of ``Cluster`` (the hub's backplane). State: ``room_links``."""

    # -- opening and closing ---------------------------------------------------------------

    def open_room(self, room: Room, done) -> None:
        if not self.broker.up:
            done(None)                  # alone until Redis is back (then: _resync_rooms)
            return
        link = self.room_links[room.key] = RoomLink(room, self.room_channel(room.key))
        self._sync_room(link, done)

    def _sync_room(self, link: RoomLink, done) -> None:
        link.syncing, link.marker_seen, link.snapshot, link.buffered = True, False, None, None
        link.on_synced = done
        self._update_shared(link)

        def subscribed(ok: bool) -> None:
            if self.room_links.get(link.room.key) is not link:
                return
            link.subscribed = ok
            if not ok:
                self._synced(link)
                return
            self._update_shared(link)
            self._flush_batch(link)
            link.seq += 1
            link.sync_seq = link.seq
            self.broker.call("EVAL", SYNC_SCRIPT, 3, self.room_info_key(link.room.key),
                             self.room_who_key(link.room.key), f"{self._prefix}:userinfo",
                             link.channel,
                             self._envelope({"kind": "sync", "seq": link.seq}),
                             self.alive_prefix, callback=lambda reply: got(reply))

        def got(reply) -> None:
            if self.room_links.get(link.room.key) is not link or not link.syncing:
                return
            if isinstance(reply, BrokerUnavailable | ReplyError) or not isinstance(reply, list):
                if isinstance(reply, ReplyError):
                    log.error("cluster: Redis refused a room sync: %s", reply)
                self._synced(link)
                return
            link.snapshot = self.parse_snapshot(reply)
            link.exists = bool(link.snapshot.fields)
            if link.marker_seen:
                self._synced(link)

        self.broker.subscribe(link.channel, lambda channel, data: self._on_room_message(
            link, data), subscribed)

    def _synced(self, link: RoomLink) -> None:
        """The snapshot and the marker are both in (or Redis went away: alone for now)."""
        link.syncing = False
        buffered, link.buffered = link.buffered or [], None
        done, link.on_synced = link.on_synced, None
        snapshot = link.snapshot
        if done is not None:
            done(snapshot)
        elif snapshot is not None and self.hub.rooms.get(link.room.key) is link.room:
            self.hub.room_snapshot(link.room, snapshot)
        for message in buffered:
            self._dispatch(link, message)
        self._update_shared(link)

    def close_room(self, room: Room) -> None:
        link = self.room_links.get(room.key)
        if link is None:
            return
        self._flush_batch(link)                         # what was said goes out still
        del self.room_links[room.key]
        self.broker.unsubscribe(link.channel)
        room.shared = False
        for deliver in link.pending.values():           # nobody here to deliver to
            deliver()

    def _update_shared(self, link: RoomLink) -> None:
        # Not before the subscription is confirmed: an event published then would not come
        # back here, and its sender would wait for it for ever.
        link.room.shared = self.broker.up and link.subscribed and bool(
            link.syncing or link.pending or link.room.remote)

    # -- joining and leaving ---------------------------------------------------------------

    def join_room(self, room: Room, session, then) -> None:
        link = self.room_links.get(room.key)
        if link is None or not self.broker.up:
            then()
            return
        self._flush_batch(link)
        link.seq += 1
        seq = link.seq
        # The first join of a room new cluster-wide waits for the script's answer: the
        # room limit is the cluster's. Others on a shared room wait for their notice.
        creating = not link.exists
        shared = room.shared and not creating

        def answered(reply) -> None:
            if reply == 0:
                link.pending.pop(seq, None)
                self._update_shared(link)
                then(ChatError(ErrorCode.SERVER_ROOM_LIMIT,
                               f"the cluster has {self.hub.limits.max_rooms} rooms, its "
                               f"limit; join an existing one"))
            elif isinstance(reply, BrokerUnavailable | ReplyError):
                if creating:
                    then()
                else:
                    self._flush_one(link, seq)
            elif creating:
                link.exists = True
                if reply != 2:          # another node made the room first: its founder
                    self.hub.founding_lost(room, session)
                then()

        if shared:
            link.pending[seq] = then
        self.broker.call("EVAL", JOIN_SCRIPT, 5, *self.room_keys(room.key),
                         room.key, room.name, link.channel,
                         self._envelope({"kind": "join", "seq": seq, "names": [session.name],
                                         **_away_of([session]),
                                         **({"created": room.modes.created_at_ms}
                                            if creating else {})}),
                         self.hub.limits.max_rooms, self._who_prefix(), session.key,
                         session.name, callback=answered)
        if not shared and not creating:
            then()

    def leave_room(self, room: Room, session, event: ev.UserLeft, then) -> None:
        link = self.room_links.get(room.key)
        if link is None or not self.broker.up:
            then()
            return
        self._flush_batch(link)
        link.seq += 1
        if room.shared:
            link.pending[link.seq] = then
        self._leave(room.key, session, link.channel, {
            "kind": "leave", "seq": link.seq, "name": event.name,
            "reason": int(event.reason), "message": event.message},
            self._publish_answered(link, link.seq))
        if not room.shared:
            then()

    def drop_membership(self, room_key: str, session) -> None:
        """The hub's backplane: a membership that came along with a resumed session ends
        (the session could not rejoin the room here). Published unnumbered (seq 0: this
        node may have no link, so no count, for the room)."""
        if not self.broker.up:
            return                      # gone with the registrations Redis lost
        self._leave(room_key, session, self.room_channel(room_key), {
            "kind": "leave", "seq": 0, "moved": 1, "name": session.name,
            "reason": int(Reason.DISCONNECTED),
            "message": f"could not rejoin on server {self.node.name}"})

    def _leave(self, room_key: str, session, channel: str, notice: dict,
               callback=None) -> None:
        """LEAVE_SCRIPT: ``session``'s membership of this instance ends, ``notice`` told."""
        self.broker.call("EVAL", LEAVE_SCRIPT, 5, *self.room_keys(room_key), room_key,
                         session.key, channel, self._envelope(notice),
                         f"{self.instance}\t", callback=callback)

    def rename_in_room(self, room: Room, session, old_name: str) -> None:
        """A member here took a new name: its entry moves (same script), others are told
        with a ``rename`` (published even on a local room: the state is shared)."""
        link = self.room_links.get(room.key)
        if link is None or not self.broker.up:
            return                      # registered afresh when Redis is back
        self._flush_batch(link)
        link.seq += 1
        self.broker.call("EVAL", RENAME_SCRIPT, 5, *self.room_keys(room.key), room.key,
                         old_name.casefold(), session.key, self._envelope({
                             "kind": "rename", "seq": link.seq, "old": old_name,
                             "name": session.name}),
                         f"{self.instance}\t", self._who_prefix() + session.name,
                         link.channel)

    # -- events ----------------------------------------------------------------------------

    def relay_room(self, room: Room, event, deliver) -> bool:
        """Publish a room event; True if ``deliver()`` will run once it is back (the room
        is shared), False if the hub delivers it now (the room is local: then only events
        that change kept state are published, for nodes that open the room later)."""
        link = self.room_links.get(room.key)
        if link is None or not self.broker.up:
            return False
        state_fields = ROOM_STATE_FIELDS.get(type(event))
        if state_fields is None:
            if not room.shared:
                return False
            if link.batch is not None or self._peers_read_batches():
                self._batch(link, encode_event(event), deliver)
                return True
        self._flush_batch(link)
        link.seq += 1
        message = self._envelope({"kind": _kind_of(event), "seq": link.seq, **_fields(event)})
        if room.shared:
            link.pending[link.seq] = deliver
        callback = self._publish_answered(link, link.seq) if room.shared else None
        if state_fields is None:
            self.broker.publish(link.channel, message, callback=callback)
        else:
            pairs = [part for name, value in state_fields(event).items()
                     for part in (name, value)]
            self.broker.call("EVAL", STATE_SCRIPT, 1, self.room_info_key(room.key),
                             link.channel, message, *pairs, callback=callback)
        return room.shared

    def _publish_answered(self, link: RoomLink, seq: int):
        def answered(reply) -> None:
            if isinstance(reply, BrokerUnavailable | ReplyError):
                self._flush_one(link, seq)      # delivered here at least (at-most-once there)
        return answered

    def _flush_one(self, link: RoomLink, seq: int) -> None:
        deliver = link.pending.pop(seq, None)
        if deliver is not None:
            deliver()
        self._update_shared(link)

    def _on_room_message(self, link: RoomLink, data: bytes) -> None:
        if data[:1] != b"{":                # a room batch (format 2): native frames
            try:
                node, instance, seq, _, frames = decode_room_batch(data)
            except ValueError as exc:
                log.warning("cluster: ignoring a malformed room batch (%s): %.80r", exc, data)
                return
            message = {"kind": "batch", "node": node, "instance": instance, "seq": seq,
                       "data": data, "frames": frames}
            count = len(frames)
        else:
            message = self._decode(data, "room message", ("kind", "node", "instance", "seq"))
            count = 1
            if message is None:
                return
            instance, seq = message["instance"], message["seq"]
            if not isinstance(seq, int):
                return
        if self.room_links.get(link.room.key) is not link:
            return
        last = link.last_seq.get(instance, 0)
        if last and seq > last + 1:
            missed = seq - last - 1
            link.gaps += missed
            self.room_gaps += missed
            log.warning("cluster: missed %d message(s) of room %r from node %r (seq %d "
                        "after %d)", missed, link.room.name, message["node"], seq, last)
        link.last_seq[instance] = seq + count - 1
        if link.syncing:
            if instance == self.instance and seq == link.sync_seq:
                link.marker_seen = True
                link.buffered = []
                if link.snapshot is not None:
                    self._synced(link)
                return
            if link.buffered is not None:
                link.buffered.append(message)
                return
            if message["kind"] in ("join", "leave", "rename"):
                return                  # before the marker: the snapshot holds it
            if message["kind"] in MODERATION_KINDS and instance != self.instance:
                return                  # (this node's own: its request is answered)
        self._dispatch(link, message)

    def _dispatch(self, link: RoomLink, message: dict) -> None:
        kind = message["kind"]
        if kind in MODERATION_KINDS:
            try:
                self._moderation_arrived(link, message)
            except (KeyError, TypeError, ValueError):
                log.warning("cluster: ignoring a malformed room message: %.80r", message)
            self._update_shared(link)
            return
        if message["instance"] == self.instance:
            if kind == "batch":
                self._own_batch_back(link, message)
                self._update_shared(link)
            else:
                self._flush_one(link, message["seq"])
                self._moderation_extras(link, message)
            return
        key = link.room.key
        try:
            if kind == "batch":
                self._batch_arrived(key, message)
            elif kind == "join":
                away = message.get("away")
                self.hub.remote_members_joined(key, [str(n) for n in message["names"]],
                                               message["node"],
                                               away if isinstance(away, dict) else None)
            elif kind == "leave":
                # ``stale``: of a membership that had moved to another instance: nothing.
                # ``moved``: a membership that came along with a resumed session, wherever
                # this node last saw it (``drop_membership``).
                if not message.get("stale"):
                    self.hub.remote_member_left(key, ev.UserLeft(
                        link.room.name, str(message["name"]), int(message["reason"]),
                        str(message.get("message", ""))),
                        None if message.get("moved") else message["node"])
            elif kind == "rename":
                self.hub.remote_member_renamed(key, str(message["old"]),
                                               str(message["name"]), message["node"])
            elif kind in ROOM_EVENT_KINDS:
                cls = ROOM_EVENT_KINDS[kind]
                self.hub.room_event_arrived(key, cls(**{
                    f.name: message[f.name] for f in dataclasses.fields(cls)
                    if f.name != "request_id"}))
            elif kind != "sync":
                self._unknown_room_kind(kind, message["node"])
            self._moderation_extras(link, message)
        except (KeyError, TypeError, ValueError):
            log.warning("cluster: ignoring a malformed room message: %.80r", message)
        self._update_shared(link)

    def _unknown_room_kind(self, kind, origin) -> None:
        if kind not in self._unknown_room_kinds:
            self._unknown_room_kinds.add(kind)
            log.warning("cluster: ignoring room messages of kind %r from %r (this node "
                        "does not know it)", kind, origin)

    # -- outages and lost nodes ------------------------------------------------------------

    def _rooms_down(self) -> None:
        """Redis is gone: what was on the way is delivered here, rooms go on locally."""
        self._batching.clear()
        for link in list(self.room_links.values()):
            link.batch = None
            link.subscribed = False         # renewed on reconnect, confirmed again
            pending, link.pending = link.pending, {}
            for seq in sorted(pending):
                pending[seq]()
            if link.syncing:
                self._synced(link)
            link.room.shared = False

    def _rooms_up(self) -> None:
        """Redis is back: every room with members here syncs again and registers them."""
        for room in list(self.hub.rooms.values()):
            if not room.members and room.opening is None:
                continue
            link = self.room_links.get(room.key)
            if link is None:
                link = self.room_links[room.key] = RoomLink(room, self.room_channel(room.key))
            if link.syncing:
                continue
            link.last_seq.clear()
            # Before the sync, whose snapshot must hold them (the subscription may be
            # confirmed already, and the sync script sent at once): else this node's members
            # would come out of the snapshot without the flags its restore writes back.
            if room.members:
                self._register_all(link)
                self._restore_moderation(link)
            self._sync_room(link, None)

    def _register_all(self, link: RoomLink) -> None:
        room = link.room
        self._flush_batch(link)
        link.seq += 1
        pairs = [part for key, session in room.members.items() for part in (key, session.name)]
        self.broker.call("EVAL", JOIN_SCRIPT, 5, *self.room_keys(room.key), room.key,
                         room.name, link.channel,
                         self._envelope({"kind": "join", "seq": link.seq,
                                         "names": [s.name for s in room.members.values()],
                                         **_away_of(room.members.values())}),
                         0, self._who_prefix(), *pairs)

    def _rooms_node_lost(self, node_name: str, reason) -> None:
        rooms = self.hub.remote_node_lost(node_name, reason)
        for room in rooms:
            link = self.room_links.get(room.key)
            if link is not None:
                self._update_shared(link)
        self._heirs_after_node_lost(rooms, node_name)


def _away_of(sessions) -> dict:
    """The ``away`` field of a join: name -> away message of those of ``sessions`` away."""
    away = {session.name: session.away for session in sessions if session.away}
    return {"away": away} if away else {}
