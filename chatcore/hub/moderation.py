"""Room moderation: operators and voice, room modes, kicks, invitations and bans.

The rules (docs/protocol.md, "Room moderation", tells them to clients):

- The first joiner of a new room is its operator. Operators give and take operator (``o``)
  and voice (``v``), set the room's modes, kick members and (in a ``+i`` room) invite.
- A room always has an operator while it has members: when the last one leaves (or is
  kicked, or quits), the longest-present member left becomes operator, and the room is told
  with a ``RoomModeChanged`` whose ``name`` is empty (the server made the change). For the
  same reason the last operator cannot take its own ``o`` away.
- Modes: ``n`` (no outside messages: always on, as rooms have always worked), ``t`` (only
  operators set the topic), ``m`` (moderated: only operators and voiced members speak),
  ``i`` (invite-only), ``s`` (secret: left out of room lists, and its members, modes and
  existence hidden from non-members), ``k KEY`` (joining needs the key), ``l N`` (at most N
  members), ``b MASK`` (bans: a banned user cannot join, and a banned member cannot speak
  unless operator or voiced). A new room has ``n`` only.
- An invitation (``invite``) lets its user in past ``i``, ``k``, ``l`` and ``b`` once; it
  lasts until used, until the room ends or until the invitee's session ends.

Operators, voiced members and invitations are held as ``Session`` objects, not names, so a
rename carries them along and a new session under an old name inherits nothing.

Ban masks are IRC's ``nick!user@host`` globs, matched case-insensitively against
``name!name@chatcore``: every user, on either front end, shows that user and host (the IRC
front end's ``USER_HOST``), so in effect a ban names nick patterns.
"""
from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass, field

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from ..modes import takes_parameter
from .checks import CONTINUING, answer_or_return, check_text, quote
from .shared_moderation import SharedModeration

# The modes a room can have: flags (no parameter), and those with one.
FLAG_MODES = "imnst"
_FLAG_ATTRS = {"i": "invite_only", "m": "moderated", "s": "secret", "t": "topic_locked"}
MEMBER_MODES = "ov"
ROOM_MODE_LETTERS = "biklmnostv"

MAX_MODE_CHANGES = 12           # changes in one request; more is a mistake, not a use
MAX_MODE_PARAMETERS = 4         # changes with a parameter in one request (IRC's MODES=4, as
                                # on most IRC servers)
MAX_BANS_PER_ROOM = 50          # IRC servers allow 50-100 (MAXLIST)
MAX_INVITES_PER_ROOM = 100      # pending invitations of one room; past it the oldest goes
MAX_KEY_CHARS = 23              # the KEYLEN of most IRC servers
MAX_MEMBER_LIMIT = 1_000_000    # the largest +l
MAX_BAN_MASK_CHARS = 100
BAN_USER_HOST = "chatcore"      # the user and host every user shows (irc.outlet.USER_HOST)

# A key: printable ASCII without space or comma (IRC's JOIN separates keys with commas).
_KEY_CHARS = re.compile(r"[!-+\--~]+\Z")
_MASK_CHARS = re.compile(r"[a-z0-9_.\-*?!@\[\]]+\Z")


@dataclass(eq=False, slots=True)
class RoomModes:
    """One room's moderation state (``Room.modes``)."""
    operators: set = field(default_factory=set)     # Sessions
    voiced: set = field(default_factory=set)        # Sessions
    remote_operators: set = field(default_factory=set)  # keys of members of other nodes
    remote_voiced: set = field(default_factory=set)     # (a cluster: shared_moderation)
    topic_locked: bool = False      # +t
    moderated: bool = False         # +m
    invite_only: bool = False       # +i
    secret: bool = False            # +s
    key: str = ""                   # +k
    limit: int = 0                  # +l; 0: none
    bans: list = field(default_factory=list)        # ev.Ban, oldest first
    invited: dict = field(default_factory=dict)     # Session -> None, oldest first
    created_at_ms: int = 0
    gated: bool = False             # +m or a ban: a message's sender must be checked

    def letters(self) -> str:
        """The modes set, alphabetically (``k`` and ``l`` included when set): ``"klnt"``."""
        if not (self.topic_locked or self.moderated or self.invite_only or self.secret
                or self.key or self.limit):
            return "n"                  # a new room's, and most rooms'
        letters = ["n"]
        letters += [mode for mode, attr in _FLAG_ATTRS.items() if getattr(self, attr)]
        if self.key:
            letters.append("k")
        if self.limit:
            letters.append("l")
        return "".join(sorted(letters))


