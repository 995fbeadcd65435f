"""The chat domain: users, rooms, conversations, presence and RTT.

The hub decides who receives what and hands each event to the recipients' *outlets*: one
outlet per wire format, which encodes the event once for all its recipients. It knows no
sockets and no bytes. An outlet implements::

    deliver(endpoint, event)        # one recipient
    broadcast(endpoints, event)     # many recipients, same event

where ``endpoint`` is whatever the outlet gave at ``connect`` (for the native protocol, the
connection's output buffer). An outlet also implements ``evict(endpoint)``: that endpoint's
session was resumed elsewhere, so its connection must go without the hub hearing of it.

A session whose connection drops uncleanly (reset, timeout, slow reader) is *detached*
rather than removed when resuming is on: it keeps its name, rooms and conversations for
``resume_grace_seconds``, delivered to nobody, until a ``resume`` with its token binds it to
a new endpoint or ``expire_detached`` removes it as a normal disconnect would have.

``Hub.work_done`` counts the work requests caused (one unit per delivery handed to an outlet,
``LIST_ENTRY_WORK_UNITS`` per list entry built), so a connection can bound what its input
costs per loop turn.
"""
from __future__ import annotations

import collections
import itertools
import random
import re
import secrets
import time
from dataclasses import dataclass, field

from . import events as ev
from .codec import find_forbidden
from .errors import ChatError, ErrorCode
from .events import Reason
from .listing import MEMBER_INDEX_MIN_MEMBERS, KeyPage, NameIndex

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+\Z")
QUOTE_MAX_CHARS = 40            # client text echoed in an error is cut to this
RTT_SMOOTHING = 1 / 8           # TCP's SRTT gain (RFC 6298)
GUEST_PREFIX = "guest-"
RESUME_TOKEN_BYTES = 24         # 192 random bits: not guessable, short on the wire
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]*\Z")
GUEST_CLAIM_ATTEMPTS = 20       # guest names tried before giving up (others took each one)
GUEST_SKIP_MAX = 1000           # after a taken guest name, skip up to this many numbers
# Work units (Hub.work_done) of one list entry built: one unit is one delivery queued, and a
# list entry (built, sorted, encoded) costs 5-40x a delivery (measured: 4-12 us against
# 0.26-0.8 us, both builds).
LIST_ENTRY_WORK_UNITS = 20


@dataclass(frozen=True)
class HubLimits:
    max_name_chars: int = 32            # IRC servers commonly allow 30-32
    max_room_name_chars: int = 64
    max_text_bytes: int = 8192          # a long paste still fits; 64 KiB frames leave room
    max_rooms_per_user: int = 100
    max_rooms: int = 100_000            # rooms on the server (about 1 KiB each)
    resume_grace_seconds: float = 45.0  # a dropped session's name and rooms wait this long
    max_list_page_entries: int = 200    # entries in one list reply
    max_list_scan_entries: int = 1000   # names one list request may examine
    max_list_pattern_chars: int = 100
    max_topic_bytes: int = 390          # IRC servers' TOPICLEN is 300-390
    max_away_bytes: int = 200           # IRC servers' AWAYLEN is 160-390
    max_quit_bytes: int = 200
    max_join_members: int = 1000        # members listed in RoomJoined


@dataclass(slots=True)
class Page:
    """One page of a list: its entries with their keys, and where the next page starts."""
    entries: list
    keys: list                  # the casefolded name of each entry, in the same order
    total: int
    total_exact: bool
    next_after: str


@dataclass(frozen=True)
class NodeInfo:
    """This server as it appears in server lists: its name and advertised address."""
    name: str
    host: str
    port: int


class LocalBackplane:
    """The backplane of a server on its own: no other nodes, and every answer at once.

    A cluster backplane (chatcore.cluster) answers the same questions from shared state;
    where that takes a round trip to Redis, the answer comes later, to a callback.
    """

    def claim_name(self, key: str, done) -> None:
        """Make the (casefolded) name this node's: ``done(True)``, ``done(False)`` if another
        node holds it, or ``done(ChatError)`` if that cannot be known now."""
        done(True)

    def release_name(self, key: str) -> None:
        pass

    def send_to_user(self, key: str, message: dict, done=None) -> None:
        """Hand ``message`` to the node of the user ``key``: ``done(True)`` if it has one,
        ``done(False)`` if no node does, ``done(ChatError)`` if that cannot be known now."""
        if done is not None:
            done(False)

    def peer_servers(self) -> list[ev.ServerInfo]:
        return []


