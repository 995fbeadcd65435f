"""Room moderation of rooms shared by cluster nodes (docs/cluster.md, "Room moderation
across nodes"): the hub's side.

On a cluster node every moderation request of a room goes to the backplane, which decides
it against the room's state in Redis in one atomic step and publishes the outcome on the
room's channel; every node (the requester's too) applies the outcome when it arrives, in the
room's one order, and tells its members. So a node's ``Room.modes`` is a replica of the
shared state, and the checks a node makes by itself (may this member speak, set the topic,
join) read that replica. Members of other nodes hold their operator and voice flags by key
in ``RoomModes.remote_operators`` / ``remote_voiced``.

Invitations are kept by the invitee's node, on the invited ``Session`` (``Session.invites``:
room key -> the room's creation time), and checked there on join: they end with the
session, and with the room (a room made anew under the same name has another creation
time).
"""
from __future__ import annotations

import json

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from .checks import answer_or_return, quote

_FLAGS = {"i": "invite_only", "m": "moderated", "s": "secret", "t": "topic_locked"}


def load_shared_modes(room, fields: dict) -> None:
    """``ROOM_STATE_LOADERS`` entry: a room's modes and member flags from the shared state
    (``mode:*`` and ``priv:{member key}`` fields of the snapshot). A room the shared state
    has no modes for (new cluster-wide) keeps what it has (its founder's operator flag)."""
    if "mode:created" not in fields:
        return
    modes = room.modes
    flags = fields.get("mode:flags", "")
    for letter, attr in _FLAGS.items():
        setattr(modes, attr, letter in flags)
    modes.key = fields.get("mode:key", "")
    modes.limit = _int(fields.get("mode:limit", "0"))
    modes.created_at_ms = _int(fields["mode:created"])
    modes.bans = parse_bans(fields.get("mode:bans", "[]"))
    modes.operators, modes.voiced = set(), set()
    modes.remote_operators, modes.remote_voiced = set(), set()
    for name, value in fields.items():
        if not name.startswith("priv:"):
            continue
        key = name[5:]
        session = room.members.get(key)
        if "o" in value:
            (modes.operators.add(session) if session else modes.remote_operators.add(key))
        if "v" in value:
            (modes.voiced.add(session) if session else modes.remote_voiced.add(key))
    modes.gated = modes.moderated or bool(modes.bans)


def parse_bans(text: str) -> list:
    """The ``bans`` field (JSON: ``[[mask, set by, set at ms], ...]``) as ``ev.Ban``s;
    entries that are not of that form are skipped."""
    try:
        raw = json.loads(text)
    except ValueError:
        return []
    bans = []
    for entry in raw if isinstance(raw, list) else ():
        if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and isinstance(entry[2], int | float)):
            bans.append(ev.Ban(entry[0], entry[1], int(entry[2])))
    return bans


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