def normalize_mask(mask: str) -> str:
    """A ban mask as it is kept and matched: casefolded, completed to nick!user@host."""
    mask = mask.casefold()
    if "!" not in mask and "@" not in mask:
        mask += "!*@*"
    elif "@" not in mask:
        mask += "@*"
    elif "!" not in mask:
        mask = "*!" + mask
    if len(mask) > MAX_BAN_MASK_CHARS:
        raise ChatError(ErrorCode.MODE_INVALID, f"ban mask is {len(mask)} characters long; "
                                                f"the limit is {MAX_BAN_MASK_CHARS}")
    if not _MASK_CHARS.match(mask):
        raise ChatError(ErrorCode.MODE_INVALID,
                        f"ban mask {quote(mask)} may only contain name characters, the "
                        f"wildcards * ? [ ] and ! @")
    return mask


class Moderation(SharedModeration):
    """The moderation part of ``Hub`` (its state is in each ``Room.modes``); ``Rooms`` calls
    the hooks ``_found_room``, ``_admit``, ``_check_topic``, ``_check_speech`` and
    ``_left_room``. On a cluster node the requests are decided by the backplane against the
    shared state (``shared_moderation``)."""

    # -- hooks of Rooms --------------------------------------------------------------------

    def _found_room(self, session, room) -> None:
        room.modes.operators.add(session)
        room.modes.created_at_ms = int(self._wallclock() * 1000)

    def _admit(self, session, room, key: str) -> None:
        """Raise the refusal of a join of an existing room; an invitation is used up.
        ``key`` CONTINUING: a membership continuing, admitted as it is."""
        if key is CONTINUING:
            return
        modes = room.modes
        if session in modes.invited:
            del modes.invited[session]
            return
        if session.invites and self._use_invitation(session, room):
            return
        where = quote(room.name)
        if modes.bans and self._banned(session, modes):
            raise ChatError(ErrorCode.BANNED, f"you are banned from room {where}")
        if modes.invite_only:
            raise ChatError(ErrorCode.INVITE_ONLY,
                            f"room {where} is invite-only (+i): a member must invite you")
        if modes.key and key != modes.key:
            raise ChatError(ErrorCode.BAD_ROOM_KEY,
                            f"room {where} needs a key (+k)" if not key
                            else f"wrong key for room {where}")
        if modes.limit and len(room.members) + len(room.remote) >= modes.limit:
            raise ChatError(ErrorCode.ROOM_FULL,
                            f"room {where} is full: {modes.limit} members (+l)")

    def _check_topic(self, session, room) -> None:
        if room.modes.topic_locked and session not in room.modes.operators:
            raise ChatError(ErrorCode.NOT_OPERATOR,
                            f"only operators set the topic of room {quote(room.name)} (+t)")

    def _check_speech(self, session, room) -> None:
        """Only called when ``room.modes.gated``: +m, or some ban."""
        modes = room.modes
        if session in modes.operators or session in modes.voiced:
            return
        if modes.moderated:
            raise ChatError(ErrorCode.CANNOT_SPEAK,
                            f"room {quote(room.name)} is moderated (+m): only operators and "
                            f"voiced members speak")
        if self._banned(session, modes):
            raise ChatError(ErrorCode.CANNOT_SPEAK,
                            f"you are banned in room {quote(room.name)}: you may read, not "
                            f"speak")

    def _left_room(self, room, session) -> None:
        """``session`` has just left ``room``, which still has members."""
        modes = room.modes
        modes.voiced.discard(session)
        modes.invited.pop(session, None)
        if session in modes.operators:
            modes.operators.discard(session)
            if self.backplane.names_heirs(room):
                return          # the shared state names the heir, in the leave's notice
            if not modes.operators:
                heir = next(iter(room.members.values()))
                modes.operators.add(heir)
                self._broadcast(room, ev.RoomModeChanged(room.name, "", (
                    ev.ModeChange(True, "o", heir.name),)))

    # -- requests --------------------------------------------------------------------------

    def set_room_modes(self, session, room_name: str, changes, *, partial: bool = False,
                       done=None):
        """Apply ``changes`` (``ev.ModeChange``) for an operator; the room is told what
        actually changed in one ``RoomModeChanged`` (changes that change nothing are left
        out, and if none is left nobody is told).

        Native requests are all or nothing: the first bad change raises and nothing changes.
        With ``partial`` (IRC, whose MODE applies what it can) the good changes apply and
        the refused ones are returned as ``(change, ChatError)`` pairs.

        The refusals are returned, or given to ``done`` once known: on a cluster node the
        shared state decides (``shared_moderation``), and a change a race made moot (the
        member left, another operator changed it first) is left out there.
        """
        self._touch(session)
        room = self._membership(session, room_name)
        shared = self.backplane.shares_moderation(room)
        modes = room.modes
        if session not in modes.operators:
            raise ChatError(ErrorCode.NOT_OPERATOR,
                            f"you are not an operator of room {quote(room.name)}")
        if len(changes) > MAX_MODE_CHANGES:
            raise ChatError(ErrorCode.MODE_INVALID, f"{len(changes)} mode changes at once; "
                                                    f"the limit is {MAX_MODE_CHANGES}")
        with_parameter = sum(1 for c in changes if takes_parameter(c.mode, c.adding))
        if with_parameter > MAX_MODE_PARAMETERS:
            raise ChatError(ErrorCode.MODE_INVALID,
                            f"{with_parameter} mode changes with a parameter at once; the "
                            f"limit is {MAX_MODE_PARAMETERS}")
        refused, planned = [], []
        # Keys of the operators as they will be, for the last-op rule.
        operators = {each.key for each in modes.operators} | modes.remote_operators
        bans = len(modes.bans)
        for change in changes:
            try:
                change = self._plan(room, change, operators)
                if change.mode == "b" and change.adding:
                    if any(b.mask == change.argument for b in modes.bans):
                        continue
                    if bans >= self.limits.max_bans_per_room:
                        raise ChatError(ErrorCode.MODE_INVALID,
                                        f"room {quote(room.name)} has {bans} bans, the "
                                        f"limit")
                    bans += 1
                planned.append(change)
            except ChatError as exc:
                if not partial:
                    raise
                refused.append((change, exc))
        if shared:
            return self._shared_modes(session, room, planned, refused, done)
        applied = tuple(filter(None, (self._apply(room, session, c) for c in planned)))
        if applied:
            self._broadcast(room, ev.RoomModeChanged(room.name, session.name, applied))
        return answer_or_return(done, refused)

    def _plan(self, room, change: ev.ModeChange, operators: set) -> ev.ModeChange:
        """``change`` checked and normalised (names as spelt, masks completed), or raise."""
        mode, adding, argument = change.mode, change.adding, change.argument
        if len(mode) != 1 or mode not in ROOM_MODE_LETTERS:
            raise ChatError(ErrorCode.MODE_INVALID,
                            f"unknown room mode {quote(mode)}; rooms have the modes "
                            f"{ROOM_MODE_LETTERS}")
        if mode in _FLAG_ATTRS:
            return ev.ModeChange(adding, mode)
        if mode == "n":
            if not adding:
                raise ChatError(ErrorCode.MODE_INVALID,
                                "mode n cannot be unset: only members speak in a room")
            return ev.ModeChange(True, "n")
        if mode == "k":
            if not adding:
                return ev.ModeChange(False, "k")
            if not argument or len(argument) > MAX_KEY_CHARS or not _KEY_CHARS.match(argument):
                raise ChatError(ErrorCode.MODE_INVALID,
                                f"a room key is 1 to {MAX_KEY_CHARS} printable ASCII "
                                f"characters without spaces or commas")
            return ev.ModeChange(True, "k", argument)
        if mode == "l":
            if not adding:
                return ev.ModeChange(False, "l")
            if not argument.isascii() or not argument.isdigit() or \
                    not 1 <= int(argument) <= MAX_MEMBER_LIMIT:
                raise ChatError(ErrorCode.MODE_INVALID,
                                f"a member limit (+l) is a number from 1 to "
                                f"{MAX_MEMBER_LIMIT}, not {quote(argument)}")
            return ev.ModeChange(True, "l", str(int(argument)))
        if mode in MEMBER_MODES:
            if not argument:
                raise ChatError(ErrorCode.MODE_INVALID, f"mode {mode} needs a member's name")
            key = argument.casefold()
            member = room.members.get(key)
            if member is not None:
                name = member.name
            elif key in room.remote and self.backplane.shares_moderation(room):
                name = room.remote[key][0]
            else:
                self._check_not_remote(room, argument)
                if key in self.sessions:
                    raise ChatError(ErrorCode.USER_NOT_IN_ROOM,
                                    f"{quote(argument)} is not in room {quote(room.name)}")
                raise ChatError(ErrorCode.NO_SUCH_USER,
                                f"no user named {quote(argument)} is online")
            if mode == "o":
                if adding:
                    operators.add(key)
                elif key in operators:
                    if len(operators) == 1:
                        raise ChatError(ErrorCode.MODE_INVALID,
                                        f"{name} is the last operator of room "
                                        f"{quote(room.name)}: give +o to another member first")
                    operators.discard(key)
            return ev.ModeChange(adding, mode, name)
        if not argument:            # b, the one letter left
            raise ChatError(ErrorCode.MODE_INVALID,
                            "mode b needs a mask (GetRoomModes lists the bans)")
        return ev.ModeChange(adding, "b", normalize_mask(argument))

    def _apply(self, room, session, change: ev.ModeChange) -> ev.ModeChange | None:
        """Make a planned change; what changed (None: nothing did)."""
        modes = room.modes
        mode, adding, argument = change.mode, change.adding, change.argument
        if mode in _FLAG_ATTRS:
            attr = _FLAG_ATTRS[mode]
            if getattr(modes, attr) == adding:
                return None
            setattr(modes, attr, adding)
            if mode == "s":         # secret rooms stay out of room lists
                (self._room_index.discard if adding else self._room_index.add)(room.key)
        elif mode == "n":
            return None
        elif mode == "k":
            if adding:
                if modes.key == argument:
                    return None
                modes.key = argument
            else:
                if not modes.key:
                    return None
                change = ev.ModeChange(False, "k", modes.key)   # IRC's -k names the key
                modes.key = ""
        elif mode == "l":
            limit = int(argument) if adding else 0
            if modes.limit == limit:
                return None
            modes.limit = limit
        elif mode in MEMBER_MODES:
            member = room.members.get(argument.casefold())
            holders = modes.operators if mode == "o" else modes.voiced
            if member is None or (member in holders) == adding:
                return None
            (holders.add if adding else holders.discard)(member)
        elif mode == "b":
            if adding:
                modes.bans.append(ev.Ban(argument, session.name,
                                         int(self._wallclock() * 1000)))
            else:
                kept = [ban for ban in modes.bans if ban.mask != argument]
                if len(kept) == len(modes.bans):
                    return None
                modes.bans = kept
        modes.gated = modes.moderated or bool(modes.bans)
        return change

    def kick(self, session, room_name: str, name: str, reason: str = "", done=None) -> None:
        """An operator removes a member; every member (the kicked one too) is told
        ``Kicked``, then ``UserLeft`` with reason KICKED. ``done(None)`` (or
        ``done(ChatError)``) once decided: on a cluster node, by the shared state, and the
        member's own node removes it."""
        self._touch(session)
        room = self._membership(session, room_name)
        shared = self.backplane.shares_moderation(room)
        if session not in room.modes.operators:
            raise ChatError(ErrorCode.NOT_OPERATOR,
                            f"you are not an operator of room {quote(room.name)}")
        check_text("kick reason", reason, self.limits.max_quit_bytes, empty_ok=True)
        victim = room.members.get(name.casefold())
        if shared and (victim is not None or name.casefold() in room.remote):
            victim_name = victim.name if victim else room.remote[name.casefold()][0]
            return self._shared_kick(session, room, name, victim_name, reason, done)
        if victim is None:
            self._check_not_remote(room, name)
            if name.casefold() in self.sessions:
                raise ChatError(ErrorCode.USER_NOT_IN_ROOM,
                                f"{quote(name)} is not in room {quote(room.name)}")
            raise ChatError(ErrorCode.NO_SUCH_USER, f"no user named {quote(name)} is online")
        self._broadcast(room, ev.Kicked(room.name, victim.name, session.name, reason))
        self._remove_member(room, victim, Reason.KICKED, reason)
        return answer_or_return(done, None)

    def invite(self, session, room_name: str, name: str, done=None) -> None:
        """A member invites a user (in a +i room, only an operator may); the invitee is told
        ``Invited`` and may join once past +i, +k, +l and bans. ``done(None)`` (or
        ``done(ChatError)``) once the invitee is told: on a cluster node, wherever it is."""
        self._touch(session)
        room = self._membership(session, room_name)
        modes = room.modes
        if modes.invite_only and session not in modes.operators:
            raise ChatError(ErrorCode.NOT_OPERATOR,
                            f"room {quote(room.name)} is invite-only (+i): only its "
                            f"operators invite")
        if self.backplane.shares_moderation(room):
            return self._shared_invite(session, room, name, done)
        invitee = self.sessions.get(name.casefold())
        if invitee is None:
            raise ChatError(ErrorCode.NO_SUCH_USER, f"no user named {quote(name)} is online")
        if invitee.key in room.members:
            raise ChatError(ErrorCode.ALREADY_IN_ROOM,
                            f"{invitee.name} is already in room {quote(room.name)}")
        modes.invited.pop(invitee, None)
        modes.invited[invitee] = None
        while len(modes.invited) > self.limits.max_invites_per_room:
            del modes.invited[next(iter(modes.invited))]
        invitee.outlet.deliver(invitee.endpoint, ev.Invited(room.name, session.name))
        self.work_done += 1
        return answer_or_return(done, None)

    # -- queries ---------------------------------------------------------------------------

    def room_modes(self, session, room_name: str) -> ev.RoomModes:
        """A room's modes, privileged members and bans; the key only for members. A secret
        room is, to non-members, a room that does not exist."""
        room = self.rooms.get(room_name.casefold())
        member = room is not None and room.members.get(session.key) is session
        if room is None or (room.modes.secret and not member):
            raise ChatError(ErrorCode.NOT_IN_ROOM, f"there is no room {quote(room_name)}")
        return self._modes_event(room, member)

    def _modes_event(self, room, member: bool) -> ev.RoomModes:
        modes = room.modes
        # From the (small) sets, not the member list: a join costs O(operators + voiced).
        operators, voiced = modes.operators, modes.voiced
        holders = operators | voiced if voiced else operators
        if len(holders) > self.limits.max_join_members:
            holders = itertools.islice(holders, self.limits.max_join_members)
        privileged = [ev.MemberModes(each.name, ("o" if each in operators else "")
                                     + ("v" if each in voiced else ""))
                      for each in holders]
        if modes.remote_operators or modes.remote_voiced:
            privileged += self._remote_privileged(room)
        self.work_done += 1 + len(privileged) + len(modes.bans)
        return ev.RoomModes(room.name, modes.letters(), modes.key if member else "",
                            modes.limit, modes.created_at_ms, tuple(privileged),
                            tuple(modes.bans))

    def room_hidden(self, session, room_name: str) -> bool:
        """Whether ``room_name`` is a secret room ``session`` is not in (its members and
        modes are then nobody's business)."""
        room = self.rooms.get(room_name.casefold())
        return room is not None and room.modes.secret and session.key not in room.members

    def is_operator(self, session, room) -> bool:
        return session in room.modes.operators

    def is_voiced(self, session, room) -> bool:
        return session in room.modes.voiced

    def _remote_privileged(self, room) -> list:
        modes, remote = room.modes, room.remote
        found = []
        for key in modes.remote_operators | modes.remote_voiced:
            entry = remote.get(key)
            if entry is not None:
                found.append(ev.MemberModes(entry[0], ("o" if key in modes.remote_operators
                                                       else "")
                                            + ("v" if key in modes.remote_voiced else "")))
        return found[:self.limits.max_join_members]

    def _check_not_remote(self, room, name: str) -> None:
        """A member on another node is out of reach while the cluster cannot share the
        room's moderation (docs/cluster.md), and says so rather than pass for nobody."""
        remote = room.remote.get(name.casefold())
        if remote is not None:
            raise ChatError(ErrorCode.REMOTE_MEMBER,
                            f"{remote[0]} is in room {quote(room.name)} on another node "
                            f"({remote[1]}): kicks, operator and voice reach this node's "
                            f"members only")

    def _banned(self, session, modes: RoomModes) -> bool:
        who = f"{session.key}!{session.key}@{BAN_USER_HOST}"
        return any(fnmatch.fnmatchcase(who, ban.mask) for ban in modes.bans)