@dataclass(eq=False, slots=True)
class Session:
    """One connected, named user."""
    name: str
    key: str                            # casefolded name: the identity for lookups
    outlet: object
    endpoint: object
    connected_at: float
    last_active: float                  # monotonic time of the last chat request
    rooms: dict = field(default_factory=dict)          # key -> Room
    conversations: set = field(default_factory=set)    # keys of peers with an open chat
    rtt_seconds: float | None = None
    resume_token: str = ""
    detached_until: float | None = None     # monotonic; set while the connection is gone
    detach_reason: Reason = Reason.DISCONNECTED
    connected_at_ms: int = 0            # wall clock, for user details
    away: str = ""                      # the away message; empty when not away
    away_replied: set = field(default_factory=set)     # keys told the away message already

    def record_rtt(self, sample_seconds: float) -> None:
        """Fold one RTT sample into the smoothed estimate."""
        if self.rtt_seconds is None:
            self.rtt_seconds = sample_seconds
        else:
            self.rtt_seconds += (sample_seconds - self.rtt_seconds) * RTT_SMOOTHING


@dataclass(eq=False, slots=True)
class Room:
    name: str
    key: str
    members: dict = field(default_factory=dict)        # session key -> Session
    endpoints: dict = field(default_factory=dict)      # outlet -> [endpoint, ...]
    member_index: NameIndex | None = None   # kept once the room is big enough to need it
    topic: str = ""
    topic_by: str = ""
    topic_at_ms: int = 0


class _DetachedOutlet:
    """Where a detached session's events go: nowhere (its endpoint is a placeholder)."""

    def deliver(self, endpoint, event) -> None:
        pass

    def broadcast(self, endpoints, event) -> None:
        pass

    def evict(self, endpoint) -> None:
        pass


DETACHED = _DetachedOutlet()


