"""What clients ask for and what happens in the chat, independent of any wire format.

The hub consumes requests and produces notifications; each wire protocol (native frames,
later IRC) maps these to and from its own bytes. ``request_id`` lets a client match a reply
(``Ok``, ``Ack``, ``Error`` or a list) to the request it sent; it is 0 on unsolicited events.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.IntEnum):
    """Why someone left a room or a conversation ended."""
    CLOSED = 0            # the user left the room or closed the conversation
    QUIT = 1              # the user said goodbye
    DISCONNECTED = 2      # the connection was lost or broke the protocol
    TIMED_OUT = 3         # no answer to our pings within the idle timeout
    TOO_SLOW = 4          # stopped reading; its output queue overflowed
    SERVER_SHUTDOWN = 5
    FLOODED = 6           # sent faster than flood control allows, for too long
    OVER_LIMIT = 7        # a server-wide limit (the held-input budget) dropped it
    SERVER_LOST = 8       # the user's cluster node died (or is out of reach)
    KICKED = 9            # a room operator removed the user from the room (Kick)


# Events are never mutated after construction, but they are not frozen: a frozen dataclass
# takes 4-5x as long to build (825 vs 175 ns measured for RoomMessage), and the server builds
# three for every chat message it routes.
_event = dataclass(slots=True)


# -- handshake and liveness (both directions) --------------------------------------------------

@_event
class Hello:
    version: int
    name: str = ""          # empty: the server assigns a unique name
    client: str = ""        # free-form client software name, for logs
    request_id: int = 0


@_event
class Welcome:
    version: int
    name: str               # the name this connection now has
    server: str
    ping_interval_ms: int
    max_frame_bytes: int
    max_text_bytes: int
    max_name_chars: int
    request_id: int = 0


@_event
class Resume:
    """Like Hello, but asks for a session the server still holds, proven by its token."""
    version: int
    name: str
    token: str              # the last ResumeToken this session received
    client: str = ""
    request_id: int = 0


@_event
class ResumeToken:
    """Sent just before each Welcome: what a later Resume of this session must present."""
    token: str
    grace_seconds: int      # how long the name is held after an unclean drop
    request_id: int = 0


@_event
class Ping:
    token: int
    request_id: int = 0


@_event
class Pong:
    token: int
    request_id: int = 0


@_event
class Quit:
    reason: str = ""
    request_id: int = 0


# -- requests (client to server) -----------------------------------------------------------------

@_event
class OpenChat:
    peer: str
    request_id: int = 0


@_event
class CloseChat:
    peer: str
    request_id: int = 0


@_event
class SendDirect:
    peer: str
    text: str
    request_id: int = 0


@_event
class JoinRoom:
    room: str
    request_id: int = 0


@_event
class LeaveRoom:
    room: str
    request_id: int = 0


@_event
class SendRoom:
    room: str
    text: str
    request_id: int = 0


@_event
class SendRoomAction:
    """An action ("/me waves") in a room: a message kind of its own, not a text convention."""
    room: str
    text: str
    request_id: int = 0


@_event
class SendDirectAction:
    peer: str
    text: str
    request_id: int = 0


@_event
class SetTopic:
    room: str
    topic: str              # empty: clear the topic
    request_id: int = 0


@_event
class SetName:
    name: str
    request_id: int = 0


@_event
class SetAway:
    message: str            # empty: back
    request_id: int = 0


@_event
class Whois:
    name: str
    request_id: int = 0


@_event
class ListUsers:
    room: str = ""          # empty: every user on the server
    request_id: int = 0


@_event
class ListRooms:
    request_id: int = 0


@_event
class ListServers:
    request_id: int = 0


@_event
class ListUsersPage:
    """One page of users (of ``room``, or all): names sorting after ``after`` (casefolded)
    that match the glob ``pattern``; at most ``limit`` entries (0: the server's maximum)."""
    room: str = ""
    after: str = ""
    pattern: str = ""
    limit: int = 0
    request_id: int = 0


@_event
class ListRoomsPage:
    after: str = ""
    pattern: str = ""
    limit: int = 0
    request_id: int = 0


# -- replies (server to client) ------------------------------------------------------------------

@_event
class Ok:
    request_id: int = 0


@_event
class Ack:
    """A message was accepted: its server-wide id and the server's timestamp (ms since epoch)."""
    msg_id: int
    timestamp_ms: int
    request_id: int = 0


@_event
class Error:
    code: int
    fatal: bool
    message: str
    request_id: int = 0


@_event
class UserInfo:
    name: str
    rtt_us: int             # smoothed RTT in microseconds; UNKNOWN_RTT before the first pong
    idle_seconds: int       # since the user last sent a chat message or request
    server: str
    away: str = ""          # the away message; empty when the user is not away
    # Not on the native wire (its protocol has no realname): a user of another node's IRC
    # realname, from its record, for IRC's WHO. Empty: none known (use the name).
    realname: str = ""


UNKNOWN_RTT = 0xFFFFFFFF


@_event
class RoomInfo:
    name: str
    members: int


@_event
class Member:
    """One member of a room, as listed in ``RoomJoined``."""
    name: str
    away: bool


@_event
class ServerInfo:
    name: str
    host: str               # the address clients should connect to (never a wildcard)
    port: int
    users: int
    load_permille: int = 0  # CPU the node used over its last period, in permille of a core
    rtt_us: int = 0         # from the answering node, through the broker; 0 for itself


@_event
class UserList:
    total: int              # matching users; ``users`` may hold fewer if they did not fit
    users: tuple[UserInfo, ...]
    request_id: int = 0


@_event
class RoomList:
    total: int
    rooms: tuple[RoomInfo, ...]
    request_id: int = 0


@_event
class ServerList:
    total: int
    servers: tuple[ServerInfo, ...]
    request_id: int = 0


@_event
class UserPage:
    total: int              # users matching the pattern in the whole list
    total_exact: bool       # False: ``total`` is an upper bound (a pattern with wildcards)
    next_after: str         # send as ``after`` for the next page; "" when the list is done
    users: tuple[UserInfo, ...]
    request_id: int = 0


@_event
class RoomPage:
    total: int
    total_exact: bool
    next_after: str
    rooms: tuple[RoomInfo, ...]
    request_id: int = 0


@_event
class UserDetails:
    """The reply to ``Whois``."""
    name: str
    server: str
    connected_at_ms: int    # wall clock, ms since the epoch
    idle_seconds: int
    rtt_us: int
    away: str               # the away message; empty when not away
    rooms: tuple[RoomInfo, ...]     # the rooms the user shares with the asker
    request_id: int = 0
    # Not on the native wire (its protocol has no realname): a user of another node's IRC
    # realname, from its record, for IRC's WHOIS 311. Empty: none known (use the name).
    realname: str = ""


# -- notifications (server to client) ------------------------------------------------------------

@_event
class DirectMessage:
    sender: str
    msg_id: int
    timestamp_ms: int
    text: str
    request_id: int = 0


@_event
class DirectAction:
    sender: str
    msg_id: int
    timestamp_ms: int
    text: str
    request_id: int = 0


@_event
class AwayReply:
    """Sent to whoever messages an away user: once per sender per away period."""
    name: str
    message: str
    request_id: int = 0


@_event
class NameChanged:
    old: str
    new: str
    request_id: int = 0


@_event
class AwayChanged:
    """A user sharing a room went away (``message``) or came back (empty ``message``)."""
    name: str
    message: str
    request_id: int = 0


@_event
class ChatOpened:
    peer: str
    request_id: int = 0


@_event
class ChatClosed:
    peer: str
    reason: int
    message: str = ""       # the peer's quit message, when reason is QUIT
    request_id: int = 0


@_event
class RoomMessage:
    room: str
    sender: str
    msg_id: int
    timestamp_ms: int
    text: str
    request_id: int = 0


@_event
class UserJoined:
    room: str
    name: str
    request_id: int = 0


@_event
class UserLeft:
    room: str
    name: str
    reason: int
    message: str = ""       # the user's quit message, when reason is QUIT
    request_id: int = 0


@_event
class RoomAction:
    room: str
    sender: str
    msg_id: int
    timestamp_ms: int
    text: str
    request_id: int = 0


@_event
class TopicChanged:
    room: str
    name: str               # who set it
    timestamp_ms: int
    topic: str              # empty: the topic was cleared
    request_id: int = 0


@_event
class RoomJoined:
    """Told to the joiner after each JoinRoom: the room's topic and (some of) its members."""
    room: str
    topic: str
    topic_by: str
    topic_at_ms: int        # 0: no topic
    total: int              # members in the room; ``members`` may hold fewer
    members: tuple[Member, ...]
    request_id: int = 0


# -- room moderation (docs/protocol.md, "Room moderation") --------------------------------------

@_event
class ModeChange:
    """One change of a room's modes: ``mode`` is one letter, ``argument`` its parameter
    (a name for o/v, a key for +k, a number for +l, a mask for b; "" for the others)."""
    adding: bool
    mode: str
    argument: str = ""


@_event
class MemberModes:
    """A member with operator and/or voice: ``modes`` is "o", "v" or "ov"."""
    name: str
    modes: str


@_event
class Ban:
    mask: str               # nick!user@host glob, casefolded
    set_by: str
    set_at_ms: int


@_event
class SetRoomMode:
    room: str
    changes: tuple[ModeChange, ...]
    request_id: int = 0


@_event
class Kick:
    room: str
    name: str
    reason: str = ""
    request_id: int = 0


@_event
class Invite:
    room: str
    name: str
    request_id: int = 0


@_event
class GetRoomModes:
    room: str
    request_id: int = 0


@_event
class JoinRoomKey:
    """JoinRoom with the key of a +k room."""
    room: str
    key: str
    request_id: int = 0


@_event
class RoomModeChanged:
    room: str
    name: str               # who changed them; "" when the server did
    changes: tuple[ModeChange, ...]
    request_id: int = 0


@_event
class Invited:
    room: str
    name: str               # who invited you
    request_id: int = 0


@_event
class RoomModes:
    """A room's modes, its operators and voiced members, and its bans."""
    room: str
    modes: str              # the flag letters set, e.g. "nt" (k and l included when set)
    key: str                # "" when none (or when the asker is not a member)
    limit: int              # 0: no member limit
    created_at_ms: int
    members: tuple[MemberModes, ...]
    bans: tuple[Ban, ...]
    request_id: int = 0


@_event
class Kicked:
    """Told to every member (the kicked one included) just before its UserLeft(KICKED)."""
    room: str
    name: str               # who was kicked
    by: str                 # the operator who kicked
    reason: str = ""
    request_id: int = 0
