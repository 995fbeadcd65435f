"""Error codes of the native protocol and the exceptions that carry them.

The numeric values are part of the wire format (docs/protocol.md, "Error codes").
"""
from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    # The stream itself: framing, handshake, encoding.
    BAD_FRAME = 1
    FRAME_TOO_LARGE = 2
    UNKNOWN_TYPE = 3
    BAD_UTF8 = 4
    HANDSHAKE_REQUIRED = 5
    ALREADY_GREETED = 6
    UNSUPPORTED_VERSION = 7
    # Identity.
    NAME_TAKEN = 10
    NAME_INVALID = 11
    # Routing.
    NO_SUCH_USER = 20
    NOT_IN_ROOM = 21
    ROOM_INVALID = 22
    CANNOT_CHAT_SELF = 23
    NO_CONVERSATION = 24
    TEXT_INVALID = 25
    TOO_MANY_ROOMS = 26
    # Connection management.
    OUTPUT_OVERFLOW = 30
    PING_TIMEOUT = 31
    HANDSHAKE_TIMEOUT = 32
    SERVER_FULL = 40
    SERVER_SHUTDOWN = 41
    # Resuming sessions, server-wide bounds, lists.
    RESUME_REFUSED = 42         # no session to resume under that name, or the wrong token
    USER_RECONNECTING = 43      # a direct message to a user whose connection just dropped
    SESSION_RESUMED = 44        # to the old connection: another one resumed its session
    SERVER_ROOM_LIMIT = 45      # a new room, with the server at max_rooms
    LIST_PATTERN_INVALID = 46
    # Abuse limits.
    EXCESS_FLOOD = 50               # behind its flood allowance too long: disconnected
    TOO_MANY_CONNECTIONS = 51       # its address (IPv6: its /64) has too many connections
    INPUT_BUDGET = 52               # the server holds as much unhandled input as it may
    # The cluster.
    CLUSTER_UNREACHABLE = 70
    NAME_CONFLICT = 75          # two nodes held one name after an outage: one user renamed
    # Room moderation.
    NOT_OPERATOR = 80               # the request needs a room operator
    MODE_INVALID = 81               # an unknown mode letter, a bad parameter, a fixed mode
    USER_NOT_IN_ROOM = 82           # kick/op/voice of a user who is not a member
    INVITE_ONLY = 83                # join of a +i room without an invitation
    BAD_ROOM_KEY = 84               # join of a +k room without its key
    ROOM_FULL = 85                  # join of a +l room at its limit
    CANNOT_SPEAK = 86               # a message in a +m room without voice, or while banned
    ALREADY_IN_ROOM = 87            # invite of a user who is a member already
    BANNED = 88                     # join of a room whose ban list matches the user
    REMOTE_MEMBER = 89              # kick/op/voice of a member on another cluster node


class FrameError(Exception):
    """The byte stream cannot be split into frames any more; the connection must close."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FrameError) and
                (self.code, self.message) == (other.code, other.message))

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"FrameError({self.code.name}, {self.message!r})"


class ProtocolError(Exception):
    """A frame broke the protocol. ``fatal`` means the stream can no longer be trusted.

    ``request_id`` is the id of the offending frame (0 when unknown), so the peer can match the
    error to what it sent.
    """

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool = False,
                 request_id: int = 0):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.fatal = fatal
        self.request_id = request_id


class ChatError(Exception):
    """A chat request was refused (unknown user, taken name, ...); the connection stays open."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message


class LineTooLong(Exception):
    """An IRC line (or the unterminated tail of the stream) passed the framer's hard cap; the
    stream cannot be trusted any more and the connection must close."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LineTooLong) and self.message == other.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"LineTooLong({self.message!r})"
