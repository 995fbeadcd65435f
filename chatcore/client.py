"""A small blocking client of the native protocol, for tests, scripts and the CLI.

It answers the server's pings by itself, keeps events that arrive while it waits for a reply,
turns ``Error`` replies into ``ChatError``, keeps the resume token the server sends with
each Welcome (``reconnect()`` presents it to get the same session back after a drop), and
reads long lists a page at a time (``iter_rooms``, ``iter_users``). ``tls=True`` speaks
TLS, verifying the server's certificate against the system's CAs (or ``tls_ca``); a failed
check raises ``ssl.SSLCertVerificationError`` from ``connect``.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import socket
import ssl
import time

from . import events as ev
from .errors import ChatError, ErrorCode, ProtocolError
from .modes import parse_mode_string
from .protocol import NEED_DATA, PROTOCOL_VERSION, NativeProtocol, Role
from .tls import client_context

READ_CHUNK_BYTES = 65536
DEFAULT_TIMEOUT_SECONDS = 10.0


class ConnectionClosed(ConnectionError):
    """The server closed the connection; ``error`` is the fatal Error it sent first, if any."""

    def __init__(self, message: str, error: ev.Error | None = None):
        super().__init__(message)
        self.error = error


class ChatClient:
    """One connection to a chatcore server. Use ``connect()``, then requests and events."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7878, *, local_port: int = 0,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, client: str = "chatcore-client",
                 auto_pong: bool = True, tls: bool | ssl.SSLContext = False,
                 tls_ca: str | None = None, tls_insecure: bool = False):
        """``tls``: True (or an ``ssl.SSLContext`` of your own) to speak TLS; ``tls_ca``
        trusts the CAs in that PEM file instead of the system's; ``tls_insecure`` skips the
        certificate check (self-signed test servers only)."""
        if isinstance(tls, ssl.SSLContext):
            self.tls_context: ssl.SSLContext | None = tls
        elif tls or tls_ca or tls_insecure:
            self.tls_context = client_context(tls_ca, tls_insecure)
        else:
            self.tls_context = None
        self.host = host
        self.port = port
        self.local_port = local_port
        self.timeout = timeout
        self.client = client
        self.auto_pong = auto_pong
        self.name = ""
        self.welcome: ev.Welcome | None = None
        self.sock: socket.socket | None = None
        self._protocol = NativeProtocol(Role.CLIENT)
        self._events: collections.deque = collections.deque()
        self._request_ids = itertools.count(1)
        self._closed_by_peer: ConnectionClosed | None = None
        self.resume_token = ""          # from the last ResumeToken; "" if none came
        self.resume_grace_seconds = 0
        self.resumed = False            # the last handshake resumed a session

    # -- connection ------------------------------------------------------------------------

    def connect(self, name: str = "") -> ev.Welcome:
        """Open the TCP connection and say Hello; raises ChatError if the name is refused."""
        self._open_socket()
        return self.hello(name)

    def _open_socket(self) -> None:
        source = ("", self.local_port) if self.local_port else None
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout,
                                        source_address=source)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:
            try:
                sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock

    def hello(self, name: str = "") -> ev.Welcome:
        """(Re)try the handshake on an open connection, e.g. after NAME_TAKEN."""
        return self._greet(ev.Hello(PROTOCOL_VERSION, name, self.client))

    def resume(self, name: str, token: str) -> ev.Welcome:
        """Handshake on an open connection by resuming session ``name`` with its token;
        raises ChatError(RESUME_REFUSED) if the server holds no such session."""
        welcome = self._greet(ev.Resume(PROTOCOL_VERSION, name, token, self.client))
        self.resumed = True
        return welcome

    def _greet(self, greeting) -> ev.Welcome:
        self.resumed = False
        reply = self.call(greeting)
        assert isinstance(reply, ev.Welcome), reply
        self._protocol.max_frame_bytes = max(reply.max_frame_bytes,
                                             self._protocol.max_frame_bytes)
        self.welcome = reply
        self.name = reply.name
        return reply

    def reconnect(self) -> ev.Welcome:
        """A new connection for the same user after the old one dropped.

        With a resume token it resumes the session (same name, rooms and open chats; the
        server then sends ``UserJoined`` for each room and ``ChatOpened`` for each chat);
        if the server refuses the token (the grace period passed, say), or there is none,
        it says Hello with the same name, which may raise ChatError(NAME_TAKEN). Events
        received on the old connection and not yet read stay queued. Check ``resumed``.
        """
        self.close()
        self._protocol = NativeProtocol(Role.CLIENT)
        self._closed_by_peer = None
        self._open_socket()
        if self.resume_token and self.name:
            try:
                return self.resume(self.name, self.resume_token)
            except ChatError as exc:
                if exc.code != ErrorCode.RESUME_REFUSED:
                    raise
        return self.hello(self.name)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def quit(self, reason: str = "") -> None:
        """Say goodbye and close. Before a Welcome (say, the name was refused) there is no
        session to quit: the server would take a Quit for a broken handshake, so only close."""
        if self.sock is None:
            return
        if self.welcome is not None:
            try:
                self.send(ev.Quit(reason))
            except OSError:
                pass
        self.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def send(self, event) -> int:
        """Send ``event`` with a fresh request id (unless it has one); returns the id."""
        if getattr(event, "request_id", 0) == 0 and type(event) not in (ev.Pong,):
            event = _with_request_id(event, next(self._request_ids))
        self.sock.sendall(self._protocol.send(event))
        return event.request_id

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (for tests of bad input)."""
        self.sock.sendall(data)

    def call(self, event, timeout: float | None = None):
        """Send a request and wait for its reply; raises ChatError if the reply is an Error."""
        request_id = self.send(event)
        reply = self.wait_for(lambda e: getattr(e, "request_id", 0) == request_id
                              and type(e) not in _NOTIFICATIONS,
                              timeout)
        if isinstance(reply, ev.Error):
            raise ChatError(ErrorCode(reply.code), reply.message)
        return reply

    def join(self, room: str, key: str = "") -> ev.RoomJoined:
        """Join ``room`` (with the ``key`` of a +k room); returns its topic and members (the
        RoomJoined after the Ok; the RoomModes told just before it stays queued)."""
        self.call(ev.JoinRoomKey(room, key) if key else ev.JoinRoom(room))
        key = room.casefold()
        return self.wait_for(lambda e: type(e) is ev.RoomJoined and e.room.casefold() == key)

    def leave(self, room: str) -> ev.Ok:
        return self.call(ev.LeaveRoom(room))

    def send_room(self, room: str, text: str) -> ev.Ack:
        return self.call(ev.SendRoom(room, text))

    def send_direct(self, peer: str, text: str) -> ev.Ack:
        return self.call(ev.SendDirect(peer, text))

    def send_room_action(self, room: str, text: str) -> ev.Ack:
        return self.call(ev.SendRoomAction(room, text))

    def send_direct_action(self, peer: str, text: str) -> ev.Ack:
        return self.call(ev.SendDirectAction(peer, text))

    def set_topic(self, room: str, topic: str) -> ev.TopicChanged:
        """Set (or, empty, clear) a room's topic; returns the TopicChanged every member got."""
        self.call(ev.SetTopic(room, topic))
        key = room.casefold()
        return self.wait_for(lambda e: type(e) is ev.TopicChanged and e.room.casefold() == key
                             and e.name == self.name and e.topic == topic)

    def set_name(self, name: str) -> ev.NameChanged:
        """Change this user's name; returns the NameChanged the others were told."""
        old_name = self.name
        self.call(ev.SetName(name))
        if name == old_name:
            return ev.NameChanged(old_name, name)
        changed = self.wait_for(lambda e: type(e) is ev.NameChanged and e.old == old_name)
        self.name = changed.new
        return changed

    def set_away(self, message: str) -> ev.Ok:
        """Away, with ``message`` answered to those who message this user."""
        return self.call(ev.SetAway(message))

    def back(self) -> ev.Ok:
        return self.call(ev.SetAway(""))

    def whois(self, name: str) -> ev.UserDetails:
        return self.call(ev.Whois(name))

    def set_room_mode(self, room: str, changes) -> ev.Ok:
        """Change a room's modes (as its operator): ``changes`` is an IRC-style mode string
        (``"+mi"``, ``"+o bob"``, ``"+kl sesame 10"``) or ``ModeChange`` entries."""
        if isinstance(changes, str):
            changes = parse_mode_string(changes.split())
        return self.call(ev.SetRoomMode(room, tuple(changes)))

    def kick(self, room: str, name: str, reason: str = "") -> ev.Ok:
        return self.call(ev.Kick(room, name, reason))

    def invite(self, room: str, name: str) -> ev.Ok:
        return self.call(ev.Invite(room, name))

    def room_modes(self, room: str) -> ev.RoomModes:
        """A room's modes, operators, voiced members and bans."""
        return self.call(ev.GetRoomModes(room))

    def open_chat(self, peer: str) -> ev.Ok:
        return self.call(ev.OpenChat(peer))

    def close_chat(self, peer: str) -> ev.Ok:
        return self.call(ev.CloseChat(peer))

    def list_users(self, room: str = "") -> ev.UserList:
        return self.call(ev.ListUsers(room))

    def list_rooms(self) -> ev.RoomList:
        return self.call(ev.ListRooms())

    def list_users_page(self, room: str = "", after: str = "", pattern: str = "",
                        limit: int = 0) -> ev.UserPage:
        """One page of users (of ``room``): names after ``after`` matching the glob
        ``pattern``; pass the reply's ``next_after`` as ``after`` for the next page."""
        return self.call(ev.ListUsersPage(room, after, pattern, limit))

    def list_rooms_page(self, after: str = "", pattern: str = "",
                        limit: int = 0) -> ev.RoomPage:
        """One page of rooms; see ``list_users_page``."""
        return self.call(ev.ListRoomsPage(after, pattern, limit))

    def iter_users(self, room: str = "", pattern: str = "", limit: int = 0):
        """Every user (of ``room``) matching ``pattern``, in name order, a page a request."""
        after = ""
        while True:
            page = self.list_users_page(room, after, pattern, limit)
            yield from page.users
            if not page.next_after:
                return
            after = page.next_after

    def iter_rooms(self, pattern: str = "", limit: int = 0):
        """Every room matching ``pattern``, in name order, a page a request."""
        after = ""
        while True:
            page = self.list_rooms_page(after, pattern, limit)
            yield from page.rooms
            if not page.next_after:
                return
            after = page.next_after

    def list_servers(self) -> ev.ServerList:
        return self.call(ev.ListServers())

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time to the server now, in seconds."""
        started = time.monotonic()
        token = time.monotonic_ns() & 0xFFFFFFFFFFFFFFFF
        request_id = self.send(ev.Ping(token))
        self.wait_for(lambda e: type(e) is ev.Pong and e.request_id == request_id, timeout)
        return time.monotonic() - started

    # -- receiving -------------------------------------------------------------------------

    def next_event(self, timeout: float | None = None):
        """The next event, or None when ``timeout`` passes first; raises ConnectionClosed."""
        if self._events:
            return self._events.popleft()
        return self._read_event(_deadline(timeout, self.timeout))

    def wait_for(self, match, timeout: float | None = None):
        """The first event that is of type ``match`` or satisfies it; others stay queued.

        Raises TimeoutError when ``timeout`` (default: the client's) passes first.
        """
        test = (lambda e: isinstance(e, match)) if isinstance(match, type) else match
        for index, event in enumerate(self._events):
            if test(event):
                del self._events[index]
                return event
        deadline = _deadline(timeout, self.timeout)
        while True:
            event = self._read_event(deadline)
            if event is None:
                raise TimeoutError(f"no matching event within {timeout or self.timeout}s")
            if test(event):
                return event
            self._events.append(event)

    def drain(self) -> list:
        """Every event queued or already readable, without waiting."""
        events = list(self._events)
        self._events.clear()
        while (event := self._read_event(time.monotonic())) is not None:
            events.append(event)
        return events

    def _read_event(self, deadline: float):
        while True:
            try:
                event = self._protocol.next_event()
            except ProtocolError as exc:
                if exc.fatal:
                    raise ConnectionClosed(f"stream broken: {exc.message}") from exc
                continue        # a frame we do not understand: skip it, keep the stream
            if event is NEED_DATA:
                if not self._fill(deadline):
                    return None
                continue
            if type(event) is ev.ResumeToken:
                self.resume_token = event.token
                self.resume_grace_seconds = event.grace_seconds
                continue
            if type(event) is ev.Ping and self.auto_pong:
                self.sock.sendall(self._protocol.send(ev.Pong(event.token, event.request_id)))
                continue
            if type(event) is ev.Error and event.fatal:
                self._closed_by_peer = ConnectionClosed(event.message, event)
            return event

    def _fill(self, deadline: float) -> bool:
        if self._closed_by_peer is not None and self.sock is None:
            raise self._closed_by_peer
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.sock.settimeout(0)
        else:
            self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(READ_CHUNK_BYTES)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return False
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)
        if not data:
            closed = self._closed_by_peer or ConnectionClosed("server closed the connection")
            raise closed
        self._protocol.receive_data(data)
        return True


# Events that are never replies, whatever their request id.
_NOTIFICATIONS = (ev.Ping, ev.Pong, ev.UserJoined, ev.UserLeft, ev.RoomJoined, ev.NameChanged,
                  ev.TopicChanged, ev.AwayReply, ev.AwayChanged)


def _deadline(timeout: float | None, default: float) -> float:
    return time.monotonic() + (default if timeout is None else timeout)


def _with_request_id(event, request_id: int):
    return dataclasses.replace(event, request_id=request_id)
