"""A Redis link on the reactor: one command connection and one subscriber connection.

Non-blocking sockets driven by :mod:`chatcore.reactor`, no threads, no asyncio. RESP is
encoded by ``hiredis.pack_command`` and parsed by ``hiredis.Reader``. Commands issued during
a loop turn are written together, in one ``send``, by the before-sleep flush; replies are
matched to their callbacks in order. Both connections are priority readers, so Redis is read
before any client each turn and never sees us as a slow subscriber.

A lost connection is rebuilt with exponential backoff; callbacks of commands in flight (and
of commands issued while down) get :class:`BrokerUnavailable` as their reply at once, and
subscriptions are renewed, in batches, on reconnect. An outage is logged once when it starts
and once when it ends. Nothing here knows about chat: see :mod:`chatcore.cluster`.
"""
from __future__ import annotations

import collections
import errno
import logging
import random
import socket
import time

import hiredis

from .redis_address import RedisAddress, check_reachable, run_blocking

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 262144       # per recv; a subscriber is read until the socket is empty
MAX_READS_PER_TURN = 64         # ... but at most 16 MiB a turn, so clients still get turns
RECONNECT_MIN_SECONDS = 0.05    # first retry: a restarting Redis is often back at once
RECONNECT_MAX_SECONDS = 2.0     # retries never further apart than this
SUBSCRIBE_BATCH = 1000          # channels per SUBSCRIBE when renewing after a reconnect


__all__ = ["Broker", "BrokerUnavailable", "RedisAddress", "ReplyError", "check_reachable",
           "run_blocking"]


class BrokerUnavailable(Exception):
    """The reply of a command that could not reach Redis (or whose link was lost)."""


ReplyError = hiredis.ReplyError