class SharedModeration:
    """The shared-moderation part of ``Moderation`` (``Hub``): requests handed to the
    backplane, and the outcomes it hands back."""

    # -- requests (called by Moderation when the backplane shares the room's moderation) ---

    def _shared_modes(self, session, room, planned, refused, done):
        planned = [change for change in planned if change.mode != "n"]
        if not planned:
            return answer_or_return(done, refused)

        def decided(outcome) -> None:
            if done is not None:
                done(outcome if isinstance(outcome, ChatError) else refused)

        self.backplane.moderate(room, session, "modes", planned, decided)
        return None if done is not None else refused

    def _shared_kick(self, session, room, name: str, victim_name: str, reason: str, done):
        def decided(outcome) -> None:
            if done is not None:
                done(outcome)

        self.backplane.moderate(room, session, "kick", (victim_name, reason), decided)

    def _shared_invite(self, session, room, name: str, done):
        key = name.casefold()
        if key in room.members or key in room.remote:
            member = room.members.get(key)
            raise ChatError(ErrorCode.ALREADY_IN_ROOM,
                            f"{member.name if member else room.remote[key][0]} is already "
                            f"in room {quote(room.name)}")
        invitee = self.sessions.get(key)
        if invitee is not None:
            self._invite_here(invitee, room.key, room.modes.created_at_ms,
                              ev.Invited(room.name, session.name))
            return answer_or_return(done, None)

        def answered(outcome) -> None:
            if outcome is True:
                outcome = None
            elif outcome is False:
                outcome = ChatError(ErrorCode.NO_SUCH_USER,
                                    f"no user named {quote(name)} is online")
            if done is not None:
                done(outcome)

        self.backplane.send_to_user(key, {"kind": "invite", "from": session.name,
                                          "room": room.name,
                                          "created": room.modes.created_at_ms}, answered)
        return None

    def _invite_here(self, invitee, room_key: str, created_at_ms: int, event) -> None:
        invites = invitee.invites
        if invites is None:
            invites = invitee.invites = {}
        invites.pop(room_key, None)
        invites[room_key] = created_at_ms
        while len(invites) > self.limits.max_invites_per_user:
            del invites[next(iter(invites))]
        invitee.outlet.deliver(invitee.endpoint, event)
        self.work_done += 1

    def invitation_arrived(self, key: str, message: dict) -> None:
        """An invitation for the local user ``key`` from a member of another node."""
        invitee = self.sessions.get(key)
        room, by, created = message.get("room"), message.get("from"), message.get("created")
        if (invitee is None or not isinstance(room, str) or not isinstance(by, str)
                or not isinstance(created, int)):
            return
        self._invite_here(invitee, room.casefold(), created, ev.Invited(room, by))

    def _use_invitation(self, session, room) -> bool:
        """True (and it is used up) if ``session`` holds an invitation to ``room`` as it
        is now (made before the room ended and began again, it is not)."""
        invites = session.invites
        if not invites or invites.get(room.key) != room.modes.created_at_ms:
            return False
        del invites[room.key]
        return True

    # -- outcomes (every node, the requester's too, in the room's order) -------------------

    def shared_modes_arrived(self, room_key: str, by: str, changes, bans_at=None) -> None:
        """Changes the shared state took (``by``: who made them, "" for the server's
        choice of an operator; ``bans_at``: mask -> when a ban was set, ms): applied here
        and told to the members."""
        room = self.rooms.get(room_key)
        if room is None:
            return
        applied = tuple(change for change in changes
                        if self._apply_shared(room, by, change, bans_at))
        if applied and room.members:
            self._broadcast(room, ev.RoomModeChanged(room.name, by, applied))

    def founder_joined(self, room_key: str, name: str) -> None:
        """A member of another node founded the room (its first member cluster-wide)."""
        room = self.rooms.get(room_key)
        if room is not None:
            self._apply_shared(room, "", ev.ModeChange(True, "o", name))

    def founding_lost(self, room, session) -> None:
        """Another node founded the room first: this node's first member is no operator."""
        room.modes.operators.discard(session)

    def shared_kick_arrived(self, room_key: str, by: str, name: str, reason: str) -> None:
        """``name`` was kicked (the shared state has let it go already): its node removes
        it, every node tells its members ``Kicked`` then ``UserLeft(KICKED)``."""
        room = self.rooms.get(room_key)
        if room is None:
            return
        key = name.casefold()
        victim = room.members.get(key)
        if victim is None and key not in room.remote:
            return
        self._broadcast(room, ev.Kicked(room.name, name, by, reason))
        if victim is not None:
            self._remove_member(room, victim, Reason.KICKED, reason, publish=False)
            return
        self._forget_remote_flags(room, key)
        del room.remote[key]
        self._broadcast(room, ev.UserLeft(room.name, name, Reason.KICKED, reason))

    def _adopt_remote_flags(self, room, session) -> None:
        """``session`` joins here holding flags the shared state gave its key while it was
        a member of another node (it resumed here): they are its own now."""
        modes = room.modes
        if session.key in modes.remote_operators:
            modes.remote_operators.discard(session.key)
            modes.operators.add(session)
        if session.key in modes.remote_voiced:
            modes.remote_voiced.discard(session.key)
            modes.voiced.add(session)

    def _forget_remote_flags(self, room, key: str) -> None:
        room.modes.remote_operators.discard(key)
        room.modes.remote_voiced.discard(key)

    def _rename_remote_flags(self, room, old_key: str, new_key: str) -> None:
        modes = room.modes
        for holders in (modes.remote_operators, modes.remote_voiced):
            if old_key in holders:
                holders.discard(old_key)
                holders.add(new_key)

    def _apply_shared(self, room, by: str, change: ev.ModeChange, bans_at=None) -> bool:
        """Make a change the shared state made; whether it changed anything here."""
        modes = room.modes
        mode, adding, argument = change.mode, change.adding, change.argument
        if mode in _FLAGS:
            if getattr(modes, _FLAGS[mode]) == adding:
                return False
            setattr(modes, _FLAGS[mode], adding)
            if mode == "s":
                (self._room_index.discard if adding else self._room_index.add)(room.key)
        elif mode == "k":
            modes.key = argument if adding else ""
        elif mode == "l":
            modes.limit = _int(argument) if adding else 0
        elif mode in ("o", "v"):
            key = argument.casefold()
            member = room.members.get(key)
            if member is not None:
                holders, who = (modes.operators if mode == "o" else modes.voiced), member
            elif key in room.remote:
                holders, who = (modes.remote_operators if mode == "o"
                                else modes.remote_voiced), key
            else:
                return False
            if (who in holders) == adding:
                return False
            (holders.add if adding else holders.discard)(who)
        elif mode == "b":
            if adding:
                if any(ban.mask == argument for ban in modes.bans):
                    return False
                at_ms = (bans_at or {}).get(argument) or int(self._wallclock() * 1000)
                modes.bans.append(ev.Ban(argument, by, at_ms))
            else:
                kept = [ban for ban in modes.bans if ban.mask != argument]
                if len(kept) == len(modes.bans):
                    return False
                modes.bans = kept
        else:
            return False
        modes.gated = modes.moderated or bool(modes.bans)
        return True

