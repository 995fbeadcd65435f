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
"""
from __future__ import annotations

import enum
import logging
import random
import socket
import time

from . import events as ev
from .codec import OutputBuffer, fanout
from .errors import ChatError, ErrorCode, ProtocolError
from .events import Reason
from .hub import Page
from .limits import TokenBucket
from .protocol import (NEED_DATA, PROTOCOL_VERSION, NativeProtocol, Role, encode_ack,
                       encode_event)

log = logging.getLogger(__name__)

# After our last byte, how long a closing connection may take to send its EOF; reading until
# then keeps the kernel from answering unread input with a reset that would destroy our
# final error frame before the peer reads it (a "lingering close", as HTTP servers do).
LINGER_SECONDS = 2.0
DISCARD_CHUNK_BYTES = 65536
_QUIET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


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

    def evict(self, endpoint: OutputBuffer) -> None:
        endpoint.owner.supersede()

    def take_pending(self) -> list:
        pending, self.pending = self.pending, []
        return pending


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"         # no more input handled; flushing what is queued
    LINGERING = "lingering"     # output done and shut down; discarding input until EOF
    CLOSED = "closed"


class Connection:
    """A client of the native protocol, from accept to close."""

    # Thousands are held at once: slots keep each one a few hundred bytes smaller.
    __slots__ = ("server", "config", "reactor", "hub", "outlet", "stats", "sock", "fd",
                 "address", "protocol", "outbuf", "session", "state", "connected_at", "last_received",
                 "ping_token", "ping_sent_at", "last_ping_at", "address_key", "held_bytes",
                 "_writing", "_linger_timer", "_reading", "_buckets", "_held_event",
                 "_resume_timer", "_behind_since", "_awaiting", "tls", "_write_to")

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
        self._awaiting = False          # or "answering"/"waiting": see _ask_hub
        self.tls = tls                  # a TlsTransport, or None for a plain client
        # What flush() calls: bound once, so the plain path pays no test (and no method
        # lookup) per write.
        self._write_to = self.outbuf.write_to
        if tls is not None:
            tls.outbuf = self.outbuf
            self._write_to = tls.write_to
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
                self.reactor.call_soon(self._next_turn)
                return
            turn_ends_at -= 1
            if held is not None:
                event, held = held, None
            else:
                try:
                    event = protocol.next_event()
                except ProtocolError as exc:
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

    def flood_kind(self, event):
        """The flood bucket ``event`` draws from: FLOOD_CHAT, FLOOD_REQUEST, or None (free).
        Another connection kind (IRC) answers for its own events."""
        return _FLOOD_KIND.get(type(event), _REQUEST)

    def _next_turn(self) -> None:
        if self.state is State.OPEN and self._resume_timer is None:
            self.process_input()

    def _delay(self, now: float, wait_seconds: float) -> None:
        """Flood control: handle nothing more for ``wait_seconds`` ("fake lag")."""
        if self._behind_since is None:
            self._behind_since = now
        elif now - self._behind_since > self.config.max_flood_lag_seconds:
            self._flooded(now - self._behind_since)
            return
        self._pause_reading()
        self._resume_timer = self.reactor.call_later(wait_seconds, self._end_delay)

    def _end_delay(self) -> None:
        self._resume_timer = None
        if self.state is State.OPEN:
            self.process_input()

    def _flooded(self, behind_seconds: float) -> None:
        log.info("%s: disconnected for flooding (behind its allowance for %.1fs)",
                 self.session.name if self.session else self.peer, behind_seconds)
        self.send_error(ErrorCode.EXCESS_FLOOD,
                        f"excess flood: you sent faster than the server allows for over "
                        f"{self.config.max_flood_lag_seconds:g}s", fatal=True)
        self.stats.drop("flood")
        self.close(Reason.FLOODED, "excess flood")

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.remove_reader(self.fd)

    def _resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self.reactor.add_reader(self.fd, self.on_readable)

    def _account_held_input(self) -> None:
        """Keep the server's total of received but unhandled input; past its budget, the
        connection that would add to it is dropped."""
        held = self.protocol.buffered_bytes
        grown = held - self.held_bytes
        if not grown:
            return
        self.held_bytes = held
        server = self.server
        server.held_input_bytes += grown
        if grown > 0 and server.held_input_bytes > self.config.max_held_input_bytes:
            log.warning("%s: dropped, the server holds %d bytes of unhandled input (limit "
                        "%d)", self.session.name if self.session else self.peer,
                        server.held_input_bytes, self.config.max_held_input_bytes)
            self.send_error(ErrorCode.INPUT_BUDGET,
                            "the server is holding all the unfinished input it may; "
                            "try again later", fatal=True)
            self.stats.drop("input_budget")
            self.close(Reason.OVER_LIMIT, "held-input budget")

    def _release_held_input(self) -> None:
        self.server.held_input_bytes -= self.held_bytes
        self.held_bytes = 0

    def _ask_hub(self, request, on_outcome) -> None:
        """``request(done)`` asks the hub something its backplane may answer later (a name
        claim, a user on another node): the requests after it wait, unread, until
        ``on_outcome(outcome)`` has run, so replies keep the order of their requests."""
        self._awaiting = "answering"            # an answer now comes back inside request()
        try:
            request(lambda outcome: self._answered(outcome, on_outcome))
        except ChatError:
            self._awaiting = False
            raise
        if self._awaiting:
            self._awaiting = "waiting"

    def _answered(self, outcome, on_outcome) -> None:
        later = self._awaiting == "waiting"
        self._awaiting = False
        on_outcome(outcome)
        if later and self.state is State.OPEN:
            # Had the answer come at once, the loop that took the request would still be
            # running and handle what follows it itself.
            self.reactor.call_soon(self._next_turn)

    def _on_hello(self, event: ev.Hello) -> None:
        if self.server.full_for_a_new_session():
            self.send_error(ErrorCode.SERVER_FULL,
                            f"server is full ({self.config.max_clients} clients, counting "
                            f"{self.hub.held_sessions} waiting to resume)", fatal=True,
                            request_id=event.request_id)
            self.close(Reason.DISCONNECTED, "server full")
            return
        # A cluster claims the name in Redis first (see _ask_hub).
        self._ask_hub(lambda done: self.hub.connect(event.name, self.outlet, self.outbuf, done),
                      lambda outcome: self._on_named(event, outcome))

    def _on_named(self, event: ev.Hello, outcome) -> None:
        if self.state is not State.OPEN:            # gone while the claim was out
            if not isinstance(outcome, ChatError):
                self.hub.disconnect(outcome, Reason.DISCONNECTED)
            return
        if isinstance(outcome, ChatError):
            self.send_error(outcome.code, outcome.message, False, event.request_id)
        else:
            self.session = outcome
            self._welcome(event.request_id)
            log.debug("%s is %s (%s)", self.peer, outcome.name, event.client or "?")

    def _reply(self, request_id: int, reply):
        """``on_outcome`` for a request answered by Ok (or Ack, given ``encode_ack``)."""
        def on_outcome(outcome) -> None:
            if self.state is not State.OPEN:
                return
            if isinstance(outcome, ChatError):
                self.send_error(outcome.code, outcome.message, False, request_id)
            else:
                self.send(reply(outcome))
        return on_outcome

    def _on_resume(self, event: ev.Resume) -> None:
        self.session = self.hub.resume(event.name, event.token, self.outlet, self.outbuf)
        self._welcome(event.request_id)
        self.hub.replay(self.session)
        log.info("%s resumed %s (%s)", self.peer, self.session.name, event.client or "?")

    def _welcome(self, request_id: int) -> None:
        # The token goes first, so a client has it by the time it sees Welcome.
        config = self.config
        self.send_event(ev.ResumeToken(self.session.resume_token,
                                       int(config.resume_grace_seconds)))
        self.send(self.protocol.send(ev.Welcome(
            PROTOCOL_VERSION, self.session.name, self.hub.node.name,
            int(config.ping_interval_seconds * 1000), config.max_frame_bytes,
            config.max_text_bytes, config.max_name_chars, request_id)))

    def _on_ping(self, event: ev.Ping) -> None:
        self.send_event(ev.Pong(event.token, event.request_id))

    def _on_pong(self, event: ev.Pong) -> None:
        if self.ping_sent_at is not None and event.token == self.ping_token:
            rtt = time.monotonic() - self.ping_sent_at
            self.session.record_rtt(rtt)
            self.stats.rtt_seconds.observe(rtt)
            self.ping_sent_at = None

    def _on_quit(self, event: ev.Quit) -> None:
        message = event.reason
        try:
            self.hub.check_quit_message(message)
        except ChatError as exc:
            # Refused as a goodbye, the quit itself still happens.
            self.send_error(exc.code, exc.message, False, event.request_id)
            message = ""
        self._leave_hub(Reason.QUIT, "quit", message)
        self.close(Reason.QUIT, "quit")

    def _on_open_chat(self, event: ev.OpenChat) -> None:
        self._ask_hub(lambda done: self.hub.open_chat(self.session, event.peer, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_close_chat(self, event: ev.CloseChat) -> None:
        self._ask_hub(lambda done: self.hub.close_chat(self.session, event.peer, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_send_direct(self, event: ev.SendDirect) -> None:
        def acked(stamp):
            self.stats.direct_messages += 1
            return encode_ack(*stamp, event.request_id)

        self._ask_hub(
            lambda done: self.hub.send_direct(self.session, event.peer, event.text, done),
            self._reply(event.request_id, acked))

    def _on_send_direct_action(self, event: ev.SendDirectAction) -> None:
        msg_id, timestamp_ms = self.hub.send_direct_action(self.session, event.peer,
                                                           event.text)
        self.stats.direct_messages += 1
        self.send(encode_ack(msg_id, timestamp_ms, event.request_id))

    def _on_send_room_action(self, event: ev.SendRoomAction) -> None:
        msg_id, timestamp_ms = self.hub.send_room_action(self.session, event.room, event.text)
        self.stats.room_messages += 1
        self.send(encode_ack(msg_id, timestamp_ms, event.request_id))

    def _on_set_topic(self, event: ev.SetTopic) -> None:
        self.hub.set_topic(self.session, event.room, event.topic)
        self.send_event(ev.Ok(event.request_id))

    def _on_set_name(self, event: ev.SetName) -> None:
        # Like a Hello, a new name is claimed cluster-wide first (see _ask_hub).
        old_name = self.session.name
        self._ask_hub(lambda done: self.hub.set_name(self.session, event.name, done),
                      lambda error: self._on_renamed(event, old_name, error))

    def _on_renamed(self, event: ev.SetName, old_name: str, error) -> None:
        if self.state is not State.OPEN:
            return
        if error is not None:
            self.send_error(error.code, error.message, False, event.request_id)
        else:
            self.send_event(ev.Ok(event.request_id))
            log.debug("%s: %s is now %s", self.peer, old_name, self.session.name)

    def _on_set_away(self, event: ev.SetAway) -> None:
        self.hub.set_away(self.session, event.message)
        self.send_event(ev.Ok(event.request_id))

    def _on_whois(self, event: ev.Whois) -> None:
        details = self.hub.whois(self.session, event.name)
        details.request_id = event.request_id
        frame = encode_event(details)
        while len(frame) - 4 > self.config.max_frame_bytes and details.rooms:
            # Only a server with a tiny max_frame_bytes gets here: fewer rooms, still a reply.
            details.rooms = details.rooms[:len(details.rooms) // 2]
            frame = encode_event(details)
        self.send(frame)

    def _on_join(self, event: ev.JoinRoom) -> None:
        self.hub.join(self.session, event.room)
        self.send_event(ev.Ok(event.request_id))

    def _on_leave(self, event: ev.LeaveRoom) -> None:
        self.hub.leave(self.session, event.room)
        self.send_event(ev.Ok(event.request_id))

    def _on_send_room(self, event: ev.SendRoom) -> None:
        msg_id, timestamp_ms = self.hub.send_room(self.session, event.room, event.text)
        self.stats.room_messages += 1
        self.send(encode_ack(msg_id, timestamp_ms, event.request_id))

    def _on_list_users(self, event: ev.ListUsers) -> None:
        # The unpaged request of protocol 1.0: its first page (``total`` says how many).
        page = self.hub.users_page(event.room)
        self.send(self._fitted(lambda entries, _: ev.UserList(page.total, entries,
                                                              event.request_id), page))

    def _on_list_rooms(self, event: ev.ListRooms) -> None:
        page = self.hub.rooms_page()
        self.send(self._fitted(lambda entries, _: ev.RoomList(page.total, entries,
                                                              event.request_id), page))

    def _on_list_users_page(self, event: ev.ListUsersPage) -> None:
        page = self.hub.users_page(event.room, event.after, event.pattern, event.limit)
        self.send(self._fitted(lambda entries, next_after: ev.UserPage(
            page.total, page.total_exact, next_after, entries, event.request_id), page))

    def _on_list_rooms_page(self, event: ev.ListRoomsPage) -> None:
        page = self.hub.rooms_page(event.after, event.pattern, event.limit)
        self.send(self._fitted(lambda entries, next_after: ev.RoomPage(
            page.total, page.total_exact, next_after, entries, event.request_id), page))

    def _on_list_servers(self, event: ev.ListServers) -> None:
        servers = self.hub.list_servers()
        page = Page(servers, [server.name for server in servers], len(servers), True, "")
        self.send(self._fitted(lambda entries, _: ev.ServerList(page.total, entries,
                                                                event.request_id), page))

    def _fitted(self, make_reply, page) -> bytes:
        """The reply frame with as many of the page's entries as fit in one frame; if some
        are cut, the cursor resumes after the last one sent."""
        entries = page.entries
        count = len(entries)
        limit = self.config.max_frame_bytes
        while True:
            next_after = page.next_after if count == len(entries) else page.keys[count - 1]
            frame = encode_event(make_reply(tuple(entries[:count]), next_after))
            if len(frame) - 4 <= limit or count <= 1:
                return frame
            count = max(1, min(count - 1, count * limit // (len(frame) - 4) - 1))

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
        if self.state is State.CLOSED:
            return
        outbuf = self.outbuf
        try:
            self.stats.bytes_sent += self._write_to(self.fd)
        except OSError as exc:
            self.abort(Reason.DISCONNECTED, exc)
            return
        if outbuf.pending_bytes:
            if outbuf.pending_bytes > self.config.max_output_bytes:
                self._overflow()
            elif not self._writing:
                self._writing = True
                self.stats.backlogged.add(self)
                self.reactor.add_writer(self.fd, self.flush)
            return
        if self._writing:
            self._writing = False
            self.stats.backlogged.discard(self)
            self.reactor.remove_writer(self.fd)
        if self.state is State.CLOSING:
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

    # -- closing ---------------------------------------------------------------------------

    def close(self, reason: Reason, why: object = "") -> None:
        """Stop taking input, tell the hub, and close once the queued output is written."""
        if self.state is not State.OPEN:
            return
        log.debug("%s: closing (%s)", self.peer, why or reason.name)
        self.state = State.CLOSING
        self._leave_hub(reason, why)
        self._stop_input()
        self._linger_timer = self.reactor.call_later(LINGER_SECONDS, self.abort,
                                                     reason, "close timed out")
        # Non-empty output is always either on the outlet's pending list or waiting for
        # write readiness, so flush() will get to it and call _linger then.
        if not self.outbuf.pending_bytes:
            self._linger()

    def _linger(self) -> None:
        self.state = State.LINGERING
        if self.tls is not None:
            self.tls.close_notify()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort(Reason.DISCONNECTED)
            return
        self.reactor.add_reader(self.fd, self._discard_input)

    def _discard_input(self) -> None:
        try:
            data = self.sock.recv(DISCARD_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.abort(Reason.DISCONNECTED)

    def abort(self, reason: Reason, why: object = "") -> None:
        """Close now, dropping queued output."""
        if self.state is State.CLOSED:
            return
        if isinstance(why, OSError) and not isinstance(why, _QUIET_ERRORS):
            log.warning("%s: %s", self.peer, why)
        self._leave_hub(reason, why)
        self._stop_input()
        self.state = State.CLOSED
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.reactor.remove_fd(self.fd)
        self.outbuf.close()
        self.sock.close()
        self.server.forget(self)

    def _stop_input(self) -> None:
        self._release_held_input()
        self.protocol.discard_input()
        self._held_event = None
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._reading = False
        self.reactor.remove_reader(self.fd)

    def _leave_hub(self, reason: Reason, why: object, message: str = "") -> None:
        session, self.session = self.session, None
        if session is None or self.server.shutting_down:
            return
        # Reset, timeout or slow reader: the user did not choose to leave, and may come
        # back with its resume token. A Quit, an EOF or a protocol error is a real end.
        if reason in (Reason.TIMED_OUT, Reason.TOO_SLOW) or isinstance(why, OSError):
            if self.config.resume_grace_seconds > 0:
                log.info("%s: dropped (%s); session held %gs for a resume", session.name,
                         reason.name, self.config.resume_grace_seconds)
            self.hub.detach(session, reason)
        else:
            self.hub.disconnect(session, reason, message)


# Which token bucket a request takes from: 0 chat messages, 1 other requests (the default
# for any request type not named here, and for bad frames), None free (answers to our pings,
# and goodbye).
_CHAT, _REQUEST = 0, 1
FLOOD_CHAT, FLOOD_REQUEST = _CHAT, _REQUEST
_FLOOD_KIND = {ev.SendRoom: _CHAT, ev.SendDirect: _CHAT, ev.SendRoomAction: _CHAT,
               ev.SendDirectAction: _CHAT, ev.Pong: None, ev.Quit: None}

_HANDLERS = {
    ev.Hello: Connection._on_hello,
    ev.Resume: Connection._on_resume,
    ev.Ping: Connection._on_ping,
    ev.Pong: Connection._on_pong,
    ev.Quit: Connection._on_quit,
    ev.OpenChat: Connection._on_open_chat,
    ev.CloseChat: Connection._on_close_chat,
    ev.SendDirect: Connection._on_send_direct,
    ev.JoinRoom: Connection._on_join,
    ev.LeaveRoom: Connection._on_leave,
    ev.SendRoom: Connection._on_send_room,
    ev.SendRoomAction: Connection._on_send_room_action,
    ev.SendDirectAction: Connection._on_send_direct_action,
    ev.SetTopic: Connection._on_set_topic,
    ev.SetName: Connection._on_set_name,
    ev.SetAway: Connection._on_set_away,
    ev.Whois: Connection._on_whois,
    ev.ListUsers: Connection._on_list_users,
    ev.ListRooms: Connection._on_list_rooms,
    ev.ListServers: Connection._on_list_servers,
    ev.ListUsersPage: Connection._on_list_users_page,
    ev.ListRoomsPage: Connection._on_list_rooms_page,
}

# Keyed by event type; another connection kind (IRC) has its own table.
Connection.HANDLERS = _HANDLERS
