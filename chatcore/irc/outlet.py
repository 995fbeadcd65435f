"""Hub events as IRC lines: each event encoded once for all its IRC recipients.

A room message becomes the same bytes for every IRC member (shared by reference in their
output buffers, as the native outlet does); only the sender is left out (by the compiled
``fanout``'s ``skip``, not a copy of the member list), since IRC does not echo a client's own
PRIVMSG unless it asked for ``echo-message``. Direct messages name their
recipient, so they are encoded per delivery, which is one recipient anyway.

There is one outlet per encoding: ``IrcOutlet(front, timed=False)`` for clients without
``server-time`` and ``timed=True`` for those with it (every line relayed from another user
starts with ``@time=...``). The hub groups a room's endpoints by outlet, so a message is
still encoded once per encoding present, never once per recipient.
"""
from __future__ import annotations

import logging
import re
import time

from .. import events as ev
from ..codec import fanout
from ..events import Reason
from .message import MAX_LINE_BYTES, encode

log = logging.getLogger(__name__)

# Every user appears as nick!nick@USER_HOST: the source must follow from the name alone so a
# message is encoded once for all recipients, and addresses are nobody else's business.
USER_HOST = "chatcore"

QUIT_MESSAGES = {
    Reason.QUIT: "Quit",
    Reason.DISCONNECTED: "Connection closed",
    Reason.TIMED_OUT: "Ping timeout",
    Reason.TOO_SLOW: "SendQ exceeded",
    Reason.SERVER_SHUTDOWN: "Server shutting down",
    Reason.FLOODED: "Excess Flood",
    Reason.OVER_LIMIT: "Server input budget exceeded",
    Reason.SERVER_LOST: "Server lost",
}
# Native text may hold LF (it becomes one IRC line each) but IRC lines cannot hold CR or NUL.
_UNSENDABLE = re.compile("[\r\0]")
_AWAY_UNSENDABLE = re.compile("[\r\n\0]")
ACTION_OPEN, ACTION_CLOSE = b"\x01ACTION ", b"\x01"
# Events another module turns into lines (irc/moderation: MODE, KICK, INVITE): kind ->
# encode(outlet, event, owner=None) -> bytes, the same for all recipients when owner is None.
LINES: dict = {}


def source_of(name: str) -> str:
    return f"{name}!{name}@{USER_HOST}"


def channel_of(room: str) -> str:
    return "#" + room


def quit_text(reason: int, message: str = "") -> str:
    """What others see as a quitter's QUIT reason: its own goodbye, or why it went."""
    if reason == Reason.QUIT and message:
        return f"Quit: {message}"
    return QUIT_MESSAGES.get(reason, "Quit")


_formatted_second = [-1, ""]     # the last second formatted: strftime costs ~2 us a call


def server_time(timestamp_ms: int | None = None) -> str:
    """The IRCv3 ``server-time`` form: UTC, milliseconds, 'Z'."""
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    seconds, millis = divmod(timestamp_ms, 1000)
    if seconds != _formatted_second[0]:
        _formatted_second[:] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                      time.gmtime(seconds))
    return f"{_formatted_second[1]}.{millis:03d}Z"


def time_tag(timestamp_ms: int | None = None) -> bytes:
    return b"@time=" + server_time(timestamp_ms).encode() + b" "


def text_lines(command: str, source: str, target: str, text: str, *, action: bool = False,
               prefix: bytes = b"") -> bytes:
    """``text`` as as many ``command`` lines as it takes: one per LF-separated line, each cut
    at character boundaries to fit IRC's 512 bytes (tags, in ``prefix``, apart). ``action``
    makes each line a CTCP ACTION."""
    head = f":{source} {command} {target} :".encode()
    room = MAX_LINE_BYTES - 2 - len(head)
    if not action and "\n" not in text and "\r" not in text and "\0" not in text:
        raw = text.encode("utf-8")          # the commonest case: one line that fits
        if len(raw) <= room:
            return prefix + head + raw + b"\r\n"
    if action:
        head += ACTION_OPEN
        room -= len(ACTION_OPEN) + len(ACTION_CLOSE)
    tail = ACTION_CLOSE + b"\r\n" if action else b"\r\n"
    head = prefix + head
    out = []
    for line in _UNSENDABLE.sub("\ufffd", text).split("\n"):
        raw = line.encode("utf-8")
        while raw:
            cut = len(raw) if len(raw) <= room else _char_boundary(raw, room)
            out.append(head + raw[:cut] + tail)
            raw = raw[cut:]
    return b"".join(out)


