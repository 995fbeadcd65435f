"""What every part of the cluster shares: the versioned key prefix, the message envelope
(encode, decode, version check), the room event kinds on the wire and the error of an
unreachable Redis.

Every key and channel starts with ``{cluster_name}:v1:`` and every message carries
``"v": 1``, so a later layout can run beside this one during a rolling upgrade (see
docs/cluster.md for every key and channel with its TTL).
"""
from __future__ import annotations

import json
import logging
import struct

from .. import events as ev
from ..errors import ChatError, ErrorCode

log = logging.getLogger("chatcore.cluster")

ENVELOPE_VERSION = 1            # the "v" of every message; bumped with the layout
KEY_VERSION = "v1"              # in every key and channel name

# Kind name on the wire -> the room event it carries (all its fields but request_id, as
# JSON). A new kind of room event adds one entry here (and its hub tables: remote_rooms).
ROOM_EVENT_KINDS: dict[str, type] = {
    "message": ev.RoomMessage,
    "action": ev.RoomAction,
    "topic": ev.TopicChanged,
    "away": ev.AwayChanged,         # a member went away or came back (hub.remote_rooms)
}
# Kinds with a meaning of their own: "join" (names), "leave" (name, reason, message),
# "rename" (old, name), "sync" (a node opening the room: nothing to deliver), and
# moderation's "modes" and "kick" (cluster.moderation).


def key_prefix(cluster_name: str) -> str:
    return f"{cluster_name}:{KEY_VERSION}"


def unreachable() -> ChatError:
    return ChatError(ErrorCode.CLUSTER_UNREACHABLE,
                     "the cluster is out of reach (Redis); try again shortly")


class Envelopes:
    """The envelope part of ``Cluster``: ``node``, ``instance`` and ``_unknown_versions``
    are the Cluster's."""

    def _envelope(self, fields: dict) -> bytes:
        return json.dumps({"v": ENVELOPE_VERSION, "node": self.node.name,
                           "instance": self.instance, **fields}).encode()

    def _decode(self, data: bytes, what: str, required: tuple) -> dict | None:
        """The message in ``data`` if it is a JSON object of this envelope version with every
        field of ``required``; else None (a malformed one is logged, another version once)."""
        try:
            message = json.loads(data)
            for name in required:
                message[name]
            version = message.get("v")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("cluster: ignoring a malformed %s: %.80r", what, data)
            return None
        if version != ENVELOPE_VERSION:
            self._unknown_version(version, message.get("node"))
            return None
        return message

    def _unknown_version(self, version, origin) -> None:
        """Log once per version seen: a node of another layout is running beside this one."""
        if version not in self._unknown_versions:
            self._unknown_versions.add(version)
            log.warning("cluster: ignoring messages of envelope version %r from %r "
                        "(this node speaks %d)", version, origin, ENVELOPE_VERSION)


# -- room batches (envelope format 2) -----------------------------------------------------------
#
# Every event a node sends to one room channel in one loop turn, published as one message:
#
#   0x02 | first seq (u64) | count (u16) | node (u16 length + UTF-8) | instance (likewise)
#        | count native frames, each as the native protocol encodes it (docs/protocol.md:
#          u32 length, u8 type, u32 request id, payload)
#
# so a receiving node whose members are all native fans the frames out as they are, and
# builds events only for the members that need them (IRC). The records are numbered
# ``first seq`` .. ``first seq + count - 1`` in the channel's per-origin numbering, which
# JSON messages (v1, first byte ``{``) share.

ROOM_BATCH_FORMAT = 2
_BATCH_HEAD = struct.Struct(">BQH")
_LENGTH = struct.Struct(">H")
_FRAME_HEAD = struct.Struct(">IB")


def encode_room_batch(node: str, instance: str, first_seq: int, frames: list) -> bytes:
    """One room batch of ``frames`` (native frames, bytes) numbered from ``first_seq``."""
    node_raw, instance_raw = node.encode(), instance.encode()
    return b"".join((_BATCH_HEAD.pack(ROOM_BATCH_FORMAT, first_seq, len(frames)),
                     _LENGTH.pack(len(node_raw)), node_raw,
                     _LENGTH.pack(len(instance_raw)), instance_raw, *frames))


def decode_room_batch(data: bytes):
    """(node, instance, first seq, frames start, [(frame type, start, end)]) of a room
    batch; raises ValueError when it is malformed (frames that do not add up to the rest)."""
    try:
        fmt, first_seq, count = _BATCH_HEAD.unpack_from(data, 0)
        pos = _BATCH_HEAD.size
        (size,) = _LENGTH.unpack_from(data, pos)
        node = data[pos + 2:pos + 2 + size].decode()
        pos += 2 + size
        (size,) = _LENGTH.unpack_from(data, pos)
        instance = data[pos + 2:pos + 2 + size].decode()
        pos += 2 + size
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"bad room batch header: {exc}") from None
    if fmt != ROOM_BATCH_FORMAT:
        raise ValueError(f"room batch format {fmt}")
    start, end, frames = pos, len(data), []
    unpack = _FRAME_HEAD.unpack_from
    for _ in range(count):
        if pos + 5 > end:
            raise ValueError("room batch truncated")
        length, kind = unpack(data, pos)
        if length < 5 or pos + 4 + length > end:
            raise ValueError("room batch frame runs past its end")
        frames.append((kind, pos, pos + 4 + length))
        pos += 4 + length
    if pos != end:
        raise ValueError(f"room batch has {end - pos} trailing bytes")
    return node, instance, first_seq, start, frames
