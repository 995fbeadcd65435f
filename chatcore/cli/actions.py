"""What each input line does: plain text for the current conversation, and every /command.

``CommandActions`` is the half of ``Session`` that answers the user; the other half
(``session``) keeps the connection. Each command of the table in ``commands`` is a
``_cmd_NAME`` method here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .. import events as ev
from .commands import CommandError, Invocation, Text, help_lines, parse_line
from .conversations import Conversation, Target
from .formatting import code_name, error_name, record, rtt_ms

# Typed while offline: kept in memory until the server is back. Past this the oldest are
# dropped with a notice; a chat client is not a mail queue.
MAX_OUTBOX_MESSAGES = 1000


@dataclass(slots=True)
class Outgoing:
    target: Target
    text: str


def split_text(text: str, limit_bytes: int) -> list[str]:
    """``text`` in parts of at most ``limit_bytes`` of UTF-8 each, broken after a line feed
    or space where one is near the limit, never inside a character."""
    parts = []
    while len(text.encode("utf-8", "surrogatepass")) > limit_bytes:
        head = text.encode("utf-8", "surrogatepass")[:limit_bytes].decode("utf-8", "ignore")
        cut = max(head.rfind("\n"), head.rfind(" "))
        if cut < len(head) // 2:            # no break near the end: cut the word
            cut = len(head)
            parts.append(head)
        else:
            parts.append(head[:cut])
            cut += 1                        # the break itself is not sent
        text = text[cut:]
    if text:
        parts.append(text)
    return parts


def list_glob(pattern: str | None) -> str:
    """The server's list pattern for what was typed: a name start as irssi users expect
    ("dev" lists dev, devops, ...), a glob (``*ops*``) as typed; "" for everything."""
    if not pattern:
        return ""
    pattern = pattern.lstrip("#")
    return pattern if any(c in pattern for c in "*?[") else pattern + "*"


CURRENT = object()      # handle_line's default target: the current conversation


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


class CommandActions:
    """Mixed into Session: uses its connection, requests and conversations."""

    # -- input -------------------------------------------------------------------------------

    def handle_line(self, line: str, target=CURRENT) -> None:
        """Run one line the user typed; problems become one-line hints, never exceptions.

        ``target``: where the prompt said plain lines go when the line was typed (default:
        the current conversation; None: nowhere), so a conversation that changes meanwhile
        takes nothing that was meant for another.
        """
        try:
            parsed = parse_line(line)
        except CommandError as exc:
            self.emit(record("hint", text=str(exc)))
            return
        if parsed is None:
            return
        if isinstance(parsed, Text):
            if target is CURRENT:
                target = self.target
            if target is None:
                reply = f", or /r TEXT to answer {self.last_direct}" if self.last_direct else ""
                self.emit(record("hint", text="nobody to send to: /chat USER or /join ROOM "
                                              f"first, or /msg USER TEXT{reply}"))
                return
            self.send_text(target, parsed.text)
            return
        assert isinstance(parsed, Invocation)
        getattr(self, f"_cmd_{parsed.command.name}")(*parsed.args)

    def _hint(self, text: str) -> None:
        self.emit(record("hint", text=text))

    def _offline_hint(self, what: str) -> bool:
        if self.connected:
            return False
        self._hint(f"not connected (reconnecting); {what} needs the server")
        return True

    # -- conversations -----------------------------------------------------------------------

    def _cmd_chat(self, peer: str) -> None:
        self.open_chat(peer)

    def _cmd_msg(self, peer: str, text: str) -> None:
        if _same(peer, self.name):
            self._hint("that is you; /msg someone else")
            return
        self.send_text(Target("user", peer), text)

    def _cmd_reply(self, text: str | None = None) -> None:
        if self.last_direct is None:
            self._hint("nobody has sent you a direct message yet")
        elif text is None:
            self.open_chat(self.last_direct)
        else:
            self.send_text(Target("user", self.last_direct), text)

    def _cmd_close(self, peer: str | None = None) -> None:
        if peer is None:
            if self.target is None:
                self._hint("no conversation to close; usage: /close [USER]")
                return
            if self.target.kind == "room":
                self._cmd_leave(self.target.name)
                return
            peer = self.target.name
        target = Target("user", peer)
        was_open = any(_same(peer, p) for p in self.chats)
        self.conversations.close(target)
        if not self.connected or not was_open:       # nothing open on the server
            self.emit(record("chat_closed", peer=peer, reason="closed", by_you=True))
            self._notify()
            return
        self._request(ev.CloseChat(peer),
                      lambda reply: self.emit(record("chat_closed", peer=peer, reason="closed",
                                                     by_you=True)),
                      label=f"/close {peer}")
        self._notify()

    def _cmd_join(self, room: str) -> None:
        self.join(room)

    def _cmd_leave(self, room: str | None = None) -> None:
        if room is None:
            if self.target is None or self.target.kind != "room":
                self._hint("which room? usage: /leave ROOM")
                return
            room = self.target.name
        if not any(_same(room, r) for r in self.rooms):
            self._hint(f"you are not in #{room}")
            return
        self._forget_room(room)
        if not self.connected:
            self.emit(record("left", room=room, name=self.name, reason="closed"))
            return
        self._request(ev.LeaveRoom(room), lambda reply: None, label=f"/leave #{room}")

    def _cmd_switch(self, where: str) -> None:
        conversation = self.conversations.find(where)
        if conversation is None:
            listed = " ".join(f"{i}:{c.target.label}"
                              for i, c in enumerate(self.conversations.items, 1))
            self._hint(f"no conversation {where!r}; open: {listed}" if listed else
                       f"no conversation {where!r}; /chat USER or /join ROOM opens one")
            return
        self.switch_to(conversation)

    def switch_to(self, conversation: Conversation | None) -> None:
        """Make ``conversation`` current (Alt-N, Ctrl-N/P, /switch)."""
        if conversation is None or conversation.target.same(self.target):
            return
        unread = conversation.unread
        self.conversations.switch(conversation.target)
        self.emit(record("switched", unread=unread, **conversation.target.fields()))
        self._notify()

    def step(self, offset: int) -> None:
        """Switch to the next (1) or previous (-1) conversation."""
        self.switch_to(self.conversations.step(offset))

    def _cmd_log(self, where: str | None = None) -> None:
        conversation = (self.conversations.find(where) if where is not None
                        else self.target and self.conversations.get(self.target))
        if conversation is None:
            self._hint(f"no conversation {where!r}" if where else
                       "which conversation? usage: /log [WHERE]")
            return
        fields = conversation.target.fields()
        conversation.unread, conversation.mentioned = 0, False      # now read
        self._notify()
        self.emit(record("log", count=len(conversation.log), **fields))
        if conversation.log:
            for rec in conversation.log:
                self.emit({**rec, "replay": True})
            self.emit(record("log_end", **fields))

    def _cmd_split(self, value: str | None = None) -> None:
        if value is not None:
            self.split_long = value == "on"
        limit = f" (the limit is {self.max_text_bytes} bytes)" if self.max_text_bytes else ""
        self.emit(record("info", text=("messages over the limit are sent in parts" if
                                       self.split_long else "messages over the limit are "
                                       "refused; /split on sends them in parts") + limit))

    # -- lists -------------------------------------------------------------------------------

    def _cmd_rooms(self, pattern: str | None = None) -> None:
        if self._offline_hint("/rooms"):
            return
        glob = list_glob(pattern)

        def shown(page: ev.RoomPage, start: int) -> dict:
            for room in page.rooms:
                self.known_rooms[room.name.casefold()] = room.name
            return record("rooms", total=page.total, exact=page.total_exact, start=start,
                          pattern=glob, more=bool(page.next_after),
                          rooms=[{"name": r.name, "members": r.members} for r in page.rooms])
        self._page(lambda after: ev.ListRoomsPage(after=after, pattern=glob), shown, "/rooms")

    def _cmd_who(self, room: str | None = None) -> None:
        if self._offline_hint("/who"):
            return
        if room is None and self.target is not None and self.target.kind == "room":
            room = self.target.name

        def shown(page: ev.UserPage, start: int) -> dict:
            for user in page.users:
                self._seen_user(user.name)
            return record("users", room=room or None, total=page.total, start=start,
                          more=bool(page.next_after), users=[
                              {"name": u.name, "rtt_ms": rtt_ms(u.rtt_us),
                               "idle_seconds": u.idle_seconds, "server": u.server,
                               "away": u.away}
                              for u in page.users])
        self._page(lambda after: ev.ListUsersPage(room=room or "", after=after), shown,
                   "/who")

    def _page(self, request: Callable[[str], object], shown: Callable, label: str,
              after: str = "", start: int = 1) -> None:
        """One page of a list, then (scripts) the next, one request at a time, which is what
        keeps a long list fair to everyone else; a person asks for the next with /more."""
        def listed(page) -> None:
            rec = shown(page, start)
            if page.next_after and self.page_all:
                rec["continues"] = True             # the next page follows by itself
            self.emit(rec)
            count = len(page.rooms if hasattr(page, "rooms") else page.users)
            self._more = None
            if page.next_after:
                if self.page_all:
                    self._page(request, shown, label, page.next_after, start + count)
                else:
                    self._more = (request, shown, label, page.next_after, start + count)
        self._request(request(after), listed, label=label)

    def _cmd_more(self) -> None:
        if self._more is None:
            self._hint("no more to show: /more follows a /rooms or /who that said so")
            return
        if self._offline_hint("/more"):
            return
        self._page(*self._more)

    def _cmd_ping(self) -> None:
        if self._offline_hint("/ping"):
            return
        self.ping(lambda seconds: self.emit(record(
            "pong", server=self.server, rtt_ms=round(seconds * 1000, 3))))

    def _cmd_help(self) -> None:
        self.emit(record("help", lines=help_lines()))

    def _cmd_quit(self, reason: str = "") -> None:
        self.quit_requested = True
        self.quit_reason = reason
        self._notify()

    # -- actions -----------------------------------------------------------------------------

    def open_chat(self, peer: str, sticky: bool = False) -> None:
        """Make ``peer`` the target; ``sticky`` keeps it even if they are not online yet."""
        if _same(peer, self.name):
            self._hint("that is you; /chat someone else")
            return
        target = Target("user", peer)
        previous = self.target
        self.conversations.switch(target)
        self._remember_chat(peer)
        if not self.connected:
            self.emit(record("chat", to=peer))
            self._notify()
            return

        def refused(error: ev.Error) -> None:
            self.failed_requests += 1
            if not sticky:
                self.conversations.close(target)
                if previous is not None and self.conversations.get(previous):
                    self.conversations.active = previous
            self._error_event(error, f"cannot talk to {peer}")

        self._request(ev.OpenChat(peer), lambda reply: self.emit(record("chat", to=peer)),
                      refused, label=f"/chat {peer}")
        self._notify()

    def join(self, room: str) -> None:
        target = Target("room", room)
        previous = self.target
        self.conversations.switch(target).live = True
        if not self.connected:
            self.emit(record("info", text=f"will join #{room} once reconnected"))
            self._notify()
            return

        def refused(error: ev.Error) -> None:
            self.failed_requests += 1
            self.conversations.close(target)
            if previous is not None and self.conversations.get(previous):
                self.conversations.active = previous
            self._error_event(error, f"cannot join #{room}")

        self._request(ev.JoinRoom(room), lambda reply: None, refused, label=f"/join #{room}")
        self._notify()

    def ping(self, on_rtt: Callable[[float], None]) -> None:
        started = time.monotonic()
        token = time.monotonic_ns() & 0xFFFFFFFFFFFFFFFF
        self._request(ev.Ping(token), lambda reply: on_rtt(time.monotonic() - started),
                      label="/ping")

    def send_text(self, target: Target, text: str) -> None:
        """Send ``text`` to ``target``: refused with a note when it is over the server's
        limit, or sent in parts after /split on."""
        size = len(text.encode("utf-8", "surrogatepass"))
        limit = self.max_text_bytes
        if limit and size > limit:
            if not self.split_long:
                self.undelivered += 1
                self.emit(record("too_long", size_bytes=size, limit_bytes=limit,
                                 **target.fields()))
                return
            for part in split_text(text, limit):
                self._send_message(Outgoing(target, part))
            return
        self._send_message(Outgoing(target, text))

    def _send_message(self, outgoing: Outgoing) -> None:
        if not self.connected:
            if len(self.outbox) >= MAX_OUTBOX_MESSAGES:
                self._not_delivered(self.outbox.popleft(), "too much waiting to be sent")
            self.outbox.append(outgoing)
            self.emit(record("queued", text=outgoing.text, why="not connected",
                             **outgoing.target.fields()))
            self._notify()
            return
        target = outgoing.target
        event = (ev.SendRoom(target.name, outgoing.text) if target.kind == "room"
                 else ev.SendDirect(target.name, outgoing.text))

        def acked(ack: ev.Ack) -> None:
            if target.kind == "user":
                self._remember_chat(target.name)
            self._show(record("sent", ts=ack.timestamp_ms, **{"from": self.name},
                              text=outgoing.text, msg_id=ack.msg_id, **target.fields()),
                       target)

        def refused(error: ev.Error) -> None:
            self._not_delivered(outgoing, error.message or error_name(error.code),
                                code=code_name(error.code))

        self._request(event, acked, refused, outgoing=outgoing)

    def _not_delivered(self, outgoing: Outgoing, reason: str, code: str = "") -> None:
        self.undelivered += 1
        self.emit(record("not_delivered", text=outgoing.text, reason=reason, code=code,
                         **outgoing.target.fields()))