def _char_boundary(raw: bytes, limit: int) -> int:
    """The largest cut <= limit that does not split a UTF-8 sequence."""
    cut = limit
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or limit


class IrcOutlet:
    """Hands hub events to IRC connections of one encoding. ``users`` (the front end's)
    maps each registered IRC user's casefolded name to its connection; buffers that become
    non-empty go on the server's pending list (the native outlet's), which the server
    flushes before the loop sleeps."""

    def __init__(self, front, pending_owner, timed: bool = False):
        self.front = front
        self._pending_owner = pending_owner
        self.timed = timed
        self.users: dict[str, object] = front.users
        # The hub tells a quit once per shared room and once per open chat; IRC says it once
        # per recipient. Endpoints already told about _quitter's quit (reset every turn).
        self._quitter = ""
        self._told: set = set()

    @property
    def pending(self) -> list:
        return self._pending_owner.pending

    def end_turn(self) -> None:
        self._quitter = ""
        self._told.clear()

    def _tags(self, timestamp_ms: int | None = None) -> bytes:
        return time_tag(timestamp_ms) if self.timed else b""

    def line(self, command: str, *params: str, source: str, timestamp_ms=None) -> bytes:
        """One relayed line in this outlet's encoding."""
        return self._tags(timestamp_ms) + encode(command, *params, source=source)

    # -- the outlet interface --------------------------------------------------------------

    def deliver(self, endpoint, event) -> None:
        data = self._encode_one(endpoint, event)
        if not data:
            return
        if self.front.capturing and endpoint.owner in self.front.capturing:
            endpoint.owner.send(data)       # part of a labeled command's answer
        elif endpoint.append(data):
            self.pending.append(endpoint)

    def evict(self, endpoint) -> None:
        endpoint.owner.supersede()

    def broadcast(self, endpoints: list, event) -> None:
        kind = type(event)
        skip = None
        if kind is ev.RoomMessage or kind is ev.RoomAction:
            data = text_lines("PRIVMSG", source_of(event.sender), channel_of(event.room),
                              event.text, action=kind is ev.RoomAction,
                              prefix=self._tags(event.timestamp_ms) if self.timed else b"")
            sender = self.users.get(event.sender.casefold())
            if sender is not None and not sender.echo_message and sender.outlet is self:
                skip = sender.outbuf        # left out by the compiled fanout itself
        elif kind is ev.UserJoined:
            data = self.line("JOIN", channel_of(event.room), source=source_of(event.name))
            joiner = self.users.get(event.name.casefold())
            if joiner is not None and joiner.outlet is self and joiner.answer_waits() \
                    and joiner.outbuf in endpoints:
                # A labeled JOIN a cluster completes later: its JOIN line opens its answer.
                joiner.captured(data)
                skip = joiner.outbuf
            away = self._away_of(event.name)
            if away:        # away-notify: the JOIN of an away user is followed by its AWAY
                notified = self._away_notified(endpoints, event.name)
                if notified:
                    told = set(notified)
                    self._fanout(data + self._away_line(event.name, away), notified)
                    endpoints = [e for e in endpoints if e not in told]
        elif kind is ev.AwayChanged:
            endpoints = self._away_notified(endpoints, event.name)
            data = self._away_line(event.name, event.message) if endpoints else b""
        elif kind is ev.UserLeft:
            if event.reason == Reason.KICKED:
                return          # the KICK line of the Kicked just before said it
            if event.reason == Reason.CLOSED:
                data = self.line("PART", channel_of(event.room), source=source_of(event.name))
            else:
                self._tell_quit(endpoints, event.name, event.reason, event.message)
                return
        elif kind is ev.NameChanged:
            data = self.line("NICK", event.new, source=source_of(event.old))
            renamer = self.users.get(event.old.casefold())
            if renamer is not None and renamer.outlet is self and renamer.answer_waits():
                # A labeled NICK claimed across the cluster: its NICK line is its answer.
                renamer.captured(data)
                skip = renamer.outbuf
        elif kind is ev.TopicChanged:
            data = self.line("TOPIC", channel_of(event.room), event.topic,
                             source=source_of(event.name), timestamp_ms=event.timestamp_ms)
        elif kind in LINES:
            data = LINES[kind](self, event)
        else:
            for endpoint in endpoints:
                self.deliver(endpoint, event)
            return
        if data:
            self._fanout(data, endpoints, skip)

    def _away_line(self, name: str, message: str) -> bytes:
        """``:nick!nick@host AWAY :message``, or ``AWAY`` alone when back (away-notify)."""
        base = f":{source_of(name)} AWAY".encode()
        head = self._tags() + base
        if not message:
            return head + b"\r\n"
        text = _AWAY_UNSENDABLE.sub(" ", message).encode("utf-8")
        room = MAX_LINE_BYTES - 4 - len(base)          # " :" and CRLF; tags apart
        if len(text) > room:
            text = text[:_char_boundary(text, room)]
        return head + b" :" + text + b"\r\n"

    def _away_of(self, name: str) -> str:
        """The away message of user ``name`` as this node's hub knows it ("" when back)."""
        hub = self.front.server.hub
        session = hub.sessions.get(name.casefold())
        if session is not None:
            return session.away
        return hub.remote_away.get(name.casefold(), "")

    @staticmethod
    def _away_notified(endpoints: list, name: str) -> list:
        """The endpoints of clients that asked for ``away-notify``, but ``name``'s own."""
        key = name.casefold()
        return [e for e in endpoints if "away-notify" in e.owner.caps
                and e.owner.nick.casefold() != key]

    def _fanout(self, data: bytes, endpoints: list, skip=None) -> None:
        """``data`` to every endpoint but ``skip``."""
        for capturing in self.front.capturing:
            if capturing.outbuf is not skip and capturing.outbuf in endpoints:
                # A labeled command's own echo (labeled-response): it goes in the response.
                endpoints = [e for e in endpoints if e is not capturing.outbuf]
                capturing.send(data)
        self.pending.extend(fanout(data, endpoints, skip))

    # -- encodings -------------------------------------------------------------------------

    def _encode_one(self, endpoint, event) -> bytes:
        kind = type(event)
        owner = endpoint.owner
        if kind is ev.DirectMessage or kind is ev.DirectAction:
            return text_lines("PRIVMSG", source_of(event.sender), owner.nick, event.text,
                              action=kind is ev.DirectAction,
                              prefix=self._tags(event.timestamp_ms))
        if kind is ev.AwayReply:
            return encode("301", owner.nick, event.name, event.message or "away",
                          source=self.front.server_name)
        if kind is ev.RoomJoined:
            owner.room_joined(event)
            return b""
        if kind is ev.ChatClosed:
            if event.reason != Reason.CLOSED:
                self._tell_quit([endpoint], event.peer, event.reason, event.message)
            return b""
        if kind is ev.ChatOpened:
            return b""          # IRC has no notion of an open chat; the first PRIVMSG says it
        if kind in LINES:
            return LINES[kind](self, event, owner)
        if kind in (ev.RoomMessage, ev.RoomAction, ev.UserJoined, ev.UserLeft,
                    ev.NameChanged, ev.TopicChanged, ev.AwayChanged):
            self.broadcast([endpoint], event)
            return b""
        log.debug("no IRC form for %s", kind.__name__)
        return b""

    def _tell_quit(self, endpoints: list, name: str, reason: int, message: str = "") -> None:
        if name != self._quitter:
            self._quitter = name
            self._told.clear()
        told = self._told
        fresh = [e for e in endpoints if e not in told and e.owner.session is not None]
        if not fresh:
            return
        told.update(fresh)
        data = self.line("QUIT", quit_text(reason, message), source=source_of(name))
        self.pending.extend(fanout(data, fresh))
