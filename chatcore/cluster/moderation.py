"""Room moderation across nodes: the backplane's side (docs/cluster.md, "Room moderation
across nodes"; the hub's side is hub.shared_moderation).

A moderation request of a room (``modes``, ``kick``) is one script (``moderation_scripts``)
that checks it against the room's shared state, changes that state and publishes the
outcome on the room's channel; every node applies the outcome when it arrives, in the
room's order, the requester's node too, which then answers the request. Joins name the
room's founder (``"founder": 1``), leaves and kicks of its last operator the next one
(``"heir"``), and a node that notices another is gone has the room's heir named if none is
left (``LOST_SCRIPT``: whichever node runs first names it, the others find it named).
Invitations travel on the invitee's user channel (``invite``) and are kept by its node.

While Redis is out of reach, moderation requests are refused (``CLUSTER_UNREACHABLE``) and
each node enforces the modes it last knew; the last-operator rule is applied by each node
for its own members, and after the outage each node writes its view back where the shared
state lost it (``RESTORE_SCRIPT``).
"""
from __future__ import annotations

import json
import time

from .. import events as ev
from ..broker import BrokerUnavailable, ReplyError
from ..errors import ChatError, ErrorCode
from ..hub.checks import quote
from ..hub.moderation import ROOM_MODE_LETTERS
from .envelope import log
from .moderation_scripts import KICK_SCRIPT, LOST_SCRIPT, MODES_SCRIPT, RESTORE_SCRIPT

# Room channel kinds published by the moderation scripts (rooms._dispatch hands them here).
MODERATION_KINDS = frozenset(("modes", "kick"))
_FLAG_ATTRS = {"i": "invite_only", "m": "moderated", "s": "secret", "t": "topic_locked"}


def _unreachable() -> ChatError:
    return ChatError(ErrorCode.CLUSTER_UNREACHABLE,
                     "room moderation is decided cluster-wide, and the cluster is out of "
                     "reach (Redis); try again shortly")


def parse_changes(raw) -> tuple[tuple, dict]:
    """A ``modes`` outcome's ``changes`` (``[[adding, letter, argument(, set at ms)],
    ...]``) as ``ev.ModeChange``s and the ban times; entries of another form are skipped."""
    changes, bans_at = [], {}
    for entry in raw if isinstance(raw, list) else ():
        if (not isinstance(entry, list) or len(entry) < 3 or not isinstance(entry[0], bool)
                or not isinstance(entry[1], str) or len(entry[1]) != 1
                or entry[1] not in ROOM_MODE_LETTERS or not isinstance(entry[2], str)):
            continue
        changes.append(ev.ModeChange(entry[0], entry[1], entry[2]))
        if entry[1] == "b" and len(entry) > 3 and isinstance(entry[3], int | float):
            bans_at[entry[2]] = int(entry[3])
    return tuple(changes), bans_at


