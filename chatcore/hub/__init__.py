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

The hub is a facade over one module per job: ``identity`` (connect, rename, disconnect),
``resuming`` (held sessions), ``conversations`` (direct chats, away replies, users of other
nodes), ``rooms`` (membership, topics, room messages), ``remote_rooms`` (what other nodes
tell about shared rooms), ``moderation`` (operators, room modes, kicks, invitations,
bans) and ``presence`` (away, whois, lists);
its data types are in ``model`` and the checks they share in ``checks``.
"""
from __future__ import annotations

import collections
import itertools
import time

from ..listing import NameIndex
from .checks import check_text
from .conversations import Conversations
from .identity import GUEST_CLAIM_ATTEMPTS, GUEST_PREFIX, GUEST_SKIP_MAX, Identity
from .moderation import Moderation
from .model import (DETACHED, HubLimits, LocalBackplane, NodeInfo, Page, Room, RoomSnapshot,
                    Session)
from .presence import Presence
from .remote_rooms import RemoteRooms
from .resuming import Resuming
from .rooms import LIST_ENTRY_WORK_UNITS, Rooms

__all__ = ["DETACHED", "GUEST_CLAIM_ATTEMPTS", "GUEST_PREFIX", "GUEST_SKIP_MAX",
           "LIST_ENTRY_WORK_UNITS", "Hub", "HubLimits", "LocalBackplane", "NodeInfo", "Page",
           "Room", "RoomSnapshot", "Session"]


class Hub(Identity, Resuming, Conversations, Rooms, RemoteRooms, Moderation, Presence):
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
        # Called as hook(session, name) when a user leaves (name: its name) or renames away
        # from ``name``: what IRC's WHOWAS remembers (irc/whowas.py).
        self.departed: list = []
        # User channel kind -> hook(recipient session, message): a front end's own kinds
        # between users of different nodes (IRC's "ctcp" and "setname": irc/remote.py).
        self.user_message_hooks: dict = {}
        self.work_done = 0              # deliveries handed out + list entries built, ever
        self._msg_ids = itertools.count(1)
        self._guest_numbers = itertools.count(1)
        self._claiming: set[str] = set()        # names waiting for the backplane's answer
        # Users of other nodes that local users have a conversation with: key -> name.
        self.remote_peers: dict[str, str] = {}
        self._renames_told: collections.OrderedDict = collections.OrderedDict()
        # Away messages of room members of other nodes (key -> message), told by the rooms'
        # channels ("away" kind): for AwayChanged once each, RoomJoined and IRC's JOIN.
        self.remote_away: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------------

    def _touch(self, session: Session) -> None:
        session.last_active = self._clock()

    def _check_text(self, text: str) -> None:
        check_text("message", text, self.limits.max_text_bytes)

    def _stamp(self) -> tuple[int, int]:
        return next(self._msg_ids), int(self._wallclock() * 1000)
