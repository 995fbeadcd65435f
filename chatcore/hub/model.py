"""The hub's data: its limits, sessions, rooms, list pages, and the backplane of a server on
its own."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import events as ev
from ..events import Reason
from ..listing import NameIndex
from .moderation import MAX_BANS_PER_ROOM, MAX_INVITES_PER_ROOM, RoomModes

RTT_SMOOTHING = 1 / 8           # TCP's SRTT gain (RFC 6298)


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
    max_bans_per_room: int = MAX_BANS_PER_ROOM
    max_invites_per_room: int = MAX_INVITES_PER_ROOM
    max_invites_per_user: int = 100     # invitations one user holds from other nodes


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

    def claim_user(self, session: Session, done) -> None:
        """A user arriving: claim ``session.key`` as ``claim_name`` does; a cluster also
        writes the user's records (``publish_user``) in the same step, so ``done(True)``
        means the user is in the shared state too."""
        self.claim_name(session.key, done)

    def release_name(self, key: str) -> None:
        pass

    def send_to_user(self, key: str, message: dict, done=None) -> None:
        """Hand ``message`` to the node of the user ``key``: ``done(True)`` if it has one,
        ``done(False)`` if no node does, ``done(ChatError)`` if that cannot be known now."""
        if done is not None:
            done(False)

    def peer_servers(self) -> list[ev.ServerInfo]:
        return []

    # -- users in shared state (a cluster keeps them in Redis; see chatcore.cluster) --------

    shared_users = False        # True: lists and whois reach the users of other nodes

    def publish_user(self, session, done=None) -> None:
        """The user arrived, or its name, away state, chats or resume token changed;
        ``done()`` once that is in the shared state (here: at once)."""
        if done is not None:
            done()

    def forget_user(self, key: str) -> None:
        """The user ``key`` of this node is gone (left, or renamed away from ``key``)."""

    def user_rooms_changed(self, session) -> None:
        """``session`` joined or left a room (a cluster rewrites its records soon, so a
        resume on another node rejoins the rooms it is in now)."""

    def users_page(self, after: str, pattern: str, page_size: int, scan_limit: int,
                   done) -> None:
        """``done(Page)`` of every node's users (only when ``shared_users``)."""
        raise NotImplementedError

    def user_details(self, key: str, done) -> None:
        """``done(dict)`` describing the user ``key`` of another node, ``done(None)`` if no
        node has it, ``done(ChatError)`` if that cannot be known now."""
        done(None)

    def take_over_session(self, key: str, token: str, token_after: str, done) -> None:
        """Resume here the session ``key`` of another node if ``token`` is its token (its
        token becomes ``token_after``): ``done(record)`` (name, chats, rooms, away;
        ``kept_rooms``: the keys of those the session is still a member of in the shared
        state, its memberships now this node's), ``done(None)`` if refused, or
        ``done(ChatError)``. The other node, if alive, is told to let it go."""
        done(None)

    # Rooms (see hub.rooms): with no other node, every room is local and every step is done
    # at once; a cluster's backplane carries the events of rooms shared with other nodes.
    lists_rooms = False         # True: the room list and member lists come from the backplane

    def open_room(self, room: Room, done) -> None:
        """The first member here joins ``room``: ``done(RoomSnapshot or None)`` once the
        room's state and members elsewhere are known."""
        done(None)

    def join_room(self, room: Room, session: Session, then) -> None:
        """``session`` joins: ``then()`` when its join may be delivered here (in the room's
        order), or ``then(ChatError)``."""
        then()

    def leave_room(self, room: Room, session: Session, event: ev.UserLeft, then) -> None:
        """``session`` left (the leaver was told): ``then()`` tells the members here."""
        then()

    def drop_membership(self, room_key: str, session: Session) -> None:
        """``session`` resumed here from another node, a member of room ``room_key`` in the
        shared state (``kept_rooms``), but could not rejoin it here (a limit of this
        node): that membership ends, and the room's other nodes are told it left."""

    def relay_room(self, room: Room, event, deliver) -> bool:
        """Carry a room event to the other nodes; True if ``deliver()`` will run once it
        is back, False if the hub delivers it now. An event of ``ROOM_BROADCAST_ONLY``
        (hub.remote_rooms) the backplane has itself told to the members
        (``room_frames_arrived``) is followed by ``deliver(True)``: the rest of it."""
        return False

    def close_room(self, room: Room) -> None:
        """No member of ``room`` is left here."""

    def rename_in_room(self, room: Room, session: Session, old_name: str) -> None:
        """A member of ``room`` here is now ``session.name`` (it was ``old_name``)."""

    # Room moderation (hub.moderation): on one server the hub decides it by itself.
    def shares_moderation(self, room: Room) -> bool:
        """True if ``room``'s moderation is decided by the backplane (``moderate``); raises
        ChatError when it would be but cannot be now."""
        return False

    def names_heirs(self, room: Room) -> bool:
        """True if the backplane names the next operator when the last one leaves."""
        return False

    def moderate(self, room: Room, session: Session, kind: str, what, done) -> None:
        """Have the shared state decide a moderation request: ``done(None)`` or
        ``done(ChatError)`` once its outcome was applied here."""
        raise NotImplementedError


