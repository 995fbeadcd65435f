"""Hub events as IRC lines: each event encoded once for all its IRC recipients.

A room message becomes the same bytes for every IRC member (shared by reference in their
output buffers, as the native outlet does); only the sender is left out, since IRC does not
echo a client's own PRIVMSG unless it asked for ``echo-message``. Direct messages name their
recipient, so they are encoded per delivery, which is one recipient anyway.
"""
from __future__ import annotations

import logging
import re

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
}
# Native text may hold LF (it becomes one IRC line each) but IRC lines cannot hold CR or NUL.
_UNSENDABLE = re.compile("[\r\0]")


def source_of(name: str) -> str:
    return f"{name}!{name}@{USER_HOST}"


def channel_of(room: str) -> str:
    return "#" + room


def text_lines(command: str, source: str, target: str, text: str) -> bytes:
    """``text`` as as many ``command`` lines as it takes: one per LF-separated line, each cut
    at character boundaries to fit IRC's 512 bytes."""
    head = f":{source} {command} {target} :".encode()
    room = MAX_LINE_BYTES - 2 - len(head)
    out = []
    for line in _UNSENDABLE.sub("\ufffd", text).split("\n"):
        raw = line.encode("utf-8")
        while raw:
            cut = len(raw) if len(raw) <= room else _char_boundary(raw, room)
            out.append(head + raw[:cut] + b"\r\n")
            raw = raw[cut:]
    return b"".join(out)


def _char_boundary(raw: bytes, limit: int) -> int:
    """The largest cut <= limit that does not split a UTF-8 sequence."""
    cut = limit
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or limit


class IrcOutlet:
    """Hands hub events to IRC connections. ``users`` maps each registered IRC user's exact
    name to its connection; buffers that become non-empty go on the server's pending list
    (the native outlet's), which the server flushes before the loop sleeps."""

    def __init__(self, pending_owner):
        self._pending_owner = pending_owner
        self.users: dict[str, object] = {}
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

    # -- the outlet interface --------------------------------------------------------------

    def deliver(self, endpoint, event) -> None:
        data = self._encode_one(endpoint, event)
        if data and endpoint.append(data):
            self.pending.append(endpoint)

    def evict(self, endpoint) -> None:
        endpoint.owner.supersede()

    def broadcast(self, endpoints: list, event) -> None:
        kind = type(event)
        if kind is ev.RoomMessage:
            data = text_lines("PRIVMSG", source_of(event.sender), channel_of(event.room),
                              event.text)
            sender = self.users.get(event.sender)
            if sender is not None and not sender.echo_message:
                endpoints = [e for e in endpoints if e is not sender.outbuf]
        elif kind is ev.UserJoined:
            data = encode("JOIN", channel_of(event.room), source=source_of(event.name))
        elif kind is ev.UserLeft:
            if event.reason == Reason.CLOSED:
                data = encode("PART", channel_of(event.room), source=source_of(event.name))
            else:
                self._tell_quit(endpoints, event.name, event.reason)
                return
        else:
            for endpoint in endpoints:
                self.deliver(endpoint, event)
            return
        if data:
            self.pending.extend(fanout(data, endpoints))

    # -- encodings -------------------------------------------------------------------------

    def _encode_one(self, endpoint, event) -> bytes:
        kind = type(event)
        if kind is ev.DirectMessage:
            return text_lines("PRIVMSG", source_of(event.sender), endpoint.owner.nick,
                              event.text)
        if kind is ev.ChatClosed:
            if event.reason != Reason.CLOSED:
                self._tell_quit([endpoint], event.peer, event.reason)
            return b""
        if kind is ev.ChatOpened:
            return b""          # IRC has no notion of an open chat; the first PRIVMSG says it
        if kind in (ev.RoomMessage, ev.UserJoined, ev.UserLeft):
            data = b""
            self.broadcast([endpoint], event)
            return data
        log.debug("no IRC form for %s", kind.__name__)
        return b""

    def _tell_quit(self, endpoints: list, name: str, reason: int) -> None:
        if name != self._quitter:
            self._quitter = name
            self._told.clear()
        told = self._told
        fresh = [e for e in endpoints if e not in told and e.owner.session is not None]
        if not fresh:
            return
        told.update(fresh)
        data = encode("QUIT", QUIT_MESSAGES.get(reason, "Quit"), source=source_of(name))
        self.pending.extend(fanout(data, fresh))