class Hub:
    """Routes requests of connected sessions; raises ChatError for refused requests."""

    def __init__(self, node: NodeInfo, limits: HubLimits = HubLimits(), *,
                 clock=time.monotonic, wallclock=time.time, backplane=None,
                 load_permille=lambda: 0):
        self.node = node
        self.backplane = backplane or LocalBackplane()
        self._load_permille = load_permille
        self.limits = limits
        self._clock = clock
        self._wallclock = wallclock
        self.sessions: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}
        self._user_index = NameIndex()
        self._room_index = NameIndex()
        self._detached: collections.deque = collections.deque()   # (deadline, session)
        self.held_sessions = 0                  # detached and waiting for a resume
        self.work_done = 0              # deliveries handed out + list entries built, ever
        self._msg_ids = itertools.count(1)
        self._guest_numbers = itertools.count(1)
        self._claiming: set[str] = set()        # names waiting for the backplane's answer
        # Users of other nodes that local users have a conversation with: key -> name.
        self.remote_peers: dict[str, str] = {}

    # -- identity --------------------------------------------------------------------------

    def check_name(self, name: str) -> None:
        """Raise NAME_INVALID saying why ``name`` cannot be a user name."""
        if name and not (name[0].isascii() and name[0].isalpha()):
            raise ChatError(ErrorCode.NAME_INVALID,
                            f"name {_quote(name)} must start with a letter")
        _check_identifier("name", name, self.limits.max_name_chars, ErrorCode.NAME_INVALID)

    def connect(self, wanted_name: str, outlet, endpoint, done=None) -> Session | None:
        """A user arrives; an empty ``wanted_name`` gets a unique guest name.

        The name is claimed from the backplane too (cluster-wide in a cluster), so the outcome,
        a Session or a ChatError, goes to ``done(outcome)`` once known: at once on a single
        server, when Redis answers in a cluster. Without ``done`` (a single server, tests) the
        session is returned and a refusal raised.
        """
        if wanted_name:
            self.check_name(wanted_name)
        outcome: list = []
        self._claim(wanted_name, outlet, endpoint, done or outcome.append, 0)
        if done is not None:
            return None
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if isinstance(outcome[0], ChatError):
            raise outcome[0]
        return outcome[0]

    def _claim(self, wanted_name: str, outlet, endpoint, done, attempt: int) -> None:
        name = wanted_name or self._guest_name()
        key = name.casefold()
        holder = self.sessions.get(key)
        if holder is not None or key in self._claiming:
            message = (self._taken_message(holder, name) if holder is not None
                       else f"name {_quote(name)} is taken")
            done(ChatError(ErrorCode.NAME_TAKEN, message))
            return
        self._claiming.add(key)

        def answered(answer) -> None:
            self._claiming.discard(key)
            if answer is True:
                now = self._clock()
                session = Session(name, key, outlet, endpoint, now, now,
                                  resume_token=_new_token(),
                                  connected_at_ms=int(self._wallclock() * 1000))
                self.sessions[key] = session
                self._user_index.add(key)
                done(session)
            elif isinstance(answer, ChatError):
                done(answer)
            elif wanted_name:
                done(ChatError(ErrorCode.NAME_TAKEN, f"name {_quote(name)} is taken"))
            elif attempt + 1 < GUEST_CLAIM_ATTEMPTS:
                # Another node's guests hold these numbers: jump ahead, past most of them.
                for _ in range(random.randrange(GUEST_SKIP_MAX)):
                    next(self._guest_numbers)
                self._claim("", outlet, endpoint, done, attempt + 1)
            else:
                done(ChatError(ErrorCode.NAME_TAKEN, "no free guest name was found; "
                                                     "send Hello with a name"))

        self.backplane.claim_name(key, answered)

    def _taken_message(self, holder: Session, name: str) -> str:
        if holder.detached_until is None:
            return f"name {_quote(name)} is taken"
        seconds = max(1, round(holder.detached_until - self._clock()))
        return (f"name {_quote(name)} is reserved for its user to reconnect "
                f"(for up to {seconds} s more)")

    def set_name(self, session: Session, new_name: str, done=None) -> None:
        """Rename a user; it and everyone sharing a room or a chat with it are told once.

        A new name is claimed from the backplane first (cluster-wide in a cluster), so the
        outcome, None or a ChatError, goes to ``done(outcome)`` once known, as for
        ``connect``. Without ``done`` a refusal is raised (a single server answers at once).
        """
        self._touch(session)
        if new_name != session.name:
            self.check_name(new_name)
        outcome: list = []
        self._rename(session, new_name, done or outcome.append)
        if done is not None:
            return
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if outcome[0] is not None:
            raise outcome[0]

    def _rename(self, session: Session, new_name: str, done) -> None:
        old_key, new_key = session.key, new_name.casefold()
        if new_name == session.name or new_key == old_key:      # nothing, or only the case
            if new_name != session.name:
                self._renamed(session, new_name)
            done(None)
            return
        holder = self.sessions.get(new_key)
        if holder is not None or new_key in self._claiming:
            message = (self._taken_message(holder, new_name) if holder is not None
                       else f"name {_quote(new_name)} is taken")
            done(ChatError(ErrorCode.NAME_TAKEN, message))
            return
        self._claiming.add(new_key)

        def answered(answer) -> None:
            self._claiming.discard(new_key)
            if answer is not True:
                done(answer if isinstance(answer, ChatError) else
                     ChatError(ErrorCode.NAME_TAKEN, f"name {_quote(new_name)} is taken"))
            elif self.sessions.get(session.key) is not session:    # gone meanwhile
                self.backplane.release_name(new_key)
                done(ChatError(ErrorCode.NO_SUCH_USER, "the session ended"))
            else:
                self._rekey(session, new_key)
                self.backplane.release_name(old_key)
                self._renamed(session, new_name)
                done(None)

        self.backplane.claim_name(new_key, answered)

    def _rekey(self, session: Session, new_key: str) -> None:
        old_key = session.key
        del self.sessions[old_key]
        self.sessions[new_key] = session
        self._user_index.discard(old_key)
        self._user_index.add(new_key)
        for room in session.rooms.values():
            del room.members[old_key]
            room.members[new_key] = session
            if room.member_index is not None:
                room.member_index.discard(old_key)
                room.member_index.add(new_key)
        for peer_key in session.conversations:
            peer = self.sessions[peer_key]
            peer.conversations.discard(old_key)
            peer.conversations.add(new_key)
            if old_key in peer.away_replied:
                peer.away_replied.discard(old_key)
                peer.away_replied.add(new_key)
        session.key = new_key

    def _renamed(self, session: Session, new_name: str) -> None:
        old_name, session.name = session.name, new_name
        self._tell_once(self._neighbours(session), ev.NameChanged(old_name, new_name))

    def _neighbours(self, session: Session) -> dict:
        """The user and everyone sharing a room or a conversation with it, by key."""
        known = {session.key: session}
        for room in session.rooms.values():
            known.update(room.members)
        for peer_key in session.conversations:
            known[peer_key] = self.sessions[peer_key]
        return known

    def _tell_once(self, sessions: dict, event) -> None:
        """``event`` to each session once, encoded once per outlet."""
        by_outlet: dict = {}
        for each in sessions.values():
            by_outlet.setdefault(each.outlet, []).append(each.endpoint)
        for outlet, endpoints in by_outlet.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(sessions)

    def _guest_name(self) -> str:
        while True:
            name = f"{GUEST_PREFIX}{next(self._guest_numbers)}"
            if name.casefold() not in self.sessions and name.casefold() not in self._claiming:
                return name

    def check_quit_message(self, message: str) -> None:
        """Raise TEXT_INVALID saying why ``message`` cannot be shown as a goodbye."""
        _check_text("quit message", message, self.limits.max_quit_bytes, empty_ok=True)

    def disconnect(self, session: Session, reason: Reason, message: str = "") -> None:
        """A user is gone: its rooms and conversation peers are told why (and its goodbye,
        already checked with ``check_quit_message``)."""
        if self.sessions.get(session.key) is not session:
            return
        del self.sessions[session.key]
        self._user_index.discard(session.key)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        self.backplane.release_name(session.key)
        for room in list(session.rooms.values()):
            self._remove_member(room, session, reason, message)
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            if peer is not None:
                peer.conversations.discard(session.key)
                peer.outlet.deliver(peer.endpoint,
                                    ev.ChatClosed(session.name, reason, message))
            elif peer_key in self.remote_peers:
                self.backplane.send_to_user(peer_key, {"kind": "close", "from": session.name,
                                                       "reason": int(reason),
                                                       "message": message})
        session.conversations.clear()

    # -- resuming --------------------------------------------------------------------------

    def detach(self, session: Session, reason: Reason) -> None:
        """The connection dropped uncleanly: hold the session for the grace period (others
        see nothing yet), or disconnect it now if resuming is off."""
        if self.sessions.get(session.key) is not session or session.outlet is DETACHED:
            return
        grace = self.limits.resume_grace_seconds
        if grace <= 0:
            self.disconnect(session, reason)
            return
        self._rebind(session, DETACHED, object())
        session.detached_until = self._clock() + grace
        session.detach_reason = reason
        self.held_sessions += 1
        self._detached.append((session.detached_until, session))

    def resume(self, name: str, token: str, outlet, endpoint) -> Session:
        """Bind the session named ``name`` to a new endpoint, if ``token`` is its token.

        The session may be detached or still connected (its user noticed the drop before
        the server did): then the old endpoint is evicted. The token is replaced.
        """
        session = self.sessions.get(name.casefold())
        if session is None:
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"no session named {_quote(name)} to resume: it ended (quit, or "
                            f"its grace period passed) or never existed")
        if not secrets.compare_digest(token.encode(), session.resume_token.encode()):
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"the resume token for {_quote(name)} does not match")
        old_outlet, old_endpoint = session.outlet, session.endpoint
        self._rebind(session, outlet, endpoint)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        session.resume_token = _new_token()
        old_outlet.evict(old_endpoint)
        return session

    def replay(self, session: Session) -> None:
        """Tell a resumed session where it is: its rooms and its open conversations."""
        for room in session.rooms.values():
            session.outlet.deliver(session.endpoint, ev.UserJoined(room.name, session.name))
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            name = peer.name if peer is not None else self.remote_peers.get(peer_key)
            if name is not None:
                session.outlet.deliver(session.endpoint, ev.ChatOpened(name))

    def held_count(self) -> int:
        """Sessions detached now and waiting for a resume (a pass over those only)."""
        return sum(1 for deadline, session in self._detached
                   if session.outlet is DETACHED and session.detached_until == deadline)

    def expire_detached(self, limit: int) -> bool:
        """Disconnect up to ``limit`` sessions whose grace period is over, each with the
        reason it dropped for; True if more are already due."""
        now = self._clock()
        queue = self._detached
        while queue and limit > 0:
            deadline, session = queue[0]
            if deadline > now:
                return False
            queue.popleft()
            if session.detached_until == deadline:      # not resumed (nor dropped again)
                self.disconnect(session, session.detach_reason)
                limit -= 1
        return bool(queue) and queue[0][0] <= now

    def _rebind(self, session: Session, outlet, endpoint) -> None:
        for room in session.rooms.values():
            endpoints = room.endpoints[session.outlet]
            endpoints.remove(session.endpoint)
            if not endpoints:
                del room.endpoints[session.outlet]
            room.endpoints.setdefault(outlet, []).append(endpoint)
        session.outlet, session.endpoint = outlet, endpoint

    # -- conversations ---------------------------------------------------------------------

    def _peer(self, session: Session, peer_name: str) -> Session | None:
        """The local user ``peer_name``, or None for one that may be on another node."""
        peer = self.sessions.get(peer_name.casefold())
        if peer is session:
            raise ChatError(ErrorCode.CANNOT_CHAT_SELF, "you cannot chat with yourself")
        return peer

    def _open(self, session: Session, peer: Session) -> None:
        if peer.key not in session.conversations:
            session.conversations.add(peer.key)
            peer.conversations.add(session.key)
            peer.outlet.deliver(peer.endpoint, ev.ChatOpened(session.name))

    def open_chat(self, session: Session, peer_name: str, done=None):
        """Open a conversation; ``done(None)`` or ``done(ChatError)`` (see ``connect``)."""
        self._touch(session)
        peer = self._peer(session, peer_name)
        if peer is not None:
            self._open(session, peer)
            return _answer(done, None)
        return self._to_remote(session, peer_name, {"kind": "open"}, None, done)

    def close_chat(self, session: Session, peer_name: str, done=None):
        self._touch(session)
        peer = self._peer(session, peer_name)
        key = peer_name.casefold()
        if key not in session.conversations:
            no_conversation = ChatError(ErrorCode.NO_CONVERSATION,
                                        f"no conversation with {_quote(peer_name)} is open")
            if peer is not None:
                raise no_conversation
            # NO_CONVERSATION if the user is on another node, else NO_SUCH_USER.
            return self._to_remote(session, peer_name, {"kind": "probe"}, no_conversation,
                                   done, opens=False)
        session.conversations.discard(key)
        if peer is not None:
            peer.conversations.discard(session.key)
            peer.outlet.deliver(peer.endpoint, ev.ChatClosed(session.name, Reason.CLOSED))
            return _answer(done, None)
        self._forget_remote(key)
        return self._to_remote(session, peer_name,
                               {"kind": "close", "reason": int(Reason.CLOSED)}, None, done,
                               opens=False)

    def send_direct(self, session: Session, peer_name: str, text: str, done=None):
        """Deliver ``text`` to one user; (msg_id, timestamp_ms) for the Ack, returned or
        given to ``done`` (see ``connect``: a user of another node takes a round trip)."""
        self._touch(session)
        peer = self._peer(session, peer_name)
        self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        if peer is None:
            return self._to_remote(session, peer_name, {
                "kind": "direct", "msg_id": msg_id, "ts": timestamp_ms, "text": text},
                (msg_id, timestamp_ms), done)
        self._check_attached(peer)
        self._open(session, peer)
        peer.outlet.deliver(peer.endpoint,
                            ev.DirectMessage(session.name, msg_id, timestamp_ms, text))
        self.work_done += 1
        if peer.away:
            self._away_reply(session, peer)
        return _answer(done, (msg_id, timestamp_ms))

    # -- users of other nodes --------------------------------------------------------------

    def _to_remote(self, session: Session, peer_name: str, message: dict, result, done,
                   opens: bool = True):
        """Send a conversation message to a user who is not on this node, via the backplane;
        NO_SUCH_USER if no node has them. ``result`` is the outcome otherwise (a ChatError
        result is raised or given like any refusal); ``opens``: the conversation is open
        from then on."""
        key = peer_name.casefold()
        outcome: list = []
        finish = done or outcome.append

        def answered(answer) -> None:
            if isinstance(answer, ChatError):
                finish(answer)
            elif not answer:
                self._forget_remote(key)
                session.conversations.discard(key)
                finish(ChatError(ErrorCode.NO_SUCH_USER,
                                 f"no user named {_quote(peer_name)} is online"))
            else:
                if opens and self.sessions.get(session.key) is session:
                    session.conversations.add(key)
                    self.remote_peers.setdefault(key, peer_name)
                finish(result)

        self.backplane.send_to_user(key, {"from": session.name, **message}, answered)
        if done is not None:
            return None
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if isinstance(outcome[0], ChatError):
            raise outcome[0]
        return outcome[0]

    def _forget_remote(self, key: str) -> None:
        if not any(key in s.conversations for s in self.sessions.values()):
            self.remote_peers.pop(key, None)

    def receive_from_user(self, recipient_key: str, message: dict) -> None:
        """The backplane delivers what a user of another node sent to a local user."""
        recipient = self.sessions.get(recipient_key)
        sender = message.get("from", "")
        if recipient is None or not sender:
            return
        sender_key = sender.casefold()
        kind = message.get("kind")
        if kind == "close":
            if sender_key in recipient.conversations:
                recipient.conversations.discard(sender_key)
                self._forget_remote(sender_key)
                recipient.outlet.deliver(recipient.endpoint, ev.ChatClosed(
                    sender, int(message.get("reason", Reason.CLOSED)),
                    str(message.get("message", ""))))
            return
        if sender_key not in recipient.conversations:
            recipient.conversations.add(sender_key)
            self.remote_peers[sender_key] = sender
            recipient.outlet.deliver(recipient.endpoint, ev.ChatOpened(sender))
        if kind == "direct":
            recipient.outlet.deliver(recipient.endpoint, ev.DirectMessage(
                sender, int(message["msg_id"]), int(message["ts"]), str(message["text"])))

    def remote_users_lost(self, keys, reason: Reason = Reason.SERVER_LOST) -> None:
        """Users of a node that is gone: their conversations end, with ``reason``."""
        for key in keys:
            name = self.remote_peers.pop(key, None)
            if name is None:
                continue
            for session in self.sessions.values():
                if key in session.conversations:
                    session.conversations.discard(key)
                    session.outlet.deliver(session.endpoint, ev.ChatClosed(name, reason))

    def send_direct_action(self, session: Session, peer_name: str,
                           text: str) -> tuple[int, int]:
        """An action ("/me waves") to one user, like ``send_direct`` (this node's users only:
        actions to users of other cluster nodes are not carried yet)."""
        self._touch(session)
        peer = self._peer(session, peer_name)
        if peer is None:
            raise ChatError(ErrorCode.NO_SUCH_USER,
                            f"no user named {_quote(peer_name)} is online")
        self._check_text(text)
        self._check_attached(peer)
        self._open(session, peer)
        msg_id, timestamp_ms = self._stamp()
        peer.outlet.deliver(peer.endpoint,
                            ev.DirectAction(session.name, msg_id, timestamp_ms, text))
        self.work_done += 1
        if peer.away:
            self._away_reply(session, peer)
        return msg_id, timestamp_ms

    def _check_attached(self, peer: Session) -> None:
        if peer.outlet is DETACHED:
            raise ChatError(ErrorCode.USER_RECONNECTING,
                            f"{peer.name}'s connection dropped; they may be back within "
                            f"{self.limits.resume_grace_seconds:g} s. Message not delivered")

    def _away_reply(self, sender: Session, peer: Session) -> None:
        if sender.key not in peer.away_replied:
            peer.away_replied.add(sender.key)
            sender.outlet.deliver(sender.endpoint, ev.AwayReply(peer.name, peer.away))
            self.work_done += 1

    # -- rooms -----------------------------------------------------------------------------

    def check_room_name(self, name: str) -> None:
        """Raise ROOM_INVALID saying why ``name`` cannot be a room name."""
        _check_identifier("room name", name, self.limits.max_room_name_chars,
                          ErrorCode.ROOM_INVALID)

    def join(self, session: Session, room_name: str) -> bool:
        """Join (creating the room on first join); False if already a member.

        Members are told ``UserJoined``; the joiner is also told the room's topic and
        members (``RoomJoined``), every time, whether or not it was a member already.
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
        members = tuple(ev.Member(member.name, bool(member.away)) for member in
                        itertools.islice(room.members.values(), self.limits.max_join_members))
        session.outlet.deliver(session.endpoint, ev.RoomJoined(
            room.name, room.topic, room.topic_by, room.topic_at_ms, len(room.members), members))
        self.work_done += 1 + len(members) * LIST_ENTRY_WORK_UNITS

    def set_topic(self, session: Session, room_name: str, topic: str) -> None:
        """Any member sets (or, with an empty topic, clears) the topic; members are told."""
        self._touch(session)
        room = self._membership(session, room_name)
        _check_text("topic", topic, self.limits.max_topic_bytes, empty_ok=True)
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
            raise ChatError(ErrorCode.NOT_IN_ROOM, f"you are not in room {_quote(room_name)}")
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

    def send_room(self, session: Session, room_name: str, text: str) -> tuple[int, int]:
        """Deliver ``text`` to every member, the sender included; returns (msg_id, ts_ms)."""
        # The busiest request of all: helpers inlined.
        session.last_active = self._clock()
        room = session.rooms.get(room_name.casefold())
        if room is None:
            room = self._membership(session, room_name)
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
        self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        self._broadcast(room, ev.RoomAction(room.name, session.name, msg_id, timestamp_ms,
                                            text))
        return msg_id, timestamp_ms

    def _broadcast(self, room: Room, event) -> None:
        for outlet, endpoints in room.endpoints.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(room.members)

    # -- presence --------------------------------------------------------------------------

    def set_away(self, session: Session, message: str) -> None:
        """Away with ``message`` (each time a new away period), or back when it is empty."""
        _check_text("away message", message, self.limits.max_away_bytes, empty_ok=True)
        session.away = message
        session.away_replied = set()

    def whois(self, session: Session, name: str) -> ev.UserDetails:
        """A user's details, with the rooms it shares with ``session``."""
        user = self.sessions.get(name.casefold())
        if user is None:
            raise ChatError(ErrorCode.NO_SUCH_USER, f"no user named {_quote(name)} is online")
        common = sorted((ev.RoomInfo(room.name, len(room.members))
                         for key, room in user.rooms.items() if key in session.rooms),
                        key=lambda info: info.name.casefold())
        self.work_done += 1 + len(common) * LIST_ENTRY_WORK_UNITS
        return ev.UserDetails(user.name, self.node.name, user.connected_at_ms,
                              int(self._clock() - user.last_active), _rtt_us(user.rtt_seconds),
                              user.away, tuple(common))

    def list_users(self, room_name: str = "") -> list[ev.UserInfo]:
        """The first page of users (of one room), sorted by name."""
        return self.users_page(room_name).entries

    def list_rooms(self) -> list[ev.RoomInfo]:
        """The first page of rooms, sorted by name."""
        return self.rooms_page().entries

    def users_page(self, room_name: str = "", after: str = "", pattern: str = "",
                   limit: int = 0) -> Page:
        """A page of the users on the server, or in one room (none for an unknown room),
        in name order: see ``listing.NameIndex.page``."""
        if room_name:
            room = self.rooms.get(room_name.casefold())
            if room is None:
                return Page([], [], 0, True, "")
            members = room.members
            index = room.member_index if room.member_index is not None else NameIndex(members)
        else:
            members, index = self.sessions, self._user_index
        keys = self._page(index, after, pattern, limit)
        now = self._clock()
        server = self.node.name
        entries = [ev.UserInfo(s.name, _rtt_us(s.rtt_seconds), int(now - s.last_active),
                               server, s.away)
                   for s in map(members.__getitem__, keys.keys)]
        self.work_done += len(entries) * LIST_ENTRY_WORK_UNITS
        return Page(entries, keys.keys, keys.total, keys.total_exact, keys.next_after)

    def rooms_page(self, after: str = "", pattern: str = "", limit: int = 0) -> Page:
        """A page of the rooms in name order: see ``listing.NameIndex.page``."""
        keys = self._page(self._room_index, after, pattern, limit)
        rooms = self.rooms
        entries = [ev.RoomInfo(room.name, len(room.members))
                   for room in map(rooms.__getitem__, keys.keys)]
        self.work_done += len(entries) * LIST_ENTRY_WORK_UNITS
        return Page(entries, keys.keys, keys.total, keys.total_exact, keys.next_after)

    def _page(self, index: NameIndex, after: str, pattern: str, limit: int) -> KeyPage:
        limits = self.limits
        if len(pattern) > limits.max_list_pattern_chars:
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern is {len(pattern)} characters long; the limit is "
                            f"{limits.max_list_pattern_chars}")
        if not _PATTERN_CHARS.match(pattern):
            raise ChatError(ErrorCode.LIST_PATTERN_INVALID,
                            f"pattern {_quote(pattern)} may only contain name characters "
                            f"and the wildcards * ? [ ] !")
        page_size = min(limit, limits.max_list_page_entries) or limits.max_list_page_entries
        return index.page(after.casefold(), pattern.casefold(), page_size,
                          limits.max_list_scan_entries)

    def list_servers(self) -> list[ev.ServerInfo]:
        """This node first, then every live peer of the cluster."""
        node = self.node
        here = ev.ServerInfo(node.name, node.host, node.port, len(self.sessions),
                             self._load_permille(), 0)
        return [here, *self.backplane.peer_servers()]

    # -- helpers ---------------------------------------------------------------------------

    def _touch(self, session: Session) -> None:
        session.last_active = self._clock()

    def _check_text(self, text: str) -> None:
        _check_text("message", text, self.limits.max_text_bytes)

    def _stamp(self) -> tuple[int, int]:
        return next(self._msg_ids), int(self._wallclock() * 1000)


