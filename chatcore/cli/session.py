"""The chat session: the connection, the open conversations, what is not yet acknowledged.

Both front ends drive one ``Session``: they hand it input lines (``handle_line``, in
``actions``) and print the records it emits. The session owns the connection and keeps the
chat going across connection losses: it reconnects with exponential backoff and jitter,
reclaims its name, rejoins its rooms, reopens its conversations, and sends what was typed
while it was away. Which conversation is current and what is unread is ``conversations``.

Messages are sent at least once: a message the server had not acknowledged when the
connection broke is sent again after reconnecting.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from .. import events as ev
from ..serverchoice import Server
from .actions import CommandActions, Outgoing
from .config import ClientConfig
from .connection import Connection, ConnectionLost
from .conversations import Conversations, Target, mentions
from .formatting import code_name, error_name, reason_name, record
from .moderation import ModerationActions
from .roaming import Roaming
from .vocabulary import VocabularyActions

log = logging.getLogger(__name__)

# The server pings every ping_interval; this many silent intervals mean it is gone even if
# TCP has not noticed (a cable pulled, a host frozen).
SILENT_PING_INTERVALS = 3
# Names seen (senders, members, /who) offered by Tab completion; the oldest are forgotten.
MAX_KNOWN_NAMES = 5000

REPLY_TYPES = (ev.Ok, ev.Ack, ev.Error, ev.UserList, ev.RoomList, ev.ServerList, ev.Pong,
               ev.UserPage, ev.RoomPage, ev.UserDetails, ev.RoomModes)


@dataclass(slots=True)
class Pending:
    request: object
    on_reply: Callable
    on_error: Callable
    outgoing: Outgoing | None = None
    label: str = ""
    background: bool = False        # the client's own (server list, RTT): nobody waits for it


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Session(Roaming, CommandActions, VocabularyActions, ModerationActions):
    def __init__(self, config: ClientConfig, emit: Callable[[dict], None], *,
                 ask_name: Callable[[], Awaitable[str]] | None = None,
                 on_change: Callable[[], None] = lambda: None, page_all: bool = False):
        self.config = config
        self.emit = emit
        self.ask_name = ask_name
        self.on_change = on_change          # the prompt shows state; tell it to redraw
        self.name = config.name or ""
        self.server = ""
        self.conversations = Conversations()
        self.known_users: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.known_rooms: dict[str, str] = {}           # from /rooms, for completion
        self.last_direct: str | None = None             # who /reply answers
        self.max_text_bytes = 0                         # the server's, from Welcome
        self.split_long = False                         # /split on
        self.page_all = page_all                        # lists: every page (scripts)
        self._more = None                               # the next page /more asks for
        self.away_message = ""                          # /away: set again on reconnecting
        self.topics: dict[str, tuple[str, str, int]] = {}   # room: (topic, by, at_ms)
        self.quit_reason = ""
        self.resume_token = ""                          # the server's, from the last Welcome
        self._replayed: dict[str, set[str]] | None = None   # while a resume is replayed
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
        self._init_roaming()

    # -- state shown to the user -------------------------------------------------------------

    @property
    def target(self) -> Target | None:
        """Where plain lines go: the active conversation."""
        return self.conversations.active

    @property
    def rooms(self) -> list[str]:
        return self.conversations.rooms

    @property
    def chats(self) -> list[str]:
        """Peers with an open conversation."""
        return self.conversations.chats

    def prompt_for(self, target: Target | None) -> str:
        where = target.label if target else "(none)"
        return f"{'' if self.connected else '(offline) '}[{where}] "

    @property
    def prompt_text(self) -> str:
        return self.prompt_for(self.target)

    def completion_users(self) -> list[str]:
        """Known names, most recently seen first, yourself last."""
        names = [n for n in reversed(self.known_users.values()) if not _same(n, self.name)]
        return names + [self.name]

    def completion_rooms(self) -> list[str]:
        return self.rooms + [r for r in self.known_rooms.values()
                             if not any(_same(r, mine) for mine in self.rooms)]

    @property
    def waiting_for_replies(self) -> bool:
        return self._awaited() or bool(self._tasks)

    @property
    def busy(self) -> bool:
        """Something typed is not yet acknowledged, or a reply is outstanding."""
        return self._awaited() or bool(self.outbox or self._tasks)

    def _awaited(self) -> bool:
        return any(not pending.background for pending in self._pending.values())

    def _notify(self) -> None:
        self._changed.set()
        self.on_change()

    # -- connecting --------------------------------------------------------------------------

    def _attach(self, conn: Connection, welcome: ev.Welcome, server: Server, *,
                moved_from: Server | None = None, **why) -> None:
        """On ``server`` now; ``moved_from``: the server before it (``why`` says why: "lost",
        "closer"), told in one line instead of "connected"."""
        self._conn = conn
        if conn.resume_token is not None:
            self.resume_token = conn.resume_token.token
        self.name = welcome.name
        self.server = welcome.server
        self.max_text_bytes = welcome.max_text_bytes
        self.connected = True
        fields = dict(name=welcome.name, server=welcome.server, host=server.host,
                      port=server.port)
        if moved_from is None:
            self.emit(record("connected", **fields))
        else:
            self.emit(record("moved", **fields, rtt_ms=_ms(server.rtt),
                             old_server=moved_from.label, old_rtt_ms=_ms(why.get("old_rtt")),
                             why=why.get("why", ""), seconds=why.get("seconds"),
                             rooms=list(self.rooms), chats=list(self.chats)))
        silent = SILENT_PING_INTERVALS * welcome.ping_interval_ms / 1000 or None
        self._spawn(self._read(conn, silent), track=False)
        self._on_attached(server, welcome)
        self._notify()

    async def _read(self, conn: Connection, silent_seconds: float | None) -> None:
        try:
            while True:
                event = await conn.next_event(silent_seconds)
                if conn is not self._conn and type(event) in REPLY_TYPES:
                    continue            # a retired connection's: its request ids are not ours
                try:
                    self._on_event(event)
                except Exception:
                    # One event the client cannot show must not stop it reading (and
                    # answering the server's pings).
                    log.exception("cannot handle %r", event)
        except ConnectionLost as exc:
            if conn is self._conn:
                if self._moving:                # the move decides what happens next
                    self._lost_while_moving = str(exc)
                else:
                    self._lost(str(exc))

    def _lost(self, reason: str) -> None:
        """The connection broke: keep what is unacknowledged, start reconnecting."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self.connected = False
        self._replayed = None
        if self._closing:
            self._notify()
            return
        self.emit(record("disconnected", reason=reason))
        self._take_back_unacknowledged()
        self._reconnecting = self._spawn(self._reconnect(reason), track=False)
        self._notify()

    def _take_back_unacknowledged(self, quiet: bool = False) -> None:
        """The connection is gone: messages it had not acknowledged go back to the front of
        the outbox (sent again on the next one); other requests are reported lost."""
        unsent = []
        for request_id in sorted(self._pending):
            pending = self._pending[request_id]
            if pending.outgoing is not None:
                unsent.append(pending.outgoing)
                if not quiet:
                    self.emit(record("queued", text=pending.outgoing.text,
                                     why="not acknowledged before the connection was lost",
                                     **pending.outgoing.target.fields()))
            elif pending.label:
                self._error(f"no reply to {pending.label}: the connection was lost")
        self._pending.clear()
        self.outbox.extendleft(reversed(unsent))

    def _resume(self) -> None:
        """The server gave our session back: it replays the rooms and chats it held (as
        UserJoined and ChatOpened, taken quietly), and a Ping's Pong marks the end of that."""
        self._replayed = {"rooms": set(), "chats": set()}
        self._request(ev.Ping(1), lambda pong: self._resumed(), label="resuming")

    def _resumed(self) -> None:
        """Reconcile what the server held with what changed here while offline, then send
        what waited."""
        replayed, self._replayed = self._replayed, None
        for room in self.rooms:
            if room.casefold() not in replayed["rooms"]:        # joined while offline
                self._request(ev.JoinRoom(room), lambda reply: None,
                              self._rejoin_failed(room), label=f"joining #{room}")
        for peer in self.chats:
            if peer.casefold() not in replayed["chats"]:
                self._request(ev.OpenChat(peer), lambda reply: None,
                              self._reopen_failed(peer),
                              label=f"opening the conversation with {peer}")
        self.emit(record("resumed", rooms=list(self.rooms), chats=list(self.chats)))
        self._send_outbox()

    def _replay(self, kind: str, name: str) -> bool:
        """During a resume: note a replayed room (leaving it if it was left here while
        offline) or chat (kept: it may as well be someone opening one just now); False when
        no resume is being replayed."""
        if self._replayed is None:
            return False
        self._replayed[kind].add(name.casefold())
        if kind == "chats":
            self._remember_chat(name)
        elif not any(_same(name, room) for room in self.rooms):
            self._request(ev.LeaveRoom(name), lambda reply: None, lambda error: None)
        return True

    def _restore(self) -> None:
        """After reconnecting: rejoin rooms, reopen conversations, send what waited."""
        if self.away_message:
            self._request(ev.SetAway(self.away_message), lambda reply: None,
                          label="marking you away again")
        for room in list(self.rooms):
            self._request(ev.JoinRoom(room), lambda reply: None,
                          self._rejoin_failed(room), label=f"rejoining #{room}")
        for peer in list(self.chats):
            self._request(ev.OpenChat(peer), lambda reply: None, self._reopen_failed(peer),
                          label=f"reopening the conversation with {peer}")
        self._send_outbox()

    def _send_outbox(self) -> None:
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
                 outgoing: Outgoing | None = None, label: str = "",
                 background: bool = False) -> None:
        request_id = self._conn.send(event)
        self._pending[request_id] = Pending(event, on_reply, on_error or self._refused(label),
                                            outgoing, label, background)

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
        self._show_direct(event, "message")

    def _on_RoomMessage(self, event: ev.RoomMessage) -> None:
        self._show_room(event, "message")

    def _show_direct(self, event, kind: str) -> None:
        """A direct message or action (same fields), shown as a record of ``kind``."""
        peer = Target("user", event.sender)
        self._remember_chat(event.sender)
        self.last_direct = event.sender
        if self.target is None:         # nothing was current: no typed line can go astray
            self.conversations.switch(peer)
        self._show(record(kind, ts=event.timestamp_ms, **{"from": event.sender},
                          to=self.name, text=event.text, msg_id=event.msg_id), peer,
                   unread=True)

    def _show_room(self, event, kind: str) -> None:
        """A room message or action (same fields), shown as a record of ``kind``."""
        if _same(event.sender, self.name):
            return                      # our own, shown when its Ack arrives
        self._seen_user(event.sender)
        self._show(record(kind, ts=event.timestamp_ms, **{"from": event.sender},
                          room=event.room, text=event.text, msg_id=event.msg_id),
                   Target("room", event.room), unread=True)

    def _on_ChatOpened(self, event: ev.ChatOpened) -> None:
        if self._replay("chats", event.peer):
            return
        self._remember_chat(event.peer)
        self._show(record("chat_opened", peer=event.peer), Target("user", event.peer))

    def _on_ChatClosed(self, event: ev.ChatClosed) -> None:
        self._show(record("chat_closed", peer=event.peer, reason=reason_name(event.reason),
                          message=event.message), Target("user", event.peer))
        self._forget_chat(event.peer)

    def _on_UserJoined(self, event: ev.UserJoined) -> None:
        if _same(event.name, self.name) and self._replay("rooms", event.room):
            return
        self._seen_user(event.name)
        self._show(record("joined", room=event.room, name=event.name),
                   Target("room", event.room))

    def _on_UserLeft(self, event: ev.UserLeft) -> None:
        if event.reason != ev.Reason.KICKED:    # a kick was shown by its Kicked
            self._show(record("left", room=event.room, name=event.name,
                              reason=reason_name(event.reason), message=event.message),
                       Target("room", event.room))
        if _same(event.name, self.name):
            self._forget_room(event.room)

    # -- bookkeeping -------------------------------------------------------------------------

    def _show(self, rec: dict, target: Target | None = None, *, unread: bool = False) -> None:
        """Emit ``rec``, kept in ``target``'s log; ``unread``: it counts as a new line there."""
        if target is not None:
            mention = unread and mentions(rec.get("text", ""), self.name)
            self.conversations.note(target, rec, unread=unread, mention=mention)
        self.emit(rec)
        if unread:
            self._notify()              # the status line shows the new activity

    def _seen_user(self, name: str) -> None:
        self.known_users.pop(name.casefold(), None)
        self.known_users[name.casefold()] = name
        if len(self.known_users) > MAX_KNOWN_NAMES:
            self.known_users.popitem(last=False)

    def _remember_chat(self, peer: str) -> None:
        self._seen_user(peer)
        self.conversations.open(Target("user", peer)).live = True

    def _forget_chat(self, peer: str) -> None:
        """The conversation ended on the server; its window stays until /close."""
        conversation = self.conversations.get(Target("user", peer))
        if conversation is not None:
            conversation.live = False

    def _forget_room(self, room: str) -> None:
        self.conversations.close(Target("room", room))
        self._notify()

    def _error(self, message: str, code: str = "") -> None:
        self.emit(record("error", code=code, message=message))

    def _error_event(self, error: ev.Error, context: str = "") -> None:
        detail = error.message or error_name(error.code)
        self.emit(record("error", code=code_name(error.code), fatal=error.fatal,
                         message=f"{context}: {detail}" if context else detail))

