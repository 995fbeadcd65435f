"""One client socket joined to one native-protocol stream, one output buffer and the hub.

The connection enforces the per-connection limits (output queue, handshake and idle
timeouts, flood control, its share of the server's held-input budget), answers and sends
pings, and turns hub refusals into Error frames. Routing is the hub's business; bytes on the
wire are the protocol's. A TLS client is the same Connection with a
``chatcore.tls.TlsTransport`` in ``tls``: the transport seam is the three places that touch
the socket's bytes (read, write, shutdown), nothing else differs.

Input is handled in fair turns: ``process_input`` handles buffered requests until their work
(one unit per request plus the hub's ``work_done``: deliveries, list entries) reaches
``max_turn_work_units``, then pauses reading and continues on the next loop turn, so one
client's pipeline never holds up everyone else's deliveries. Flood control delays a client
past its token bucket the same way, for as long as the bucket needs to refill.

The parts: ``requests`` (the request handlers and their table), ``pacing`` (fair turns,
flood control, the held-input budget) and ``closing`` (states, the lingering close, leaving
the hub); this module is the core: reading, the input loop, output and liveness.
"""
from __future__ import annotations

import logging
import random
import socket
import time

from .. import events as ev
from .. import lane as _lane
from ..codec import OutputBuffer, fanout
from ..errors import ChatError, ErrorCode, ProtocolError
from ..events import Reason
from ..limits import TokenBucket
from ..protocol import NEED_DATA, NativeProtocol, Role, encode_event
from .closing import DISCARD_CHUNK_BYTES, LINGER_SECONDS, Closing, State
from .pacing import _REQUEST, FLOOD_CHAT, FLOOD_REQUEST, Pacing
from .requests import HANDLERS, Requests

__all__ = ["DISCARD_CHUNK_BYTES", "FLOOD_CHAT", "FLOOD_REQUEST", "LINGER_SECONDS", "Connection",
           "NativeOutlet", "State"]

log = logging.getLogger(__name__)
_CLOSED, _CLOSING = State.CLOSED, State.CLOSING


class NativeOutlet:
    """Hands hub events to native connections: each event encoded once, queued everywhere.

    ``pending`` collects the output buffers that became non-empty; the server flushes them
    before the loop sleeps.
    """

    def __init__(self):
        self.pending: list = []
        self.deliveries = 0             # events queued for a client, one per recipient

    def deliver(self, endpoint: OutputBuffer, event) -> None:
        self.deliveries += 1
        if endpoint.append(encode_event(event)):
            self.pending.append(endpoint)

    def broadcast(self, endpoints: list, event) -> None:
        self.deliveries += len(endpoints)
        self.pending.extend(fanout(encode_event(event), endpoints))

    def broadcast_frames(self, endpoints: list, frames: bytes, count: int) -> None:
        """``count`` events already encoded (native frames back to back), to every endpoint:
        how a cluster node hands on another node's room messages (hub.remote_rooms)."""
        self.deliveries += len(endpoints) * count
        self.pending.extend(fanout(frames, endpoints))

    def evict(self, endpoint: OutputBuffer) -> None:
        endpoint.owner.supersede()

    def take_pending(self) -> list:
        pending, self.pending = self.pending, []
        return pending


