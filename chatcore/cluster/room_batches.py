"""Room batches, the rooms part of the cluster that carries most of its traffic.

Events that change no kept state (messages, actions, away) are batched: every such event of a
loop turn for one channel leaves in one ``PUBLISH`` of a room batch (``envelope``: the events'
native frames, numbered in the channel's sequence), flushed before the broker's write, and
before any scripted event (join, leave, rename, topic, sync) of that channel, so the channel's
order is the order the events were made in. A node hands a batch's message and action frames
to its native members as they are (``Hub.room_frames_arrived``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker import BrokerUnavailable, ReplyError
from ..errors import ProtocolError
from ..hub.model import Room
from ..hub.remote_rooms import ROOM_BROADCAST_ONLY, ROOM_STATE_FIELDS
from ..protocol import TYPE_OF, Role, decode_frame
from .envelope import ROOM_EVENT_KINDS, encode_room_batch

if TYPE_CHECKING:
    from .rooms import RoomLink

# Native frame type -> event class, of the kinds a room batch carries (those that keep no
# state in Redis: the others are published by a script, with the state).
BATCHED_FRAME_TYPES = {TYPE_OF[cls]: cls for cls in ROOM_EVENT_KINDS.values()
                       if cls not in ROOM_STATE_FIELDS}
# ... and those of them a node hands on to its members as they are (nothing to apply).
PLAIN_FRAME_TYPES = frozenset(TYPE_OF[cls] for cls in ROOM_BROADCAST_ONLY)


class RoomBatches:
    """The batching part of ``ClusterRooms``: its room links' ``batch`` fields, the
    Cluster's ``_batching`` list and ``room_batches_sent``; ``_flush_one`` and
    ``_update_shared`` are ClusterRooms'."""

    def batch_link(self, room: Room):
        """The link of ``room`` when ``relay_room`` would put a message to it in this turn's
        room batch (the room shared, Redis up, batches read by every peer): asked by the
        lane (chatcore.lane) before it stamps a message to a shared room, which it then
        hands over as its native frame (``batch_frame``); None when ``relay_room`` would do
        anything else (the lane then leaves the request to the hub path)."""
        link = self.room_links.get(room.key)
        if (link is None or not room.shared or not self.broker.up
                or (link.batch is None and not self._peers_read_batches())):
            return None
        return link

    def batch_frame(self, link: RoomLink, frame: bytes, deliver) -> None:
        """``relay_room``'s batching of a message, given its native frame (the lane's:
        ``encode_event`` of the event); ``deliver(told)`` as there."""
        self._batch(link, frame, deliver)

    def _peers_read_batches(self) -> bool:
        """Whether every live peer announced that it reads room batches (a rolling upgrade
        from a node that does not: this one publishes v1 JSON meanwhile)."""
        return all(peer.room_batches for peer in self.peers.values())

    def _batch(self, link: RoomLink, frame: bytes, deliver) -> None:
        """``frame`` joins the channel's batch of this turn (see the module)."""
        link.seq += 1
        link.pending[link.seq] = deliver
        if link.batch is None:
            link.batch, link.batch_seq, link.batch_bytes = [frame], link.seq, len(frame)
            self._batching.append(link)
        else:
            link.batch.append(frame)
            link.batch_bytes += len(frame)
        if link.batch_bytes >= self.config.room_batch_max_bytes:
            self._flush_batch(link)

    def _flush_batch(self, link: RoomLink) -> None:
        """Publish the channel's batch, if it has one (one PUBLISH)."""
        frames = link.batch
        if frames is None:
            return
        link.batch = None
        first = link.batch_seq
        self.room_batches_sent += 1
        self.broker.publish(link.channel, encode_room_batch(
            self.node.name, self.instance, first, frames),
            callback=self._batch_answered(link, first, len(frames)))

    def _flush_batches(self) -> None:
        """Before the broker writes (each loop turn): every channel's batch goes out."""
        if not self._batching:                  # (the turn's second flush, most turns)
            return
        batching, self._batching = self._batching, []
        for link in batching:
            if link.batch is not None:
                self._flush_batch(link)

    def _batch_answered(self, link: RoomLink, first: int, count: int):
        def answered(reply) -> None:
            if isinstance(reply, BrokerUnavailable | ReplyError):
                for seq in range(first, first + count):     # delivered here at least
                    self._flush_one(link, seq)
        return answered

    def _own_batch_back(self, link: RoomLink, message: dict) -> None:
        """This node's batch is back: each run of message and action frames goes to the
        members as it is, then their senders are answered; the rest one by one."""
        pending, data, frames = link.pending, message["data"], message["frames"]
        key = link.room.key
        seq, start, told = message["seq"], 0, []
        for index, (kind, _, _) in enumerate(frames):
            deliver = pending.pop(seq + index, None)
            if deliver is not None and kind in PLAIN_FRAME_TYPES:
                if not told:
                    start = index
                told.append(deliver)
                continue
            if told:
                self._frames_told(key, data, frames[start:index], told)
                told = []
            if deliver is not None:             # (None: delivered already, in an outage)
                deliver()
        if told:
            self._frames_told(key, data, frames[start:], told)

    def _frames_told(self, key: str, data: bytes, frames: list, told: list) -> None:
        self._frames_arrived(key, data, frames)
        for deliver in told:
            deliver(True)

    def _batch_arrived(self, key: str, message: dict) -> None:
        """Another node's batch: each run of message and action frames goes to the members
        at once, as it is; any other event is built and handed over by itself."""
        data, frames = message["data"], message["frames"]
        run = 0
        for index, (kind, start, end) in enumerate(frames):
            if kind in PLAIN_FRAME_TYPES:
                run += 1
                continue
            if run:
                self._frames_arrived(key, data, frames[index - run:index])
                run = 0
            cls = BATCHED_FRAME_TYPES.get(kind)
            if cls is None:
                self._unknown_room_kind(f"0x{kind:02x}", message["node"])
                continue
            self.hub.room_event_arrived(key, _frame_event(data, kind, start, end))
        if run:
            self._frames_arrived(key, data, frames[len(frames) - run:])

    def _frames_arrived(self, key: str, data: bytes, frames: list) -> None:
        built: list = []

        def events() -> list:           # only for members that need events (IRC)
            if not built:
                built.extend(_frame_event(data, *frame) for frame in frames)
            return built

        self.hub.room_frames_arrived(key, data[frames[0][1]:frames[-1][2]], len(frames),
                                     events)


def _frame_event(data: bytes, kind: int, start: int, end: int):
    """The event a native frame of a room batch carries (ValueError when malformed)."""
    try:
        return decode_frame(kind, int.from_bytes(data[start + 5:start + 9], "big"),
                            data[start + 9:end], role=Role.CLIENT)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
