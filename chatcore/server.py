"""The listening sockets, the set of connections, and the per-turn write flush."""
from __future__ import annotations

import errno
import logging
import os
import socket
import time

from .config import WILDCARD_HOSTS, ServerConfig, parse_host_port
from .connection import Connection, NativeOutlet
from .connection.flushing import Flusher
from .connection.sweeping import Sweep
from .errors import ErrorCode
from .events import Reason
from .hub import Hub, HubLimits, NodeInfo
from .protocol import room_joined_capacity
from .tls import TlsHandshake, server_context
from .limits import AddressCounter, ExemptList, address_key
from .memory import MemoryTrimmer
from .stats import ServerStats

log = logging.getLogger(__name__)

ACCEPT_BATCH = 256              # accepts per wake-up, so a connect storm cannot starve reads
ACCEPT_PAUSE_SECONDS = 0.5      # after EMFILE: let closes free descriptors before retrying
# Grace periods that end in one turn (a network blip dropped thousands at once) are
# expired a batch per loop turn, so the leave notices cannot stall everyone else.
EXPIRE_BATCH = 200
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_TRANSIENT_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class Server:
    """Accepts native-protocol clients, plain and over TLS, and drives them on ``reactor``."""

    def __init__(self, config: ServerConfig, reactor):
        self.config = config
        self.reactor = reactor
        self.outlet = NativeOutlet()
        self.stats = ServerStats()
        self.flusher = Flusher(self.outlet, reactor, config.max_turn_writes,
                               config.coalesce_writes_seconds,
                               config.coalesce_writes_min_frames, stats=self.stats)
        self.connections: set[Connection] = set()
        self.shutting_down = False
        self.listener: socket.socket | None = None       # plain; None with tls_only
        self.address: tuple | None = None
        self.tls_listener: socket.socket | None = None
        self.tls_address: tuple | None = None
        self.tls_context = None
        self.tls_handshakes: set[TlsHandshake] = set()
        self.hub: Hub | None = None
        self.cluster = None             # chatcore.cluster.Cluster once joined (--redis)
        self.load = LoadMeter()
        self.exempt = ExemptList(config.limit_exempt)
        self.per_address = AddressCounter()
        self.held_input_bytes = 0       # received but unhandled, all connections together
        self.held_input_peak = 0        # the most held since the last trim (self.memory)
        self.memory = MemoryTrimmer(config.trim_memory_after_bytes)
        self._handshake_keys: dict = {}   # TlsHandshake -> the address key it counts under
        self.irc = None                 # the IRC front end, when irc_port/irc_tls_port is set
        self._accept_paused = False
        self._tls_accept_paused = False     # max_tls_handshakes are in progress
        self._accept_failures_logged = False
        self._tick_due = 0.0
        self._sweep: Sweep | None = None     # the tick's visit of the connections
        self._tick_seconds = max(0.02, min(1.0, config.ping_interval_seconds / 4,
                                           config.idle_timeout_seconds / 4,
                                           config.handshake_timeout_seconds / 4))

    def start(self) -> tuple:
        """Bind and listen; returns the bound (host, port): the plain listener's, or the TLS
        one's with ``tls_only``. Raises TlsConfigError (a ValueError) for a bad certificate
        or key, OSError when a port cannot be bound."""
        config = self.config
        if config.tls_port >= 0 or config.irc_tls_port >= 0:
            self.tls_context = server_context(config.tls_cert, config.tls_key)
        if not config.tls_only:
            self.listener = listen_socket(config.host, config.port, config.backlog)
            self.address = self.listener.getsockname()[:2]
        if config.tls_port >= 0:
            try:
                self.tls_listener = listen_socket(config.host, config.tls_port, config.backlog)
            except OSError:
                if self.listener is not None:
                    self.listener.close()
                raise
            self.tls_address = self.tls_listener.getsockname()[:2]
        host, port = advertised_address(config, self.address or self.tls_address)
        name = config.server_name or f"chatcore@{format_address(host, port)}"
        topic_bytes = min(config.max_topic_bytes, config.max_text_bytes)
        limits = HubLimits(config.max_name_chars, config.max_room_name_chars,
                           config.max_text_bytes, config.max_rooms_per_user,
                           max_rooms=config.max_rooms,
                           resume_grace_seconds=config.resume_grace_seconds,
                           max_list_page_entries=config.max_list_page_entries,
                           max_list_scan_entries=config.max_list_scan_entries,
                           max_list_pattern_chars=config.max_list_pattern_chars,
                           max_topic_bytes=topic_bytes,
                           max_away_bytes=min(config.max_away_bytes, config.max_text_bytes),
                           max_quit_bytes=min(config.max_quit_bytes, config.max_text_bytes),
                           max_join_members=min(config.max_join_members, room_joined_capacity(
                               config.max_frame_bytes, config.max_name_chars,
                               config.max_room_name_chars, topic_bytes)),
                           max_bans_per_room=config.max_bans_per_room,
                           max_invites_per_room=config.max_invites_per_room,
                           max_invites_per_user=config.max_invites_per_user)
        self.hub = Hub(NodeInfo(name, host, port), limits, load_permille=self.load.permille)
        if config.coalesce_writes_seconds > 0:
            self.flusher.work = self.hub        # its work_done counts the deliveries
        self._watch_listeners()
        self.reactor.add_before_sleep(self.flush_pending)
        self.reactor.set_idle_poll(config.idle_poll_seconds, config.idle_poll_max_share)
        if config.irc_port >= 0 or config.irc_tls_port >= 0:
            from .irc.frontend import IrcFrontEnd
            self.irc = IrcFrontEnd(self)
            self.irc.start()
        self._schedule_tick()
        return self.address or self.tls_address

    def join_cluster(self) -> None:
        """With ``redis`` set: check Redis, claim this node's name, start announcing.

        Blocking, before the loop runs; raises ClusterStartError naming the URL and the cause.
        """
        from .broker import RedisAddress
        from .cluster import Cluster, claim_node_name
        config = self.config
        node = self.hub.node
        if not config.advertise and (self.address or self.tls_address)[0] in WILDCARD_HOSTS:
            log.warning("listening on a wildcard address: advertising %s; set --advertise "
                        "HOST:PORT to what clients should use", format_address(node.host,
                                                                               node.port))
        address = RedisAddress.parse(config.redis)
        instance = os.urandom(8).hex()
        claim_node_name(address, config.cluster_name, node.name, node.host, node.port,
                        config.node_silence_seconds, config.redis_timeout_seconds, instance)
        self.cluster = Cluster(self.reactor, config, address, self.hub, self.load.permille,
                               instance)
        self.hub.backplane = self.cluster
        self.cluster.start()

    # -- accepting -------------------------------------------------------------------------

    def _watch_listeners(self) -> None:
        if self.listener is not None:
            self.listener.setblocking(False)
            self.reactor.add_reader(self.listener.fileno(), self._on_acceptable)
        if self.tls_listener is not None and not self._tls_accept_paused:
            self.tls_listener.setblocking(False)
            self.reactor.add_reader(self.tls_listener.fileno(), self._on_tls_acceptable)
        if self.irc is not None:
            self.irc.watch()

    def _on_acceptable(self) -> None:
        self._accept(self.listener, self._adopt)

    def _on_tls_acceptable(self) -> None:
        self._accept(self.tls_listener, self._start_tls)

    def _accept(self, listener: socket.socket, adopt) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                    return
                if exc.errno in _TRANSIENT_ACCEPT:
                    continue
                log.error("accept failed: %s", exc)
                return
            self._accept_failures_logged = False
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:          # already reset by the peer
                sock.close()
                continue
            if adopt(sock, address) is False or (
                    self._tls_accept_paused and listener in self._tls_listeners()):
                return                      # that listener is paused now

    def _pause_accepting(self, exc: OSError) -> None:
        # Logged once per episode: the retries every half second would flood the log.
        level = logging.DEBUG if self._accept_failures_logged else logging.WARNING
        log.log(level, "cannot accept (%s) with %d connections open; pausing accepts "
                "for %.1fs", exc.strerror, len(self.connections), ACCEPT_PAUSE_SECONDS)
        self._accept_failures_logged = True
        self._accept_paused = True
        irc_listeners = self.irc.listeners if self.irc is not None else ()
        for listener in (self.listener, self.tls_listener, *irc_listeners):
            if listener is not None:
                self.reactor.remove_reader(listener.fileno())
        self.reactor.call_later(ACCEPT_PAUSE_SECONDS, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._accept_paused and not self.shutting_down:
            self._accept_paused = False
            self._watch_listeners()

    def _adopt(self, sock: socket.socket, address, tls=None, kind=Connection) -> None:
        """Drive an accepted socket as a ``kind`` of connection (native, IRC)."""
        key = self._address_key(address)
        connection = kind(self, sock, address, key, tls)
        self.connections.add(connection)
        self.stats.connections_accepted += 1
        if tls is not None:
            self.stats.tls_connections += 1
        if key is not None:
            self.per_address.add(key)
        config = self.config
        if len(self.connections) > config.max_clients:
            log.warning("refusing %s: %d clients is the limit", connection.peer,
                        config.max_clients)
            connection.send_error(ErrorCode.SERVER_FULL,
                                  f"server is full ({config.max_clients} clients)",
                                  fatal=True)
            self.stats.drop("server_full")
            connection.close(Reason.DISCONNECTED)
        elif (key is not None
              and self.per_address.count(key) > config.max_connections_per_address):
            log.info("refusing %s: %d connections from %s is the limit", connection.peer,
                     config.max_connections_per_address, key)
            connection.send_error(ErrorCode.TOO_MANY_CONNECTIONS,
                                  f"too many connections from your address "
                                  f"({config.max_connections_per_address})", fatal=True)
            self.stats.drop("per_address_limit")
            connection.close(Reason.DISCONNECTED)
        elif tls is not None and tls.has_early_data:
            connection.on_readable()        # what came with the handshake's last message
        elif tls is not None and tls.held_bytes:
            connection.process_input()      # counts a record begun with that message

    # -- TLS handshakes --------------------------------------------------------------------

    def _start_tls(self, sock: socket.socket, address, kind=Connection) -> None:
        # Handshakes are bounded like clients: nothing can be said to a client without TLS
        # yet, so past the limit the socket is just closed.
        if len(self.tls_handshakes) >= self.config.max_clients:
            log.warning("refusing %s: %d TLS handshakes in progress is the limit",
                        format_address(*address[:2]), self.config.max_clients)
            self.stats.drop("server_full")
            sock.close()
            return
        # A handshake counts toward its address's connections: past the limit, the socket
        # is closed the same way (there is no channel for TOO_MANY_CONNECTIONS yet).
        key = self._address_key(address)
        if key is not None:
            if self.per_address.count(key) >= self.config.max_connections_per_address:
                log.info("refusing TLS from %s: %d connections from %s is the limit",
                         format_address(*address[:2]),
                         self.config.max_connections_per_address, key)
                self.stats.drop("per_address_limit")
                sock.close()
                return
            self.per_address.add(key)
        handshake = TlsHandshake(self.reactor, sock, address, self.tls_context,
                                 self.config.tls_handshake_timeout_seconds,
                                 lambda shake, tls: self._tls_established(shake, tls, kind),
                                 self._tls_failed, self._hold_handshake_input)
        self.tls_handshakes.add(handshake)
        if key is not None:
            self._handshake_keys[handshake] = key
        if len(self.tls_handshakes) >= self.config.max_tls_handshakes:
            # Each holds about 48 KiB of OpenSSL state: more wait in the listen backlog
            # until one ends, rather than grow the server by 4.7 GB per 100 000.
            log.warning("%d TLS handshakes in progress: accepting more once one ends",
                        len(self.tls_handshakes))
            self._tls_accept_paused = True
            for listener in self._tls_listeners():
                self.reactor.remove_reader(listener.fileno())
            return False
        return True

    def _tls_listeners(self) -> tuple:
        irc_tls = self.irc.tls_listener if self.irc is not None else None
        return tuple(sock for sock in (self.tls_listener, irc_tls) if sock is not None)

    def _hold_handshake_input(self, grown: int) -> bool:
        """What TLS handshakes received counts toward ``max_held_input_bytes`` until they
        end; False once the total is past it."""
        self.held_input_bytes += grown
        return grown <= 0 or self.held_input_bytes <= self.config.max_held_input_bytes

    def _release_handshake(self, handshake: TlsHandshake) -> None:
        self.tls_handshakes.discard(handshake)
        key = self._handshake_keys.pop(handshake, None)
        if key is not None:
            self.per_address.remove(key)
        if (self._tls_accept_paused
                and len(self.tls_handshakes) < self.config.max_tls_handshakes):
            self._tls_accept_paused = False
            if not self._accept_paused and not self.shutting_down:
                self._watch_listeners()

    def _tls_established(self, handshake: TlsHandshake, transport, kind=Connection) -> None:
        # The client is a Connection (of ``kind``: native, IRC) from now on.
        self._release_handshake(handshake)
        self._adopt(handshake.sock, handshake.address, transport, kind)

    def _tls_failed(self, handshake: TlsHandshake, drop: str | None) -> None:
        # Its socket is closed already.
        self._release_handshake(handshake)
        if drop is not None:
            self.stats.drop(drop)
        if self.shutting_down and not self.connections and not self.tls_handshakes:
            self.reactor.stop()

    def full_for_a_new_session(self) -> bool:
        """Sessions held for a resume count toward ``max_clients`` too: each holds a name
        and memberships, and dropping connections on purpose must not make room for more.
        (A Resume adds no session, so it is never refused for this.)"""
        return len(self.connections) + self.hub.held_sessions > self.config.max_clients

    def _address_key(self, address) -> str | None:
        """What the per-address limit counts ``address`` under; None when it is exempt."""
        host = address[0]
        return None if host in self.exempt else address_key(host)

    def forget(self, connection: Connection) -> None:
        """Called by a connection once it is closed."""
        self.connections.discard(connection)
        self.stats.backlogged.discard(connection)
        if connection.tls is not None:
            self.stats.tls_connections -= 1
        if connection.address_key is not None:
            self.per_address.remove(connection.address_key)
        if self.shutting_down and not self.connections:
            self.reactor.stop()

    # -- the per-turn work -----------------------------------------------------------------

    def flush_pending(self) -> None:
        """Write the connections that got output: one write each, ``max_turn_writes`` a
        turn at most (chatcore.connection.flushing)."""
        self.flusher.flush()

    def _tick(self) -> None:
        now = time.monotonic()
        late_seconds = now - self._tick_due
        enforce_timeouts = late_seconds < self._tick_seconds
        if not enforce_timeouts:
            log.warning("the loop stalled for %.3fs; idle timeouts wait for the next tick",
                        late_seconds)
        if self._sweep is not None:
            self._sweep.stop()
        self._sweep = Sweep(self.reactor, self.connections, now, enforce_timeouts,
                            self.config.max_timeouts_per_tick)
        self._sweep.run()
        if not self.shutting_down:
            self._expire_detached()
            if self.memory.tick(self.held_input_peak, self.held_input_bytes):
                self.held_input_peak = self.held_input_bytes
            self._schedule_tick()

    def _expire_detached(self) -> None:
        if self.hub.expire_detached(EXPIRE_BATCH) and not self.shutting_down:
            self.reactor.call_soon(self._expire_detached)

    def _schedule_tick(self) -> None:
        self._tick_due = time.monotonic() + self._tick_seconds
        self.reactor.call_later(self._tick_seconds, self._tick)

    # -- stopping --------------------------------------------------------------------------

    def shutdown(self, signum: int | None = None) -> None:
        """Tell every client, flush within the grace period, then stop the reactor.

        A second call (a second signal) stops at once.
        """
        if self.shutting_down:
            log.warning("second stop request: closing %d connections now",
                        len(self.connections))
            self._abort_all()
            return
        self.shutting_down = True
        log.info("shutting down: telling %d clients", len(self.connections))
        if self.cluster is not None:
            self.cluster.leave()
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                self.reactor.remove_fd(listener.fileno())
                listener.close()
        self.listener = self.tls_listener = None
        if self.irc is not None:
            self.irc.stop()
        for handshake in list(self.tls_handshakes):
            handshake.fail("server shutting down during the TLS handshake", logging.DEBUG)
        for connection in list(self.connections):
            connection.send_error(ErrorCode.SERVER_SHUTDOWN, "server is shutting down",
                                  fatal=True)
            connection.close(Reason.SERVER_SHUTDOWN)
        if not self.connections:
            self.reactor.stop()
        else:
            self.reactor.call_later(self.config.shutdown_grace_seconds, self._abort_all)

    def _abort_all(self) -> None:
        if self.connections:
            log.warning("closing %d connections that did not finish in time",
                        len(self.connections))
        for connection in list(self.connections):
            connection.abort(Reason.SERVER_SHUTDOWN)
        self.reactor.stop()



class LoadMeter:
    """CPU this process used, in permille of one core, over the last period (>= 1 s)."""

    MIN_PERIOD_SECONDS = 1.0            # shorter periods measure scheduler noise

    def __init__(self):
        self._wall = time.monotonic()
        self._cpu = time.process_time()
        self._permille = 0

    def permille(self) -> int:
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._wall >= self.MIN_PERIOD_SECONDS:
            self._permille = min(int((cpu - self._cpu) / (wall - self._wall) * 1000), 0xFFFF)
            self._wall, self._cpu = wall, cpu
        return self._permille


def advertised_address(config: ServerConfig, bound: tuple) -> tuple[str, int]:
    """What server lists tell clients to connect to: ``advertise`` if set, else the bound
    address; a wildcard bind is replaced by this machine's outward address (never 0.0.0.0)."""
    if config.advertise:
        return parse_host_port(config.advertise, "advertise")
    host, port = bound[:2]
    if host not in WILDCARD_HOSTS:
        return host, port
    return _outward_address(socket.AF_INET6 if ":" in host else socket.AF_INET), port


def _outward_address(family: int) -> str:
    """The local address of the route to the outside (a UDP connect sends no packet)."""
    probe = ("2001:db8::1", 9) if family == socket.AF_INET6 else ("192.0.2.1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)
            return sock.getsockname()[0]
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket for ``host`` (a name, an IPv4 or IPv6 address, brackets allowed);
    ``::`` listens on IPv4 too where the system allows it."""
    host = host.strip("[]")
    if host == "::" and socket.has_dualstack_ipv6():
        return socket.create_server((host, port), family=socket.AF_INET6, backlog=backlog,
                                    dualstack_ipv6=True)
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
    return socket.create_server(sockaddr[:2], family=family, backlog=backlog)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
