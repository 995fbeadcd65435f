"""The chat session: who we talk to, which rooms we are in, what is not yet acknowledged.

Both front ends drive one ``Session``: they hand it input lines (``handle_line``) and print
the records it emits. The session owns the connection and keeps the chat going across
connection losses: it reconnects with exponential backoff and jitter, reclaims its name,
rejoins its rooms, reopens its conversations, and sends what was typed while it was away.

Messages are sent at least once: a message the server had not acknowledged when the
connection broke is sent again after reconnecting.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from .. import events as ev
from ..errors import ErrorCode
from . import exitcodes
from .commands import CommandError, Invocation, Text, help_lines, parse_line
from .config import ClientConfig
from .connection import Connection, ConnectionLost, describe
from .formatting import error_name, reason_name, record, rtt_ms

log = logging.getLogger(__name__)

# Typed while offline: kept in memory until the server is back. Past this the oldest are
# dropped with a notice; a chat client is not a mail queue.
MAX_OUTBOX_MESSAGES = 1000
# The server pings every ping_interval; this many silent intervals mean it is gone even if
# TCP has not noticed (a cable pulled, a host frozen).
SILENT_PING_INTERVALS = 3
# /servers measures the RTT to other servers by a TCP connect; this bounds a dead one.
SERVER_PROBE_TIMEOUT_SECONDS = 2.0

REPLY_TYPES = (ev.Ok, ev.Ack, ev.Error, ev.UserList, ev.RoomList, ev.ServerList, ev.Pong)
NAME_ERRORS = (ErrorCode.NAME_TAKEN, ErrorCode.NAME_INVALID)


@dataclass(frozen=True, slots=True)
class Target:
    """Where plain lines go: a user (a conversation) or a room."""
    kind: str                 # "user" or "room"
    name: str

    @property
    def label(self) -> str:
        return f"#{self.name}" if self.kind == "room" else self.name

    def fields(self) -> dict:
        return {"room": self.name} if self.kind == "room" else {"to": self.name}


@dataclass(slots=True)
class Outgoing:
    target: Target
    text: str


@dataclass(slots=True)
class Pending:
    request: object
    on_reply: Callable
    on_error: Callable
    outgoing: Outgoing | None = None
    label: str = ""


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


class Session:
    def __init__(self, config: ClientConfig, emit: Callable[[dict], None], *,
                 ask_name: Callable[[], Awaitable[str]] | None = None,
                 on_change: Callable[[], None] = lambda: None):
        self.config = config
        self.emit = emit
        self.ask_name = ask_name
        self.on_change = on_change          # the prompt shows state; tell it to redraw
        self.name = config.name or ""
        self.server = ""
        self.target: Target | None = None
        self.rooms: list[str] = []
        self.chats: list[str] = []          # peers with an open conversation
        self.outbox: collections.deque[Outgoing] = collections.deque()
        self.connected = False
        self.quit_requested = False
        self.undelivered = 0                # messages the server refused or we gave up on
        self.failed_requests = 0
        self._conn: Connection | None = None
        self._pending: dict[int, Pending] = {}
        self._tasks: set[asyncio.Task] = set()          # work a script waits for
        self._background: set[asyncio.Task] = set()     # the reader, the reconnect loop
        self._reconnecting: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._closing = False

    # -- state shown to the user -------------------------------------------------------------

    @property
    def prompt_text(self) -> str:
        where = self.target.label if self.target else self.name
        return f"{'' if self.connected else '(offline) '}[{where}] "

    @property
    def waiting_for_replies(self) -> bool:
        return bool(self._pending or self._tasks)

    @property
    def busy(self) -> bool:
        """Something typed is not yet acknowledged, or a reply is outstanding."""
        return bool(self._pending or self.outbox or self._tasks)

    def _notify(self) -> None:
        self._changed.set()
        self.on_change()

    # -- connecting --------------------------------------------------------------------------

    async def start(self) -> int | None:
        """Connect and say Hello; None on success, else an exit status (already explained)."""
        config = self.config
        try:
            conn = await Connection.open(config.host, config.port, local_port=config.local_port,
                                         timeout=config.connect_timeout_seconds)
        except OSError as exc:
            self._error(f"cannot connect to {config.host}:{config.port}: "
                        f"{describe(exc)}", code="UNAVAILABLE")
            return exitcodes.UNAVAILABLE
        while True:
            try:
                reply = await conn.hello(self.name)
            except ConnectionLost as exc:
                self._error(f"the server closed the connection during the handshake: {exc}",
                            code="UNAVAILABLE")
                conn.close()
                return exitcodes.UNAVAILABLE
            if type(reply) is ev.Welcome:
                break
            self._error_event(reply, f"the server refused the name {self.name!r}"
                              if reply.code in NAME_ERRORS else "the server refused us")
            if reply.code not in NAME_ERRORS or reply.fatal:
                conn.close()
                return exitcodes.UNAVAILABLE
            if self.ask_name is None:
                conn.close()
                return exitcodes.NAME_REFUSED
            self.name = await self.ask_name()
        self._attach(conn, reply)
        if config.room:
            self.join(config.room)
        elif config.to:
            self.open_chat(config.to, sticky=True)
        return None

    def _attach(self, conn: Connection, welcome: ev.Welcome) -> None:
        self._conn = conn
        self.name = welcome.name
        self.server = welcome.server
        self.connected = True
        self.emit(record("connected", name=welcome.name, server=welcome.server,
                         host=self.config.host, port=self.config.port))
        silent = SILENT_PING_INTERVALS * welcome.ping_interval_ms / 1000 or None
        self._spawn(self._read(conn, silent), track=False)
        self._notify()

    async def _read(self, conn: Connection, silent_seconds: float | None) -> None:
        try:
            while True:
                self._on_event(await conn.next_event(silent_seconds))
        except ConnectionLost as exc:
            if conn is self._conn:
                self._lost(str(exc))

    def _lost(self, reason: str) -> None:
        """The connection broke: keep what is unacknowledged, start reconnecting."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self.connected = False
        if self._closing:
            self._notify()
            return
        self.emit(record("disconnected", reason=reason))
        unsent = []
        for request_id in sorted(self._pending):
            pending = self._pending[request_id]
            if pending.outgoing is not None:
                unsent.append(pending.outgoing)
                self.emit(record("queued", text=pending.outgoing.text,
                                 why="not acknowledged before the connection was lost",
                                 **pending.outgoing.target.fields()))
            elif pending.label:
                self._error(f"no reply to {pending.label}: the connection was lost")
        self._pending.clear()
        self.outbox.extendleft(reversed(unsent))
        self._reconnecting = self._spawn(self._reconnect(reason), track=False)
        self._notify()

    async def _reconnect(self, why: str) -> None:
        config = self.config
        delay = config.reconnect_initial_seconds
        attempt = 0
        while not self._closing:
            attempt += 1
            wait = delay * random.uniform(0.5, 1.0)       # "equal jitter": never all at once
            self.emit(record("reconnecting", delay_seconds=round(wait, 3), attempt=attempt,
                             why=why))
            await asyncio.sleep(wait)
            delay = min(delay * 2, config.reconnect_max_seconds)
            try:
                conn = await Connection.open(config.host, config.port,
                                             local_port=config.local_port,
                                             timeout=config.connect_timeout_seconds)
            except OSError as exc:
                why = f"cannot connect: {describe(exc)}"
                continue
            try:
                reply = await conn.hello(self.name)
            except ConnectionLost as exc:
                conn.close()
                why = str(exc)
                continue
            if type(reply) is ev.Error:
                conn.close()
                why = (f"the name {self.name} is still taken (the old session has not timed "
                       f"out yet)" if reply.code == ErrorCode.NAME_TAKEN
                       else f"refused: {reply.message or error_name(reply.code)}")
                continue
            if self._closing:
                conn.close()
                return
            self._reconnecting = None
            self._attach(conn, reply)
            self._restore()
            return

    def _restore(self) -> None:
        """After reconnecting: rejoin rooms, reopen conversations, send what waited."""
        for room in list(self.rooms):
            self._request(ev.JoinRoom(room), lambda reply: None,
                          self._rejoin_failed(room), label=f"rejoining #{room}")
        for peer in list(self.chats):
            self._request(ev.OpenChat(peer), lambda reply: None, self._reopen_failed(peer),
                          label=f"reopening the conversation with {peer}")
        waiting = list(self.outbox)
        self.outbox.clear()
        for outgoing in waiting:
            self._send_message(outgoing)
        self._notify()

    def _rejoin_failed(self, room: str):
        def failed(error: ev.Error) -> None:
            self._forget_room(room)
            self._error_event(error, f"could not rejoin #{room}")
        return failed

    def _reopen_failed(self, peer: str):
        def failed(error: ev.Error) -> None:
            self._forget_chat(peer)
            self._error_event(error, f"could not reopen the conversation with {peer}")
        return failed

    async def wait_idle(self, timeout: float, *, replies_only: bool = False) -> bool:
        """Wait until nothing is unacknowledged (``replies_only``: nothing sent waits for a
        reply; messages queued while offline may remain); False if ``timeout`` passed first."""
        def waiting() -> bool:
            return self.waiting_for_replies if replies_only else self.busy
        try:
            async with asyncio.timeout(timeout):
                while waiting():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return not waiting()

    async def close(self, reason: str = "") -> None:
        """Say goodbye and stop; what is still unsent is reported as not delivered."""
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for pending in self._pending.values():
            if pending.outgoing is not None:
                self._not_delivered(pending.outgoing, "the client quit before the server "
                                    "acknowledged it")
        while self.outbox:
            self._not_delivered(self.outbox.popleft(), "not connected when the client quit")
        self._pending.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.send(ev.Quit(reason))
            conn.close()
        for task in list(self._tasks) + list(self._background):
            task.cancel()
        self.connected = False

    def _spawn(self, coro, *, track: bool = True) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        tasks = self._tasks if track else self._background
        tasks.add(task)
        task.add_done_callback(lambda t: (tasks.discard(t), self._notify()))
        return task

    # -- requests and replies ----------------------------------------------------------------

    def _request(self, event, on_reply: Callable, on_error: Callable | None = None, *,
                 outgoing: Outgoing | None = None, label: str = "") -> None:
        request_id = self._conn.send(event)
        self._pending[request_id] = Pending(event, on_reply, on_error or self._refused(label),
                                            outgoing, label)

    def _refused(self, label: str):
        def refused(error: ev.Error) -> None:
            self.failed_requests += 1
            self._error_event(error, label)
        return refused

    def _on_event(self, event) -> None:
        kind = type(event)
        if kind in REPLY_TYPES and event.request_id in self._pending:
            pending = self._pending.pop(event.request_id)
            if kind is ev.Error:
                pending.on_error(event)
            else:
                pending.on_reply(event)
            self._notify()
            return
        handler = getattr(self, f"_on_{kind.__name__}", None)
        if handler is not None:
            handler(event)
        else:
            log.debug("ignoring %r", event)

    def _on_Error(self, event: ev.Error) -> None:
        if not event.fatal:             # a fatal one is the reason given when the line drops
            self._error_event(event, "the server says")

    def _on_DirectMessage(self, event: ev.DirectMessage) -> None:
        self._remember_chat(event.sender)
        self.emit(record("message", ts=event.timestamp_ms, **{"from": event.sender},
                         to=self.name, text=event.text, msg_id=event.msg_id))

    def _on_RoomMessage(self, event: ev.RoomMessage) -> None:
        if _same(event.sender, self.name):
            return                      # our own, shown when its Ack arrives
        self.emit(record("message", ts=event.timestamp_ms, **{"from": event.sender},
                         room=event.room, text=event.text, msg_id=event.msg_id))

    def _on_ChatOpened(self, event: ev.ChatOpened) -> None:
        self._remember_chat(event.peer)
        self.emit(record("chat_opened", peer=event.peer))

    def _on_ChatClosed(self, event: ev.ChatClosed) -> None:
        self._forget_chat(event.peer)
        self.emit(record("chat_closed", peer=event.peer, reason=reason_name(event.reason)))

    def _on_UserJoined(self, event: ev.UserJoined) -> None:
        self.emit(record("joined", room=event.room, name=event.name))

    def _on_UserLeft(self, event: ev.UserLeft) -> None:
        if _same(event.name, self.name):
            self._forget_room(event.room)
        self.emit(record("left", room=event.room, name=event.name,
                         reason=reason_name(event.reason)))

    # -- input -------------------------------------------------------------------------------

    def handle_line(self, line: str) -> None:
        """Run one line the user typed; problems become one-line hints, never exceptions."""
        try:
            parsed = parse_line(line)
        except CommandError as exc:
            self.emit(record("hint", text=str(exc)))
            return
        if parsed is None:
            return
        if isinstance(parsed, Text):
            if self.target is None:
                self.emit(record("hint", text="nobody to send to: /chat USER or /join ROOM "
                                              "first, or /msg USER TEXT"))
                return
            self._send_message(Outgoing(self.target, parsed.text))
            return
        assert isinstance(parsed, Invocation)
        getattr(self, f"_cmd_{parsed.command.name}")(*parsed.args)

    def _offline_hint(self, what: str) -> bool:
        if self.connected:
            return False
        self.emit(record("hint", text=f"not connected (reconnecting); {what} needs the server"))
        return True

    def _cmd_chat(self, peer: str) -> None:
        self.open_chat(peer)

    def _cmd_msg(self, peer: str, text: str) -> None:
        if _same(peer, self.name):
            self.emit(record("hint", text="that is you; /msg someone else"))
            return
        self._send_message(Outgoing(Target("user", peer), text))

    def _cmd_close(self, peer: str | None = None) -> None:
        if peer is None:
            if self.target is None:
                self.emit(record("hint", text="no conversation to close; usage: /close [USER]"))
                return
            if self.target.kind == "room":
                self._cmd_leave(self.target.name)
                return
            peer = self.target.name
        was_open = any(_same(peer, p) for p in self.chats)
        self._forget_chat(peer)
        if self.target == Target("user", peer) or (
                self.target and self.target.kind == "user" and _same(self.target.name, peer)):
            self.target = None
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
                self.emit(record("hint", text="which room? usage: /leave ROOM"))
                return
            room = self.target.name
        if not any(_same(room, r) for r in self.rooms):
            self.emit(record("hint", text=f"you are not in #{room}"))
            return
        self._forget_room(room)
        if not self.connected:
            self.emit(record("left", room=room, name=self.name, reason="closed"))
            return
        self._request(ev.LeaveRoom(room), lambda reply: None, label=f"/leave #{room}")

    def _cmd_rooms(self) -> None:
        if self._offline_hint("/rooms"):
            return
        self._request(ev.ListRooms(), lambda reply: self.emit(record(
            "rooms", total=reply.total,
            rooms=[{"name": r.name, "members": r.members} for r in reply.rooms])),
            label="/rooms")

    def _cmd_who(self, room: str | None = None) -> None:
        if self._offline_hint("/who"):
            return
        if room is None and self.target is not None and self.target.kind == "room":
            room = self.target.name
        self._request(ev.ListUsers(room or ""), lambda reply: self.emit(record(
            "users", room=room or None, total=reply.total,
            users=[{"name": u.name, "rtt_ms": rtt_ms(u.rtt_us), "idle_seconds": u.idle_seconds,
                    "server": u.server} for u in reply.users])),
            label="/who")

    def _cmd_servers(self) -> None:
        if self._offline_hint("/servers"):
            return
        self._request(ev.ListServers(),
                      lambda reply: self._spawn(self._probe_servers(reply)),
                      label="/servers")

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
            self.emit(record("hint", text="that is you; /chat someone else"))
            return
        previous, self.target = self.target, Target("user", peer)
        self._remember_chat(peer)
        if not self.connected:
            self.emit(record("chat", to=peer))
            self._notify()
            return

        def refused(error: ev.Error) -> None:
            self.failed_requests += 1
            self._forget_chat(peer)
            if self.target == Target("user", peer) and not sticky:
                self.target = previous
            self._error_event(error, f"cannot talk to {peer}")

        self._request(ev.OpenChat(peer), lambda reply: self.emit(record("chat", to=peer)),
                      refused, label=f"/chat {peer}")
        self._notify()

    def join(self, room: str) -> None:
        previous, self.target = self.target, Target("room", room)
        if not any(_same(room, r) for r in self.rooms):
            self.rooms.append(room)
        if not self.connected:
            self.emit(record("info", text=f"will join #{room} once reconnected"))
            self._notify()
            return

        def refused(error: ev.Error) -> None:
            self.failed_requests += 1
            self._forget_room(room)
            if self.target == Target("room", room):
                self.target = previous
            self._error_event(error, f"cannot join #{room}")

        self._request(ev.JoinRoom(room), lambda reply: None, refused, label=f"/join #{room}")
        self._notify()

    def ping(self, on_rtt: Callable[[float], None]) -> None:
        started = time.monotonic()
        token = time.monotonic_ns() & 0xFFFFFFFFFFFFFFFF
        self._request(ev.Ping(token), lambda reply: on_rtt(time.monotonic() - started),
                      label="/ping")

    async def _probe_servers(self, reply: ev.ServerList) -> None:
        async def probe(server: ev.ServerInfo) -> float | None:
            if _same(server.name, self.server):
                done = asyncio.get_running_loop().create_future()
                self.ping(lambda seconds: done.done() or done.set_result(seconds))
                async with asyncio.timeout(SERVER_PROBE_TIMEOUT_SECONDS):
                    return await done
            host = server.host if server.host not in ("", "0.0.0.0", "::") else self.config.host
            started = time.monotonic()
            async with asyncio.timeout(SERVER_PROBE_TIMEOUT_SECONDS):
                _, writer = await asyncio.open_connection(host, server.port)
            seconds = time.monotonic() - started
            writer.close()
            return seconds

        results = await asyncio.gather(*(probe(s) for s in reply.servers),
                                       return_exceptions=True)
        self.emit(record("servers", total=reply.total, servers=[
            {"name": s.name, "host": s.host, "port": s.port, "users": s.users,
             "rtt_ms": round(r * 1000, 3) if isinstance(r, float) else None,
             "current": _same(s.name, self.server)}
            for s, r in zip(reply.servers, results)]))

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
            self.emit(record("sent", ts=ack.timestamp_ms, **{"from": self.name},
                             text=outgoing.text, msg_id=ack.msg_id, **target.fields()))

        def refused(error: ev.Error) -> None:
            self._not_delivered(outgoing, error.message or error_name(error.code),
                                code=_code_name(error.code))

        self._request(event, acked, refused, outgoing=outgoing)

    def _not_delivered(self, outgoing: Outgoing, reason: str, code: str = "") -> None:
        self.undelivered += 1
        self.emit(record("not_delivered", text=outgoing.text, reason=reason, code=code,
                         **outgoing.target.fields()))

    # -- bookkeeping -------------------------------------------------------------------------

    def _remember_chat(self, peer: str) -> None:
        if not any(_same(peer, p) for p in self.chats):
            self.chats.append(peer)

    def _forget_chat(self, peer: str) -> None:
        self.chats = [p for p in self.chats if not _same(p, peer)]

    def _forget_room(self, room: str) -> None:
        self.rooms = [r for r in self.rooms if not _same(r, room)]
        if self.target is not None and self.target.kind == "room" and _same(
                self.target.name, room):
            self.target = None
        self._notify()

    def _error(self, message: str, code: str = "") -> None:
        self.emit(record("error", code=code, message=message))

    def _error_event(self, error: ev.Error, context: str = "") -> None:
        detail = error.message or error_name(error.code)
        self.emit(record("error", code=_code_name(error.code), fatal=error.fatal,
                         message=f"{context}: {detail}" if context else detail))


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)