@dataclass(eq=False, slots=True)
class Session:
    """One connected, named user.

    ``conversations``, ``away_replied`` and ``remote_away_told`` are made on first use: an empty set costs 216
    bytes, and most of thousands of held sessions never need either (docs/hotpath.md,
    "Memory").
    """
    name: str
    key: str                            # casefolded name: the identity for lookups
    outlet: object
    endpoint: object
    connected_at: float
    last_active: float                  # monotonic time of the last chat request
    rooms: dict = field(default_factory=dict)          # key -> Room
    _conversations: set | None = None   # keys of peers with an open chat: conversations
    rtt_seconds: float | None = None
    resume_token: str = ""
    detached_until: float | None = None     # monotonic; set while the connection is gone
    detach_reason: Reason = Reason.DISCONNECTED
    connected_at_ms: int = 0            # wall clock, for user details
    away: str = ""                      # the away message; empty when not away
    _away_replied: set | None = None    # keys told the away message already: away_replied
    _remote_away_told: dict | None = None   # users of other nodes: key -> away message told
    rejoin: tuple = ()                  # rooms to join once resumed here from another node,
    #                                     (name, still a member in the shared state) pairs
    realname: str = ""                  # IRC's USER/SETNAME realname; native users have none
    invites: dict | None = None         # cluster: room key -> its creation ms (invitations)
    joins_on_the_way: int = 0           # joins started, not yet answered (a cluster opens
    #                                     a room new to its node first): count to the limit

    @property
    def conversations(self) -> set:
        """Keys of the peers this user has an open chat with."""
        found = self._conversations
        if found is None:
            found = self._conversations = set()
        return found

    @conversations.setter
    def conversations(self, value: set) -> None:
        self._conversations = value

    @property
    def away_replied(self) -> set:
        """Keys of the users already told this user's away message."""
        found = self._away_replied
        if found is None:
            found = self._away_replied = set()
        return found

    @away_replied.setter
    def away_replied(self, value: set) -> None:
        self._away_replied = value

    @property
    def remote_away_told(self) -> dict:
        """Users of other nodes whose away message this user was told (key -> message)."""
        found = self._remote_away_told
        if found is None:
            found = self._remote_away_told = {}
        return found

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
    modes: RoomModes = field(default_factory=RoomModes)    # operators, modes, bans, invites
    # Members on other cluster nodes: key -> (name, node). Told by the backplane.
    remote: dict = field(default_factory=dict)
    # Set by the backplane: the room's events go through it (see hub.rooms).
    shared: bool = False
    opening: list | None = None     # (session, done, key) of joins waiting while it opens
    entering: int = 0               # joins on their way through the backplane


@dataclass(slots=True)
class RoomSnapshot:
    """What the backplane knows of a room when a node opens it: its kept state (``fields``,
    see hub.remote_rooms), its members on other nodes (key -> (name, node)) and the away
    messages of those of them who are away (key -> message)."""
    fields: dict
    members: dict
    away: dict = field(default_factory=dict)


class _DetachedOutlet:
    """Where a detached session's events go: nowhere (its endpoint is a placeholder)."""

    def deliver(self, endpoint, event) -> None:
        pass

    def broadcast(self, endpoints, event) -> None:
        pass

    def evict(self, endpoint) -> None:
        pass


DETACHED = _DetachedOutlet()
