"""The library client on several servers: ``RoamingClient`` picks the lowest-RTT one, moves
when another is clearly and consistently better, and fails over when its server is lost.

It is the blocking ``ChatClient`` (the one in ``client``) plus the rules of
``serverchoice`` and the probes of ``probe``, the same as the CLI's (docs/client.md,
"Several servers"). Being blocking, it measures only when asked: call ``maintain()`` every
now and then (it probes what is due, at most once per ``probe_interval_seconds``, and moves
if the rules say so) and ``failover()`` when a call raises ``ConnectionClosed`` or
``OSError``. Requests are the ``ChatClient``'s (``roaming.send_room(...)``, ``.join``,
``.next_event`` ...); rooms joined and chats opened through it are kept across a move or a
failover: resumed with the resume token where the server allows it, else joined and opened
again after a Hello with the same name.
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Callable, Iterable

from . import events as ev
from .client import ChatClient
from .errors import ChatError, ErrorCode
from .probe import PROBE_PINGS, probe
from .serverchoice import ChoicePolicy, Server, ServerChoice, parse_server

DEFAULT_PORT = 7878
# While a server says NAME_TAKEN after the old one was lost (a dead node's names are free
# when its lease lapses: docs/cluster.md), ask again this often, for this long.
NAME_LEASE_SECONDS = 10.0
NAME_RETRY_SECONDS = 0.2
MOVE_QUIT_MESSAGE = "moving to a closer server"


class RoamingClient:
    def __init__(self, servers: Iterable, *, policy: ChoicePolicy = ChoicePolicy(),
                 name_lease_seconds: float = NAME_LEASE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, **client_options):
        """``servers``: ``"HOST:PORT"`` strings or (host, port) pairs; ``client_options``
        are ``ChatClient``'s (``timeout``, ``tls`` ...)."""
        self.choice = ServerChoice(policy, clock=clock)
        for entry in servers:
            host, port = (parse_server(entry, DEFAULT_PORT) if isinstance(entry, str)
                          else entry)
            self.choice.add(host, port)
        if not self.choice.servers:
            raise ValueError("no servers given")
        self.name_lease_seconds = name_lease_seconds
        self.client_options = client_options
        self.client: ChatClient | None = None
        self.rooms: list[str] = []          # joined through this client: kept on a move
        self.chats: list[str] = []          # opened through it
        self._clock = clock
        self._measured_at: float | None = None

    def __getattr__(self, attr):
        # Everything else is the current ChatClient's (requests, events, name ...).
        client = self.__dict__.get("client")
        if client is None:
            raise AttributeError(attr)
        return getattr(client, attr)

    @property
    def current(self) -> Server | None:
        return self.choice.current

    # -- connecting ----------------------------------------------------------------------

    def measure(self) -> None:
        """Measure every server now: pings on the connection for the current one, a probe
        (no name taken) for each other."""
        for server in list(self.choice.servers):
            self._measure(server)
        self._measured_at = self._clock()

    def _measure(self, server: Server) -> None:
        try:
            if server is self.choice.current and self.client is not None:
                rtt = min(self.client.ping() for _ in range(PROBE_PINGS))
            else:
                rtt = probe(server.host, server.port,
                            tls=self._client_for(server).tls_context).rtt_seconds
        except (OSError, TimeoutError):
            if server is not self.choice.current:
                self.choice.failed(server)
            return
        self.choice.observe(server, rtt)

    def connect(self, name: str = "") -> ev.Welcome:
        """Measure every server, connect to the lowest-RTT one that answers (say Hello as
        ``name``) and learn the cluster's other nodes from it. Raises the last OSError when
        none can be reached, ChatError when the name is refused."""
        if len(self.choice.servers) > 1:
            self.measure()
        error: OSError | None = None
        for server in self.choice.ranked():
            client = self._client_for(server)
            try:
                welcome = client.connect(name)
            except OSError as exc:
                client.close()
                self.choice.failed(server)
                error = exc
                continue
            self._now_on(server, client, welcome)
            return welcome
        raise error

    def _client_for(self, server: Server) -> ChatClient:
        return ChatClient(server.host, server.port, **self.client_options)

    def _now_on(self, server: Server, client: ChatClient, welcome: ev.Welcome) -> None:
        old = self.client
        if old is not None and old is not client:
            client._events.extend(old._events)         # unread events stay readable
            old._events.clear()
        self.client = client
        self.choice.set_current(server, welcome.server)
        self.learn_servers()

    def learn_servers(self) -> None:
        """Ask the current server for the cluster's list and learn its nodes."""
        try:
            self.choice.learn(self.client.list_servers().servers)
        except (ChatError, TimeoutError):
            pass

    # -- rooms and chats, kept across servers ----------------------------------------------

    def join(self, room: str) -> ev.RoomJoined:
        joined = self.client.join(room)
        if not any(r.casefold() == room.casefold() for r in self.rooms):
            self.rooms.append(room)
        return joined

    def leave(self, room: str) -> ev.Ok:
        self.rooms = [r for r in self.rooms if r.casefold() != room.casefold()]
        return self.client.leave(room)

    def open_chat(self, peer: str) -> ev.Ok:
        ok = self.client.open_chat(peer)
        if not any(p.casefold() == peer.casefold() for p in self.chats):
            self.chats.append(peer)
        return ok

    def close_chat(self, peer: str) -> ev.Ok:
        self.chats = [p for p in self.chats if p.casefold() != peer.casefold()]
        return self.client.close_chat(peer)

    # -- moving ------------------------------------------------------------------------------

    def maintain(self) -> Server | None:
        """Measure when a probe interval has passed and move if another server has been
        clearly better for long enough; the server moved to, or None."""
        interval = self.choice.policy.probe_interval_seconds
        if not interval:
            return None
        now = self._clock()
        if self._measured_at is not None and now - self._measured_at < interval:
            return None
        self.learn_servers()
        self.measure()
        target = self.choice.move_target()
        if target is None:
            return None
        self.move_to(target)
        return target

    def move_to(self, server: Server) -> ev.Welcome:
        """Take the session to ``server``: resumed there if the server allows it, else a
        Quit here and a Hello there with the same name, then rooms and chats again."""
        old = self.client
        client = self._client_for(server)
        client._open_socket()
        client.resume_token = old.resume_token
        try:
            welcome = client.resume(old.name, old.resume_token) if old.resume_token else None
        except ChatError as exc:
            if exc.code != ErrorCode.RESUME_REFUSED:
                client.close()
                raise
            welcome = None
        if welcome is None:
            old.quit(MOVE_QUIT_MESSAGE)
            welcome = self._hello(client, old.name, self.name_lease_seconds)
        else:
            # A reset, not an end of stream: a clean close reaching the old node before the
            # take-over would be a goodbye there (docs/protocol.md, resuming a session).
            _abort(old)
        self._now_on(server, client, welcome)
        if not client.resumed:
            self._restore()
        return welcome

    def failover(self) -> ev.Welcome:
        """The current server is lost: go to the next-best (the lost one is tried again
        last), with the same name (resumed with the token where the server can), retrying
        while the name is still held, up to ``name_lease_seconds``; then rejoin the rooms and
        reopen the chats. Raises the last error when no server takes us."""
        old = self.client
        name, token = old.name, old.resume_token
        old.close()
        lost = self.choice.current
        if lost is not None:
            self.choice.failed(lost)
        deadline = self._clock() + self.name_lease_seconds
        error: Exception | None = None
        while True:
            for server in self.choice.failover_order():
                client = self._client_for(server)
                client.name, client.resume_token = name, token
                try:
                    client._open_socket()
                    welcome = self._greet(client, name, token)
                except (OSError, ChatError, TimeoutError) as exc:
                    client.close()
                    if isinstance(exc, OSError):
                        self.choice.failed(server)
                    error = exc
                    continue
                self._now_on(server, client, welcome)
                if not client.resumed:
                    self._restore()
                return welcome
            if self._clock() >= deadline:
                raise error
            time.sleep(NAME_RETRY_SECONDS)

    def _greet(self, client: ChatClient, name: str, token: str) -> ev.Welcome:
        if token:
            try:
                return client.resume(name, token)
            except ChatError as exc:
                if exc.code != ErrorCode.RESUME_REFUSED:
                    raise
        return client.hello(name)

    def _hello(self, client: ChatClient, name: str, retry_seconds: float) -> ev.Welcome:
        deadline = self._clock() + retry_seconds
        while True:
            try:
                return client.hello(name)
            except ChatError as exc:
                if exc.code != ErrorCode.NAME_TAKEN or self._clock() >= deadline:
                    client.close()
                    raise
            time.sleep(NAME_RETRY_SECONDS)

    def _restore(self) -> None:
        for room in self.rooms:
            self.client.join(room)
        for peer in self.chats:
            try:
                self.client.open_chat(peer)
            except ChatError:
                pass                        # not online now: a later message says so

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def quit(self, reason: str = "") -> None:
        if self.client is not None:
            self.client.quit(reason)


def _abort(client: ChatClient) -> None:
    if client.sock is not None:
        try:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    client.close()