def _check_text(what: str, text: str, limit_bytes: int, *, empty_ok: bool = False) -> None:
    """Raise TEXT_INVALID when ``text`` is empty (unless allowed), longer than
    ``limit_bytes`` in UTF-8, or holds a character that is not text."""
    if not text:
        if empty_ok:
            return
        raise ChatError(ErrorCode.TEXT_INVALID, f"{what} text is empty")
    # UTF-8 is at most 4 bytes a character: skip the encode for all short texts.
    if len(text) * 4 > limit_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit_bytes:
            raise ChatError(ErrorCode.TEXT_INVALID,
                            f"{what} is {size} bytes; the limit is {limit_bytes}")
    # The text rule (docs/protocol.md, "Text"): no character a terminal would act on.
    position = find_forbidden(text)
    if position >= 0:
        code_point = ord(text[position])
        kind = "a lone surrogate" if 0xD800 <= code_point <= 0xDFFF else "a control character"
        raise ChatError(ErrorCode.TEXT_INVALID,
                        f"{what} holds U+{code_point:04X} ({kind}) at position "
                        f"{position}; of the control characters only LF and TAB "
                        f"are allowed")


def _answer(done, result):
    """A request's result for a caller that passed ``done`` (given) or not (returned)."""
    if done is None:
        return result
    done(result)
    return None


def _check_identifier(what: str, name: str, limit: int, code: ErrorCode) -> None:
    """Names and room names: 1..limit characters of letters, digits, '_', '-' and '.'."""
    if not name:
        raise ChatError(code, f"{what} is empty")
    if len(name) > limit:
        raise ChatError(code, f"{what} is {len(name)} characters long; the limit is {limit}")
    if not _NAME_CHARS.match(name):
        raise ChatError(code, f"{what} {_quote(name)} may only contain letters, digits, "
                              f"'_', '-' and '.'")


def _quote(value: str) -> str:
    """``value`` for an error message: quoted, and cut short so an error about a huge name
    is not itself huge."""
    if len(value) > QUOTE_MAX_CHARS:
        return repr(value[:QUOTE_MAX_CHARS]) + "..."
    return repr(value)


def _new_token() -> str:
    return secrets.token_urlsafe(RESUME_TOKEN_BYTES)


def _rtt_us(rtt_seconds: float | None) -> int:
    if rtt_seconds is None:
        return ev.UNKNOWN_RTT
    return min(int(rtt_seconds * 1_000_000), ev.UNKNOWN_RTT - 1)