class _Link:
    """One RESP connection: connect, reconnect with backoff, pipelined writes, reads."""

    subscriber = False

    def __init__(self, broker: Broker, label: str):
        self.broker = broker
        self.reactor = broker.reactor
        self.label = label
        self.sock: socket.socket | None = None
        self.connected = False
        self._reader = hiredis.Reader()
        self._output: list[bytes] = []
        self._output_bytes = 0
        self._writing = False
        self._backoff = RECONNECT_MIN_SECONDS
        self._retry = None
        self.last_received = 0.0
        self.writes = 0                 # sends issued: lets tests see the pipelining

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> None:
        self._retry = None
        family, kind, proto, sockaddr = self.broker.resolved
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._failed(exc)
            return
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        err = sock.connect_ex(sockaddr)
        # A Unix socket connects at once or not at all (EAGAIN: its backlog is full).
        in_progress = (0,) if family == socket.AF_UNIX else (0, errno.EINPROGRESS,
                                                             errno.EWOULDBLOCK)
        if err not in in_progress:
            self._failed(OSError(err, f"connect: {errno.errorcode.get(err, err)}"))
            return
        self.reactor.add_writer(sock.fileno(), self._on_connected)

    def _on_connected(self) -> None:
        sock = self.sock
        self.reactor.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(OSError(err, f"connect: {errno.errorcode.get(err, err)}"))
            return
        self.connected = True
        self._backoff = RECONNECT_MIN_SECONDS
        self._reader = hiredis.Reader()
        self.last_received = time.monotonic()
        self.reactor.add_reader(sock.fileno(), self._on_readable, priority=True)
        for command in self.broker.address.setup_commands(self.subscriber):
            self._send_setup(command)
        self._on_ready()
        self.broker._link_up(self)

    def _failed(self, exc: Exception) -> None:
        """Drop the socket, fail what waits for a reply, and schedule a retry."""
        was_connected = self.connected
        self._close_socket()
        self._on_lost()
        self.broker._link_down(self, exc, was_connected)
        if self.broker.closed:
            return
        delay = self._backoff * (0.5 + random.random() / 2)
        self._backoff = min(self._backoff * 2, RECONNECT_MAX_SECONDS)
        self._retry = self.reactor.call_later(delay, self.connect)

    def _close_socket(self) -> None:
        self.connected = False
        self._output.clear()
        self._output_bytes = 0
        self._writing = False
        if self.sock is not None:
            self.reactor.remove_fd(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._close_socket()
        self._on_lost()

    # -- writing ---------------------------------------------------------------------------

    def _queue(self, command: tuple) -> None:
        data = hiredis.pack_command(command)
        if not self._output:
            self.broker._pending.append(self)
        self._output.append(data)
        self._output_bytes += len(data)
        if self._output_bytes > self.broker.max_output_bytes:
            self._failed(OSError(f"more than {self.broker.max_output_bytes} bytes of "
                                 f"commands queued: Redis is not reading"))

    def flush(self) -> None:
        """Write everything queued this turn in one send; wait for writability if needed."""
        if not self.connected or not self._output or self._writing:
            return
        data = b"".join(self._output) if len(self._output) > 1 else self._output[0]
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._failed(exc)
            return
        self.writes += 1
        if sent == len(data):
            self._output.clear()
            self._output_bytes = 0
            return
        self._output = [data[sent:]]
        self._output_bytes = len(data) - sent
        self._writing = True
        self.reactor.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        self._writing = False
        self.reactor.remove_writer(self.sock.fileno())
        self.flush()

    # -- reading ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        reader = self._reader
        for _ in range(MAX_READS_PER_TURN):
            try:
                data = self.sock.recv(READ_CHUNK_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._failed(exc)
                return
            if not data:
                self._failed(ConnectionError("Redis closed the connection"))
                return
            self.last_received = time.monotonic()
            reader.feed(data)
            try:
                while (reply := reader.gets()) is not False:
                    self._on_reply(reply)
                    if not self.connected:
                        return
            except hiredis.ProtocolError as exc:
                self._failed(exc)
                return
            if len(data) < READ_CHUNK_BYTES:
                break

    # -- for the two kinds of link ---------------------------------------------------------

    def _send_setup(self, command: tuple) -> None:
        raise NotImplementedError

    def _on_ready(self) -> None:
        """Connected (setup commands queued): send what a fresh connection needs."""

    def _on_lost(self) -> None:
        """The connection is gone: fail whatever waited on it."""

    def _on_reply(self, reply) -> None:
        raise NotImplementedError


class CommandLink(_Link):
    """Request/reply commands, pipelined; ``callback(reply)`` in the order issued."""

    def __init__(self, broker: Broker):
        super().__init__(broker, "commands")
        self._callbacks: collections.deque = collections.deque()

    def call(self, *command, callback=None) -> None:
        if not self.connected:
            if callback is not None:
                callback(BrokerUnavailable(f"Redis at {self.broker.address.url} is "
                                           f"unreachable"))
            return
        self._callbacks.append((callback, time.monotonic()))
        self._queue(command)

    def oldest_wait_seconds(self, now: float) -> float:
        """How long the oldest unanswered command has waited (0 if none)."""
        return now - self._callbacks[0][1] if self._callbacks else 0.0

    def _send_setup(self, command: tuple) -> None:
        self._callbacks.append((self._check_setup, time.monotonic()))
        self._queue(command)

    def _check_setup(self, reply) -> None:
        if isinstance(reply, ReplyError):
            log.error("Redis at %s refused the connection setup: %s",
                      self.broker.address.url, reply)

    def _on_lost(self) -> None:
        callbacks, self._callbacks = self._callbacks, collections.deque()
        if not callbacks:
            return
        error = BrokerUnavailable(f"lost the connection to Redis at {self.broker.address.url}")
        for callback, _ in callbacks:
            if callback is not None:
                try:
                    callback(error)
                except Exception:
                    log.exception("redis callback %r failed", callback)

    def _on_reply(self, reply) -> None:
        if not self._callbacks:
            self._failed(hiredis.ProtocolError("a reply nobody asked for"))
            return
        callback, _ = self._callbacks.popleft()
        if callback is not None:
            try:
                callback(reply)
            except Exception:
                log.exception("redis callback %r failed", callback)


class SubscriberLink(_Link):
    """A connection in subscribe mode; ``handler(channel, data)`` per message.

    Subscriptions are remembered and renewed on every reconnect, ``SUBSCRIBE_BATCH`` channels
    per command.
    """

    subscriber = True

    def __init__(self, broker: Broker):
        super().__init__(broker, "subscriber")
        self.handlers: dict[bytes, object] = {}
        self._pings: collections.deque = collections.deque()
        self._confirming: dict[bytes, list] = {}   # channel -> on_subscribed callbacks

    def subscribe(self, channel: str | bytes, handler, on_subscribed=None) -> None:
        """``on_subscribed(True)`` once Redis confirms (publishes from then on arrive), or
        ``on_subscribed(False)`` if the connection is lost first."""
        key = channel.encode() if isinstance(channel, str) else channel
        new = key not in self.handlers
        self.handlers[key] = handler
        if on_subscribed is not None:
            if not self.connected:
                on_subscribed(False)
                return
            if not new and key not in self._confirming:
                on_subscribed(True)
                return
            self._confirming.setdefault(key, []).append(on_subscribed)
        if new and self.connected:
            self._queue(("SUBSCRIBE", key))

    def unsubscribe(self, channel: str | bytes) -> None:
        key = channel.encode() if isinstance(channel, str) else channel
        if self.handlers.pop(key, None) is not None and self.connected:
            self._queue(("UNSUBSCRIBE", key))

    def ping(self) -> None:
        """A health check: subscribe mode answers PING too."""
        if self.connected:
            self._pings.append(time.monotonic())
            self._queue(("PING",))

    def oldest_wait_seconds(self, now: float) -> float:
        return now - self._pings[0] if self._pings else 0.0

    def _send_setup(self, command: tuple) -> None:
        self._queue(command)

    def _on_ready(self) -> None:
        channels = list(self.handlers)
        for channel in channels:            # a subscribe() now waits for the renewal
            self._confirming.setdefault(channel, [])
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            self._queue(("SUBSCRIBE", *channels[start:start + SUBSCRIBE_BATCH]))

    def _on_lost(self) -> None:
        self._pings.clear()
        confirming, self._confirming = self._confirming, {}
        for callbacks in confirming.values():
            for callback in callbacks:
                callback(False)

    def _on_reply(self, reply) -> None:
        if isinstance(reply, ReplyError):
            log.error("Redis subscriber connection: %s", reply)
            return
        if not isinstance(reply, list):         # +OK of AUTH
            return
        kind = reply[0]
        if kind == b"message":
            handler = self.handlers.get(reply[1])
            if handler is not None:
                try:
                    handler(reply[1], reply[2])
                except Exception:
                    log.exception("handler of channel %r failed", reply[1])
        elif kind == b"subscribe":
            for callback in self._confirming.pop(reply[1], ()):
                callback(True)
        elif kind == b"pong":
            if self._pings:
                self._pings.popleft()


class Broker:
    """The node's link to Redis: ``call`` commands, ``publish``, ``subscribe``.

    ``on_up()`` runs when both connections are (again) up, ``on_down()`` when the first of
    them is lost; ``before_flush()`` just before each turn's writes (the last commands of the
    turn: batches). Liveness: a connection with a request unanswered for ``timeout_seconds`` is
    dropped and rebuilt like any other outage.
    """

    def __init__(self, reactor, address: RedisAddress, *, timeout_seconds: float = 5.0,
                 max_output_bytes: int = 64 * 1024 * 1024, on_up=None, on_down=None,
                 before_flush=None):
        self.reactor = reactor
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.max_output_bytes = max_output_bytes
        self.on_up = on_up
        self.on_down = on_down
        self.before_flush = before_flush        # runs first in flush(): the last commands
        self.closed = False
        self._pending: list[_Link] = []
        self.commands = CommandLink(self)
        self.subscriber = SubscriberLink(self)
        self.up = False
        self._down_since: float | None = None
        self._down_logged = False
        self.outages = 0                # episodes, for tests and operators
        self._watchdog = None
        self.resolved: tuple | None = None

    def start(self) -> None:
        """Resolve the address (once: the loop must not block on DNS later) and connect."""
        self.resolved = self.address.resolve()
        # First: a reply a client gets this turn never leaves before the write to Redis it
        # follows (a user who hears of it and asks another node finds it there). Last too:
        # the commands the clients' writes queue (a failed write's leave).
        self.reactor.add_before_sleep(self.flush, first=True)
        self.reactor.add_before_sleep(self.flush)
        self.commands.connect()
        self.subscriber.connect()
        self._schedule_watchdog()

    def close(self) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.commands.close()
        self.subscriber.close()

    # -- the interface ---------------------------------------------------------------------

    def call(self, *command, callback=None) -> None:
        """Queue a command; ``callback(reply)`` gets its reply (a ReplyError or a
        BrokerUnavailable when it failed)."""
        self.commands.call(*command, callback=callback)

    def publish(self, channel: str | bytes, data: bytes, callback=None) -> None:
        self.commands.call("PUBLISH", channel, data, callback=callback)

    def subscribe(self, channel: str | bytes, handler, on_subscribed=None) -> None:
        self.subscriber.subscribe(channel, handler, on_subscribed)

    def unsubscribe(self, channel: str | bytes) -> None:
        self.subscriber.unsubscribe(channel)

    def flush(self) -> None:
        """Before sleep: one write per connection with output."""
        if self.before_flush is not None:
            self.before_flush()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for link in pending:
            link.flush()

    # -- liveness and outages --------------------------------------------------------------

    def _schedule_watchdog(self) -> None:
        self._watchdog = self.reactor.call_later(self.timeout_seconds / 3, self._check_links)

    def _check_links(self) -> None:
        now = time.monotonic()
        for link in (self.commands, self.subscriber):
            if not link.connected:
                continue
            if link.oldest_wait_seconds(now) > self.timeout_seconds:
                link._failed(TimeoutError(f"no reply for {self.timeout_seconds:g}s"))
            elif now - link.last_received > self.timeout_seconds / 3:
                if link is self.commands:
                    link.call("PING")
                else:
                    link.ping()
        if not self.closed:
            self._schedule_watchdog()

    def _link_up(self, link: _Link) -> None:
        if self.up or not (self.commands.connected and self.subscriber.connected):
            return
        self.up = True
        if self._down_since is not None:
            if self._down_logged:
                log.warning("Redis at %s is reachable again after %.1fs", self.address.url,
                            time.monotonic() - self._down_since)
            self._down_since = None
            self._down_logged = False
        if self.on_up is not None:
            self.on_up()

    def _link_down(self, link: _Link, exc: Exception, was_connected: bool) -> None:
        if self.closed:
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._down_logged:
            # Once per outage: retries every few seconds would flood the log.
            self._down_logged = True
            self.outages += 1
            log.warning("Redis at %s is unreachable (%s connection: %s); retrying with "
                        "backoff", self.address.url, link.label, exc)
        if self.up:
            self.up = False
            if self.on_down is not None:
                self.on_down()