class ClusterModeration:
    """The moderation part of ``Cluster`` (the hub's backplane); its state is the rooms'."""

    def shares_moderation(self, room) -> bool:
        link = self.room_links.get(room.key)
        if not self.broker.up or (link is not None and link.syncing):
            raise _unreachable()        # (syncing: its outcome could pass unheard)
        return link is not None

    def names_heirs(self, room) -> bool:
        return self.broker.up and room.key in self.room_links

    def moderate(self, room, session, kind: str, what, done) -> None:
        link = self.room_links[room.key]
        self._flush_batch(link)
        link.seq += 1
        seq = link.seq
        fields = {"kind": kind, "seq": seq, "by": session.name}
        keys = (self.rooms_key, self.room_info_key(room.key),
                f"{self._prefix}:room:{room.key}:members")
        if kind == "modes":
            args = [MODES_SCRIPT, 3, *keys, link.channel, self._envelope(fields), session.key,
                    int(time.time() * 1000), self.hub.limits.max_bans_per_room, session.name]
            for change in what:
                args += ["+" if change.adding else "-", change.mode, change.argument,
                         change.argument.casefold() if change.mode in "ov" else ""]
        else:
            name, reason = what
            fields.update(name=name, reason=reason)
            args = [KICK_SCRIPT, 4, *keys, self.room_who_key(room.key), link.channel,
                    self._envelope(fields), session.key, name.casefold(), room.key]

        def back(message=None) -> None:
            refused = None if message is None else message.get("refused")
            if message is None:
                done(_unreachable())
            elif refused == "not_operator":
                done(ChatError(ErrorCode.NOT_OPERATOR,
                               f"you are not an operator of room {quote(room.name)}"))
            elif refused == "not_member":
                done(ChatError(ErrorCode.USER_NOT_IN_ROOM,
                               f"{quote(what[0])} is not in room {quote(room.name)}"))
            else:
                done(None)

        link.pending[seq] = back
        self._update_shared(link)
        self.broker.call("EVAL", *args, callback=self._moderation_answered(link, seq))

    def _moderation_answered(self, link, seq: int):
        def answered(reply) -> None:
            if isinstance(reply, ReplyError):
                log.error("cluster: Redis refused a room moderation script: %s", reply)
            if isinstance(reply, BrokerUnavailable | ReplyError):
                self._flush_one(link, seq)      # refused: nothing was decided
        return answered

    # -- outcomes, from the room channel ---------------------------------------------------

    def _moderation_arrived(self, link, message: dict) -> None:
        """A ``modes`` or ``kick`` outcome (any node's, this one's too)."""
        key, kind = link.room.key, message["kind"]
        # Taken first: applying a kick may close the room here (its pending told then).
        deliver = (link.pending.pop(message["seq"], None)
                   if message["instance"] == self.instance else None)
        if not message.get("refused"):
            by = message.get("by", "")
            by = by if isinstance(by, str) else ""
            if kind == "modes":
                changes, bans_at = parse_changes(message.get("changes"))
                if changes:
                    self.hub.shared_modes_arrived(key, by, changes, bans_at)
            else:
                name, reason = message["name"], message.get("reason", "")
                if isinstance(name, str) and isinstance(reason, str):
                    self.hub.shared_kick_arrived(key, by, name, reason)
            self._heir_arrived(link, message)
        if deliver is not None:
            deliver(message)

    def _moderation_extras(self, link, message: dict) -> None:
        """What a join or leave notice says of moderation: its founder, its heir."""
        kind = message["kind"]
        if kind == "leave":
            self._heir_arrived(link, message)
        elif kind == "join" and message.get("founder") and message["instance"] != self.instance:
            names = message.get("names")
            if isinstance(names, list) and names and isinstance(names[0], str):
                self.hub.founder_joined(link.room.key, names[0])

    def _heir_arrived(self, link, message: dict) -> None:
        heir = message.get("heir")
        if isinstance(heir, str) and heir:
            self.hub.shared_modes_arrived(link.room.key, "", (ev.ModeChange(True, "o", heir),))

    # -- lost nodes and outages ------------------------------------------------------------

    def _heirs_after_node_lost(self, rooms, node_name: str) -> None:
        """``node_name`` is gone: each of ``rooms`` it had members in, left with no
        operator known here, has the shared state name one (``LOST_SCRIPT``)."""
        if not self.broker.up:
            return
        for room in rooms:
            link = self.room_links.get(room.key)
            modes = room.modes
            if link is None or modes.operators or any(key in room.remote for key in
                                                      modes.remote_operators):
                continue
            self._flush_batch(link)
            link.seq += 1
            link.pending[link.seq] = _nothing         # shared until it is back
            self._update_shared(link)
            self.broker.call("EVAL", LOST_SCRIPT, 2, self.rooms_key,
                             self.room_info_key(room.key), link.channel,
                             self._envelope({"kind": "modes", "seq": link.seq, "by": ""}),
                             node_name, callback=self._moderation_answered(link, link.seq))

    def _restore_moderation(self, link) -> None:
        """Redis is back: this node's view of the room's modes where the shared state has
        none (it restarted empty), and its own members' flags; what that changed in the
        shared flags is published (``RESTORE_SCRIPT``)."""
        room = link.room
        modes = room.modes
        flags = "".join(sorted(letter for letter, attr in _FLAG_ATTRS.items()
                               if getattr(modes, attr)))
        bans = json.dumps([[ban.mask, ban.set_by, ban.set_at_ms] for ban in modes.bans])
        members = []
        for key, session in room.members.items():
            members += [key, ("o" if session in modes.operators else "")
                        + ("v" if session in modes.voiced else ""), session.name]
        self._flush_batch(link)
        link.seq += 1
        base = f"{self._prefix}:room:{room.key}"
        self.broker.call("EVAL", RESTORE_SCRIPT, 2, base + ":modes", base + ":privs",
                         link.channel,
                         self._envelope({"kind": "modes", "seq": link.seq, "by": ""}),
                         flags, modes.key, modes.limit, bans, modes.created_at_ms, *members)


def _nothing(*_) -> None:
    pass