class Connection(Requests, Pacing, Closing):
    """A client of the native protocol, from accept to close."""

    # Thousands are held at once: slots keep each one a few hundred bytes smaller.
    __slots__ = ("server", "config", "reactor", "hub", "outlet", "stats", "sock", "fd",
                 "address", "protocol", "outbuf", "session", "state", "connected_at", "last_received",
                 "ping_token", "ping_sent_at", "last_ping_at", "address_key", "held_bytes",
                 "_writing", "_linger_timer", "_reading", "_buckets", "_held_event",
                 "_resume_timer", "_behind_since", "_awaiting", "_replies", "tls",
                 "_writer")

    def __init__(self, server, sock: socket.socket, address, address_key: str | None = None,
                 tls=None):
        """``address_key`` is what the server counts this connection under for the
        per-address limit; None for an exempt address, which skips flood control too.
        ``tls``: a TlsTransport, or None for a plain client."""
        self.server = server
        self.config = server.config
        self.reactor = server.reactor
        self.hub = server.hub
        self.outlet: NativeOutlet = server.outlet
        self.stats = server.stats
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.protocol = NativeProtocol(Role.SERVER, self.config.max_frame_bytes)
        # Crossing the limit makes the buffer pending again, so the check in flush() runs
        # even while the connection is waiting for write readiness.
        self.outbuf = OutputBuffer(self, self.config.max_output_bytes)
        self.session = None
        self.state = State.OPEN
        now = time.monotonic()
        self.connected_at = now
        self.last_received = now
        self.ping_token = 0
        self.ping_sent_at: float | None = None
        # A random phase, so thousands of clients that connected together are not all
        # pinged in the same turn.
        self.last_ping_at = now - random.random() * self.config.ping_interval_seconds
        self.address_key = address_key
        self.held_bytes = 0             # this connection's part of server.held_input_bytes
        self._writing = False
        self._linger_timer = None
        self._awaiting = False          # or "answering"/"waiting": see _ask_hub, "pipeline"
        self._replies = None            # replies owed to room messages: see _pipeline
        self.tls = tls                  # a TlsTransport, or None for a plain client
        # What flush() writes through, chosen once, so the plain path pays no test per
        # write (the object, not its bound write_to: that would cost 64 bytes a connection).
        self._writer = self.outbuf
        if tls is not None:
            tls.outbuf = self.outbuf
            self._writer = tls
        else:
            # The per-turn flush writes a plain connection's buffer in one compiled loop
            # (codec.write_all) while a completed write needs nothing more of flush():
            # open, and not waiting for write readiness (see flush, close).
            self.outbuf.direct_fd = self.fd
        # (chat messages, other requests); None when exempt from flood control.
        self._buckets = None if address_key is None else (
            TokenBucket(self.config.flood_chat_burst_messages,
                        self.config.flood_chat_messages_per_second, now),
            TokenBucket(self.config.flood_burst_requests,
                        self.config.flood_requests_per_second, now))
        self._held_event = None         # decoded, but waiting for a flood delay to end
        self._resume_timer = None
        self._behind_since: float | None = None     # flood-delayed since, without catching up
        self._reading = True
        self.reactor.add_reader(self.fd, self.on_readable)

    def __repr__(self) -> str:
        who = self.session.name if self.session else "-"
        return f"<Connection {who} {self.address} {self.state.value}>"

    @property
    def peer(self) -> str:
        host, port = self.address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- input -----------------------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            if self.tls is None:
                data = self.sock.recv(self.config.read_chunk_bytes)
            else:
                data = self.tls.recv(self.config.read_chunk_bytes)
        except (BlockingIOError, InterruptedError):
            if self.tls is not None:
                self._account_held_input()      # the start of a record, inside the ssl object
            return
        except OSError as exc:
            self.abort(Reason.DISCONNECTED, exc)
            return
        if not data:
            # Half-closed by the peer: it may still read, so flush before closing.
            self.close(Reason.DISCONNECTED, "peer closed its side")
            return
        self.last_received = time.monotonic()
        self.stats.bytes_received += len(data)     # TLS: after decryption
        self.protocol.receive_data(data)
        self.process_input()

    def process_input(self) -> None:
        """Handle the requests buffered in the protocol, as far as this turn allows.

        A transport calls this after giving the protocol new bytes. What is left over (the
        turn's work budget is spent, or flood control delays the client) waits with reading
        paused; it continues by itself on a later turn.
        """
        self._handle_input()
        if self.state is State.OPEN:
            self._account_held_input()

    def _handle_input(self) -> None:
        protocol = self.protocol
        handlers = self.HANDLERS
        limit = self.config.max_output_bytes
        hub = self.hub
        # Every request costs one unit, plus what the hub counts for it (deliveries, list
        # entries): the turn ends once the hub's counter reaches ``turn_ends_at``.
        turn_ends_at = hub.work_done + self.config.max_turn_work_units
        buckets = self._buckets
        now = time.monotonic()
        held, self._held_event = self._held_event, None
        # Room and direct messages of a named session take the lane (chatcore.lane), which
        # hands back, as events, the requests it leaves to the handlers below.
        lane = self._lane_run() if self.session is not None else None
        while self.state is State.OPEN and not self._awaiting:
            if self.outbuf.pending_bytes > limit:
                # Requests (or bad frames) pipelined without reading the replies: write what
                # the kernel takes now, and stop if that does not bring the queue under the
                # limit, before more replies (a list each, say) cost time and memory.
                self.flush()
                if self.state is not State.OPEN:
                    return
            if hub.work_done >= turn_ends_at:
                self._held_event = held
                self._pause_reading()
                # On once what this turn queued is written: a sender cannot queue faster
                # than the server writes (chatcore.connection.flushing).
                self.server.flusher.after_output(self._next_turn)
                return
            turn_ends_at -= 1
            if held is not None:
                event, held = held, None
            else:
                try:
                    if lane is None:
                        event = protocol.next_event()
                    else:
                        turn_ends_at, event, wait_seconds = lane(self, turn_ends_at, now)
                        if event is None:           # stopped at this loop's head: go round
                            continue
                        if wait_seconds:            # flood control: as below
                            self._held_event = event
                            self._delay(now, wait_seconds)
                            return
                        if type(event) is ProtocolError:
                            raise event
                except ProtocolError as exc:
                    if self._replies and not exc.fatal:
                        self._in_order(lambda exc=exc: self.send_error(
                            exc.code, exc.message, False, exc.request_id))
                    else:
                        self.send_error(exc.code, exc.message, exc.fatal, exc.request_id)
                    if exc.fatal:
                        log.info("%s: closing, %s", self.peer, exc.message)
                        self.stats.drop("protocol_error")
                        self.close(Reason.DISCONNECTED, exc.message)
                    elif buckets is not None:
                        # A bad frame costs a reply like a request does.
                        wait_seconds = buckets[_REQUEST].take(now)
                        if wait_seconds:
                            self._delay(now, wait_seconds)
                            return
                    continue
                if event is NEED_DATA:
                    self._behind_since = None
                    self._resume_reading()
                    return
            if self._replies and not self._pipelines(event):
                # Its reply goes after those owed to the room messages before it.
                self._held_event = event
                self._awaiting = "pipeline"
                break
            if buckets is not None:
                kind = self.flood_kind(event)
                if kind is not None:
                    wait_seconds = buckets[kind].take(now)
                    if wait_seconds:
                        self._held_event = event
                        self._delay(now, wait_seconds)
                        return
            try:
                handlers[type(event)](self, event)
            except ChatError as exc:
                self.send_error(exc.code, exc.message, False, event.request_id)
        if self._awaiting and self.state is State.OPEN:
            self._pause_reading()       # what follows waits for the backplane's answer

    def _lane_run(self):
        """The lane for this connection's requests (chatcore.lane), or None: the hub path."""
        return _lane.run if type(self.protocol) is NativeProtocol else None

    # -- output ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue encoded bytes; they are written before the loop sleeps."""
        if self.outbuf.append(data):
            self.outlet.pending.append(self.outbuf)

    def send_event(self, event) -> None:
        self.send(encode_event(event))

    def send_error(self, code: ErrorCode, message: str, fatal: bool = False,
                   request_id: int = 0) -> None:
        self.send_event(ev.Error(int(code), fatal, message, request_id))

    def flush(self) -> None:
        """Write what is queued; ask for write readiness only if the kernel took less."""
        # Once per connection written per turn: kept to the fewest lookups (a write is
        # ~5 us of kernel time, and this was ~0.35 us of Python on top of it).
        if self.state is _CLOSED:
            return
        try:
            sent = self._writer.write_to(self.fd)
        except OSError as exc:
            self.abort(Reason.DISCONNECTED, exc)
            return
        self.stats.bytes_sent += sent
        pending_bytes = self.outbuf.pending_bytes
        if pending_bytes:
            if pending_bytes > self.config.max_output_bytes:
                self._overflow()
            elif not self._writing:
                self._writing = True
                self.outbuf.direct_fd = -1      # its writes are flush()'s until it drains
                self.stats.backlogged.add(self)
                self.reactor.add_writer(self.fd, self.flush)
            return
        if self._writing:
            self._writing = False
            if self.state is State.OPEN and self.tls is None:
                self.outbuf.direct_fd = self.fd
            self.stats.backlogged.discard(self)
            self.reactor.remove_writer(self.fd)
        if self.state is _CLOSING:
            self._linger()

    def supersede(self) -> None:
        """Another connection resumed this one's session: go, without telling the hub."""
        self.session = None
        self.stats.drop("resumed_elsewhere")
        self.send_error(ErrorCode.SESSION_RESUMED,
                        "your session was resumed by a newer connection", fatal=True)
        self.close(Reason.DISCONNECTED, "session resumed elsewhere")

    def _overflow(self) -> None:
        # No error frame: the queue that would carry it is the one that is full.
        log.warning("%s: output queue passed %d bytes; dropping the slow reader",
                    self.session.name if self.session else self.peer,
                    self.config.max_output_bytes)
        self.stats.drop("slow_reader")
        self.abort(Reason.TOO_SLOW, "output queue overflow")

    # -- liveness --------------------------------------------------------------------------

    def tick(self, now: float, enforce_timeouts: bool = True) -> None:
        """Send a ping when one is due; enforce the handshake and idle timeouts.

        The server passes ``enforce_timeouts=False`` after the loop stalled: input may be
        waiting unread in the socket, so silence proves nothing then.
        """
        if self.state is not State.OPEN:
            return
        config = self.config
        if self.session is None:
            if enforce_timeouts and now - self.connected_at > config.handshake_timeout_seconds:
                self.send_error(ErrorCode.HANDSHAKE_TIMEOUT,
                                f"no Hello within {config.handshake_timeout_seconds:g}s",
                                fatal=True)
                self.stats.drop("handshake_timeout")
                self.close(Reason.TIMED_OUT, "handshake timeout")
            return
        # Paused reading (a fair turn or a flood delay) means input is waiting unread.
        if (enforce_timeouts and self._reading
                and now - self.last_received > config.idle_timeout_seconds):
            self.send_error(ErrorCode.PING_TIMEOUT,
                            f"nothing received for {config.idle_timeout_seconds:g}s",
                            fatal=True)
            log.info("%s: idle timeout", self.session.name)
            self.stats.drop("idle")
            self.close(Reason.TIMED_OUT, "idle timeout")
        elif now - self.last_ping_at >= config.ping_interval_seconds:
            self.ping_token = (self.ping_token + 1) & 0xFFFFFFFFFFFFFFFF
            self.ping_sent_at = self.last_ping_at = now
            self.send_event(ev.Ping(self.ping_token))


Connection.HANDLERS = HANDLERS
