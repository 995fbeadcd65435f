"""Server configuration: defaults, then a TOML file, then CHATCORE_* variables, then flags.

Every limit is here with its unit in the name and the reason for its default. Each setting is
declared with ``setting(default, "what it means")``: the meaning is its ``--help`` text (and
the README table's "meaning" column says the same); the reason for a default is a comment.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass

from . import limits

ENV_PREFIX = "CHATCORE_"
# A write-coalescing window is a delay every message may get: more than this is a mistake.
MAX_COALESCE_WRITES_SECONDS = 0.1
# An idle poll burns the core for its whole length: more than this is a mistake (a
# busy-waiting server with nothing to do).
MAX_IDLE_POLL_SECONDS = 0.01
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setting(default, help: str):
    """A ServerConfig field: its default and a one-line meaning (shown by ``--help``)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", "address to listen on (IPv6 literals work: ::1)")
    port: int = setting(7878, "TCP port to listen on; 0 picks a free one")
    irc_port: int = setting(-1, "TCP port of the IRC front end (docs/irc.md); -1: off, "
                                "0: a free one")
    irc_tls_port: int = setting(-1, "TCP port of the IRC front end over TLS (6697 is usual), "
                                    "with tls_cert/tls_key; -1: off, 0: a free one")
    server_name: str = setting("", "the name shown in server lists; empty: chatcore@HOST:PORT")
    log_level: str = setting("INFO", "least severe log level shown: " + ", ".join(LOG_LEVELS))
    # Thousands of clients may connect at once; a backlog of 10 dropped 700 of 5000 in a burst.
    backlog: int = setting(4096, "listen backlog: connections the kernel queues before accept")
    max_clients: int = setting(100_000, "open connections; more get SERVER_FULL")
    max_frame_bytes: int = setting(65536, "largest frame a client may send, in bytes")
    max_text_bytes: int = setting(8192, "largest message text, in UTF-8 bytes")
    max_name_chars: int = setting(32, "longest user name, in characters")
    max_room_name_chars: int = setting(64, "longest room name, in characters")
    max_rooms_per_user: int = setting(100, "rooms one user may be in at once")
    # Rooms on the whole server: each costs about 1 KiB, so the default bounds them near
    # 100 MiB (a thousand users at max_rooms_per_user could otherwise make 100 000 more).
    max_rooms: int = setting(100_000, "rooms on the server; a new room beyond it gets "
                                      "SERVER_ROOM_LIMIT")
    # How long the name, rooms and chats of a user whose connection dropped uncleanly
    # (reset, timeout, slow reader) wait for it to come back with its resume token: covers
    # a client's reconnect backoff of 1+2+4+8+16 s with room to spare, while others see a
    # gone user linger less than a minute. 0 turns resuming after a drop off.
    resume_grace_seconds: float = setting(45.0, "after an unclean drop, how long a user's "
                                                "name, rooms and chats wait for a Resume "
                                                "with its token; 0: off")
    # One list reply (users, rooms, members): 200 entries are about 10 KiB and cost well
    # under a millisecond to build; a client pages for more.
    max_list_page_entries: int = setting(200, "entries in one user, member or room list "
                                              "reply; clients page for more")
    # Names one list request may examine while filtering by a pattern (a glob match costs
    # about 0.7 us a name, so about 1 ms); a sparse pattern returns a short page and a
    # cursor instead of scanning 100 000 names in one turn.
    max_list_scan_entries: int = setting(1000, "names one list request examines while "
                                               "filtering by a pattern")
    max_list_pattern_chars: int = setting(100, "longest list filter pattern (glob), in "
                                               "characters")
    # Texts other than messages; each is also bounded by max_text_bytes.
    # IRC servers' TOPICLEN is 300-390: a topic fits one screen line.
    max_topic_bytes: int = setting(390, "longest room topic, in UTF-8 bytes")
    # IRC servers' AWAYLEN is 160-390.
    max_away_bytes: int = setting(200, "longest away message, in UTF-8 bytes")
    # A goodbye, not a message (IRC's QUITLEN is about 300).
    max_quit_bytes: int = setting(200, "longest quit message, in UTF-8 bytes")
    # Like IRC's NAMES on join; fewer when max_frame_bytes cannot hold them.
    max_join_members: int = setting(1000, "room members listed to a joiner; bigger rooms "
                                          "are paged with ListUsersPage")
    # IRC servers allow 50-100 bans (MAXLIST); each is checked on every join.
    max_bans_per_room: int = setting(50, "bans (+b masks) one room holds; more are refused")
    max_invites_per_room: int = setting(100, "pending invitations of one room; past it the "
                                             "oldest goes")
    max_invites_per_user: int = setting(100, "invitations from other cluster nodes one user "
                                             "holds; past it the oldest goes")
    # Output queued for a client that stops reading; past it the client is disconnected so
    # it cannot hold the server's memory hostage (Redis's client-output-buffer-limit).
    max_output_bytes: int = setting(1024 * 1024, "output queued for one client before it is "
                                                 "disconnected as a slow reader, in bytes")
    # One recv per readable socket per turn.
    read_chunk_bytes: int = setting(65536, "bytes read from one socket per loop turn")
    ping_interval_seconds: float = setting(5.0, "how often each client is pinged (RTT samples)")
    idle_timeout_seconds: float = setting(30.0, "a client that sends nothing (not even a pong) "
                                                "this long is dropped")
    handshake_timeout_seconds: float = setting(10.0, "time to send a valid Hello after "
                                                     "connecting")
    # Connections the housekeeping tick (about one a second) closes for a handshake or idle
    # timeout: 100 000 clients of one network going silent together would otherwise all be
    # told, closed and taken out of their rooms in one tick, seconds of work; 1 000 a tick
    # are closed 50 a loop turn (1-3 ms each) and 100 000 within two minutes.
    max_timeouts_per_tick: int = setting(1000, "connections closed by handshake and idle "
                                               "timeouts per housekeeping tick (about one "
                                               "a second); the rest wait a tick")
    shutdown_grace_seconds: float = setting(2.0, "time to flush goodbyes on SIGINT/SIGTERM")
    # -- the cluster (docs/cluster.md); all unused without ``redis`` --
    redis: str = setting("", "redis://HOST:PORT/DB (or unix:///PATH?db=N): join the "
                             "cluster on that Redis; empty: run alone")
    advertise: str = setting("", "HOST:PORT that server lists tell clients to use; "
                                 "empty: the bound address")
    cluster_name: str = setting("chatcore", "prefix of the cluster's Redis keys and channels")
    # Announcements every 2 s; 3 missed ones (6 s) drop a node, so a dead node's users are
    # gone within the 10 s with time to spare.
    node_announce_seconds: float = setting(2.0, "how often a node announces itself and "
                                                "samples its RTT to the others")
    node_silence_seconds: float = setting(6.0, "a node not heard from this long is dropped")
    redis_timeout_seconds: float = setting(5.0, "a Redis request unanswered this long "
                                                "rebuilds the link")
    # Commands queued for a Redis that does not read; past it the link is rebuilt, like an
    # outage, instead of the node's memory growing without end.
    redis_max_output_bytes: int = setting(64 * 1024 * 1024, "commands queued for a Redis "
                                                            "that does not read, in bytes, "
                                                            "before the link is rebuilt")
    # TLS: a second listener beside the plain one (README, "TLS").
    tls_port: int = setting(-1, "TCP port of the TLS listener, beside the plain one; "
                                "-1: off, 0: a free one")
    tls_cert: str = setting("", "PEM file: the server's certificate chain, its own first")
    tls_key: str = setting("", "PEM file: the certificate's private key, unencrypted")
    tls_only: bool = setting(False, "no plain listener: port is not opened, only tls_port")
    # A handshake is one or two round trips; a peer that has not finished it by then is stuck
    # or hostile, and holds a socket and its TLS state until dropped.
    tls_handshake_timeout_seconds: float = setting(10.0, "time to finish the TLS handshake "
                                                         "after connecting")
    # A TLS handshake in progress holds about 48 KiB of OpenSSL state (measured), so 100 000
    # silent ones would take 4.7 GB; 1 000 are 47 MiB and, at a handshake's one or two round
    # trips, admit more handshakes a second than one core can compute (1-2 ms each). Past
    # it, new TLS connections wait in the listen backlog until a handshake ends.
    max_tls_handshakes: int = setting(1000, "TLS handshakes in progress at once; more wait "
                                            "in the listen backlog")
    # Fair turns: what one connection's input may cost per loop turn, in work units (one per
    # request, plus one per delivery queued and per list entry built); the rest waits for the
    # next turn with its reading paused (Redis's per-client budgets). 20 000 units are about
    # 2 ms of work compiled and 7 ms on the fallback, so no client's turn delays the others'.
    max_turn_work_units: int = setting(20_000, "work one connection's input may cause per loop "
                                                 "turn (1 per request, 1 per delivery, 20 per "
                                                 "list entry); the rest waits a turn")
    # A sender's messages to a room shared with other nodes come back from Redis before
    # their Acks go out: up to this many are published at once (their replies released in
    # request order), so a pipelining client is not held to one Redis round trip each.
    max_room_sends_in_flight: int = setting(64, "messages to a room shared with other cluster "
                                                "nodes one connection may have published and "
                                                "not yet back from Redis; past it, its input "
                                                "waits")
    # The events of one loop turn to one shared room leave in one PUBLISH (a room batch,
    # docs/cluster.md); one past this size is published at once and a new one begun. 64 KiB
    # is ~500 messages of 100 bytes: the per-message cost is gone long before.
    room_batch_max_bytes: int = setting(65536, "a room batch (the events of one loop turn "
                                               "to one room shared with other cluster "
                                               "nodes, one PUBLISH) is published once this "
                                               "big; 0: one PUBLISH per event")
    # Writes (one per connection with output) per loop turn: one message to a room of 1 001
    # is 1 001 writes, 5-15 us each on loopback, so without a bound a big room's turn lasts
    # as long as the room is big. 256 writes are 1-4 ms; the rest waits a turn (newly
    # pending output first, so a bystander's reply is not queued behind a fan-out), and a
    # sender past its fair turn continues once its output is written (Redis bounds writes
    # per event the same way).
    max_turn_writes: int = setting(256, "connections written per loop turn; more wait for "
                                        "the next turn, new output first")
    # A write costs ~5 us of kernel time on loopback whether it carries one message or ten.
    # Once a flush carries several messages per connection the server is busy, and holding
    # the next flush until this long after that one began lets more messages share each
    # write: at 1 M deliveries/s into a room of 100, 955 -> 655 ns of server CPU per
    # delivery and p90 3.6 -> 1.9 ms, p50 0.8 -> 1.2 ms (1.2 ms: no better). A quiet
    # server's flushes carry one message each and are never held (100 k/s: unchanged); no
    # message waits longer than this for it.
    coalesce_writes_seconds: float = setting(0.001, "when busy, the next write flush waits "
                                                    "until this long after the last one "
                                                    "began, so messages share writes; "
                                                    "0: off")
    # A process that sleeps gives up its core; on a virtual machine whose virtual CPU then
    # halts, getting it back after a gap longer than the host's halt polling is the host's
    # wake-up (docs/benchmarks.md, latency). Off by default: it spends CPU to save that
    # wait, and whether it pays depends on the machine.
    idle_poll_seconds: float = setting(0.0, "before the loop sleeps, poll for input up to "
                                            "this long (and spin through write holds this "
                                            "short) instead of giving up the core; 0: off")
    # The polls' CPU, bounded: a SCHED_FIFO server past 95 % of a second is stopped by the
    # kernel for the rest of it (an unbounded poll did that here).
    idle_poll_max_share: float = setting(0.25, "the largest share of wall time the idle "
                                               "polls may take (0..1)")
    # Deliveries per connection written that count as busy: a quiet room gets one message
    # per flush, a saturated one gets several.
    coalesce_writes_min_frames: int = setting(4, "deliveries per connection written in one "
                                                 "flush that turn write coalescing on for "
                                                 "the next flush")
    # Flood control, one token bucket per connection for chat messages and one for other
    # requests and malformed frames (pongs and Quit are free). Past the burst, input is delayed, not
    # dropped ("fake lag", as IRC servers do). IRC servers allow a few lines at once, then
    # about one a second; a paste of ten lines passes here, and a fast typist sends well under
    # two messages a second.
    flood_chat_burst_messages: int = setting(10, "chat messages a client may send at once "
                                                  "before flood control delays it")
    flood_chat_messages_per_second: float = setting(2.0, "sustained chat rate; faster input "
                                                         "is delayed, not dropped")
    # A client starting up joins its rooms and asks for lists at once; then requests are rare.
    flood_burst_requests: int = setting(20, "other requests (joins, lists, chat opens) a "
                                            "client may send at once")
    flood_requests_per_second: float = setting(5.0, "sustained rate of other requests and "
                                                    "malformed frames")
    # A client kept behind its allowance this long without catching up is disconnected
    # (EXCESS_FLOOD): a person's paste catches up in seconds, a flood never does.
    max_flood_lag_seconds: float = setting(30.0, "a client kept behind its allowance this "
                                                  "long is disconnected (EXCESS_FLOOD)")
    # Open connections per IPv4 address or IPv6 /64: IRC networks allow a handful of "clones";
    # a household or an office behind one NAT fits in 16.
    max_connections_per_address: int = setting(16, "connections from one IPv4 address or "
                                                    "IPv6 /64 (TOO_MANY_CONNECTIONS)")
    # Comma-separated addresses and CIDR networks exempt from flood control and the
    # per-address limit (bots, bridges, benchmarks), e.g. "127.0.0.1, 10.0.0.0/8, ::1".
    limit_exempt: str = setting("", "comma-separated addresses and CIDRs exempt from flood "
                                   "control and the per-address limit")
    # All connections' received but unhandled input together (partial frames, and requests
    # waiting for a fair turn or a flood delay); past it, a connection that would hold more is
    # disconnected (INPUT_BUDGET), so hostile clients cannot grow the server without bound.
    max_held_input_bytes: int = setting(64 * 1024 * 1024, "received but unhandled input of "
                                                          "all clients together, in bytes; "
                                                          "past it, a read drops that "
                                                          "client (INPUT_BUDGET)")
    # Freed receive buffers stay in the process (glibc's heap) until trimmed; the trim walks
    # the heap, so it waits for a drop this large (docs/hotpath.md, "Memory").
    trim_memory_after_bytes: int = setting(16 * 1024 * 1024, "when the held input has fallen "
                                                             "this far below its peak, the "
                                                             "next tick gives freed memory "
                                                             "back to the system; 0: never")
    # -- the Prometheus metrics page (docs/metrics.md), off unless metrics_port is set --
    metrics_port: int = setting(-1, "port of the Prometheus page http://HOST:PORT/metrics; "
                                    "-1: off, 0: a free one")
    metrics_host: str = setting("", "address of the metrics page; empty: the same as host")
    # Prometheus scrapes every few seconds over one kept-alive connection; one that sends
    # no request for this long is idle or stuck, and holds a socket.
    metrics_timeout_seconds: float = setting(30.0, "a metrics page connection idle this long "
                                                   "is closed")
    # Scrapers are few (Prometheus, an operator's curl); a stray client cannot hold more.
    max_metrics_connections: int = setting(16, "metrics page connections open at once; "
                                               "more are closed on arrival")
    # h11's default: a GET with its headers is a few hundred bytes.
    max_metrics_request_bytes: int = setting(16384, "largest HTTP request head the metrics "
                                                    "page reads, in bytes (larger: 431)")
    # CAP, NICK, USER, PASS and a few retries need under 10; more is a client that never
    # registers and keeps the server busy parsing.
    irc_max_registration_lines: int = setting(30, "lines an IRC client may send before it is "
                                                  "registered; more closes the connection")
    # IRC's WHOWAS history (docs/irc.md): solanum keeps a few entries per nick too; the
    # total bounds this node's memory (about 200 bytes an entry), the age both stores.
    whowas_per_nick: int = setting(8, "WHOWAS entries kept per nick (node-local, and per "
                                      "nick in Redis in a cluster); 0: keep no history")
    whowas_max_entries: int = setting(10000, "WHOWAS entries this node keeps in all "
                                             "(the oldest go first)")
    # A channel CTCP or a SETNAME reaches each user of another node on its own user channel
    # (one PUBLISH each): this bounds what one such line costs.
    irc_max_remote_recipients: int = setting(1000, "users of other nodes one channel CTCP "
                                                   "or SETNAME is sent to; the rest are "
                                                   "not told")
    whowas_seconds: int = setting(86400, "how long a WHOWAS entry is kept, in seconds (the "
                                         "TTL of a nick's history in Redis)")

    def validate(self) -> None:
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, "
                             f"not {self.log_level!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        self._validate_tls()
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port {self.metrics_port} is not in 0..65535 "
                             f"(or -1: off)")
        if self.metrics_port == self.port != 0 and self.metrics_host in ("", self.host):
            raise ValueError(f"metrics_port and port are both {self.port}: use two ports")
        if not -1 <= self.irc_port <= 65535:
            raise ValueError(f"irc_port {self.irc_port} is not in -1..65535")
        if not -1 <= self.irc_tls_port <= 65535:
            raise ValueError(f"irc_tls_port {self.irc_tls_port} is not in -1..65535")
        if self.irc_tls_port == self.irc_port > 0:
            raise ValueError(f"irc_tls_port and irc_port are both {self.irc_port}: "
                             f"use two ports")
        if self.max_frame_bytes < 64:
            raise ValueError("max_frame_bytes must be at least 64")
        if self.max_text_bytes > self.max_frame_bytes - 64:
            raise ValueError("max_text_bytes must leave 64 bytes of a frame for the header")
        if self.max_join_members < 0:
            raise ValueError("max_join_members must not be negative")
        for name in ("max_bans_per_room", "max_invites_per_room", "max_invites_per_user"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        limits.parse_networks(self.limit_exempt)
        if not 0 <= self.idle_poll_seconds <= MAX_IDLE_POLL_SECONDS:
            raise ValueError(f"idle_poll_seconds must be in 0..{MAX_IDLE_POLL_SECONDS:g} "
                             f"(it busy-waits that long every quiet turn)")
        if not 0 <= self.idle_poll_max_share <= 1:
            raise ValueError("idle_poll_max_share must be in 0..1")
        if not 0 <= self.coalesce_writes_seconds <= MAX_COALESCE_WRITES_SECONDS:
            raise ValueError(f"coalesce_writes_seconds must be in 0..{MAX_COALESCE_WRITES_SECONDS:g}"
                             f" (it delays messages)")
        for name in ("max_turn_work_units", "max_room_sends_in_flight", "max_turn_writes",
                     "coalesce_writes_min_frames",
                     "max_tls_handshakes", "max_timeouts_per_tick", "flood_chat_burst_messages",
                     "flood_chat_messages_per_second", "flood_burst_requests",
                     "flood_requests_per_second",
                     "max_flood_lag_seconds", "max_connections_per_address",
                     "max_held_input_bytes", "ping_interval_seconds", "idle_timeout_seconds",
                     "handshake_timeout_seconds", "max_output_bytes", "read_chunk_bytes",
                     "max_name_chars", "max_room_name_chars", "max_clients", "backlog",
                     "node_announce_seconds", "node_silence_seconds", "redis_timeout_seconds",
                     "redis_max_output_bytes", "max_rooms", "max_list_page_entries",
                     "max_list_scan_entries", "max_list_pattern_chars", "max_topic_bytes",
                     "max_away_bytes", "max_quit_bytes", "metrics_timeout_seconds",
                     "max_metrics_connections", "max_metrics_request_bytes",
                     "irc_max_registration_lines", "irc_max_remote_recipients"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.room_batch_max_bytes <= 1 << 20:
            # 1 MiB of frames of at least 25 bytes stays within a batch's u16 count.
            raise ValueError("room_batch_max_bytes must be in 0..1048576")
        if self.max_list_page_entries > 0xFFFF:
            raise ValueError("max_list_page_entries must be at most 65535 (a u16 count)")
        if self.trim_memory_after_bytes < 0:
            raise ValueError("trim_memory_after_bytes must not be negative")
        if self.whowas_per_nick < 0 or self.whowas_max_entries < 0:
            raise ValueError("whowas_per_nick and whowas_max_entries must not be negative")
        if self.whowas_seconds <= 0:
            raise ValueError("whowas_seconds must be positive")
        if self.resume_grace_seconds < 0:
            raise ValueError("resume_grace_seconds must not be negative")
        if self.node_silence_seconds < 2 * self.node_announce_seconds:
            raise ValueError("node_silence_seconds must be at least twice "
                             "node_announce_seconds, or one late announcement drops a node")
        if self.advertise:
            parse_host_port(self.advertise, "advertise")
        if self.redis:
            from .broker import RedisAddress    # only a cluster node imports hiredis
            RedisAddress.parse(self.redis)
        if not self.cluster_name or any(c in self.cluster_name for c in ": \t\r\n"):
            raise ValueError(f"cluster_name {self.cluster_name!r} must be non-empty, without "
                             f"':' or spaces")

    def _validate_tls(self) -> None:
        if not -1 <= self.tls_port <= 65535:
            raise ValueError(f"tls_port {self.tls_port} is not in 0..65535 (or -1: off)")
        if self.tls_port < 0 and self.tls_only:
            raise ValueError("tls_only is set but tls_port is not: set tls_port to listen "
                             "for TLS")
        if self.tls_port < 0 and self.irc_tls_port < 0:
            if self.tls_cert or self.tls_key:
                raise ValueError("tls_cert/tls_key is set but tls_port is not: set tls_port "
                                 "(or irc_tls_port) to listen for TLS")
            return
        port_name = "tls_port" if self.tls_port >= 0 else "irc_tls_port"
        if not self.tls_cert:
            raise ValueError(f"{port_name} is set but tls_cert is not: give the server's "
                             f"certificate chain (PEM)" +
                             (f" for tls_key {self.tls_key}" if self.tls_key else ""))
        if not self.tls_key:
            raise ValueError(f"tls_cert {self.tls_cert} is set but tls_key is not: give the "
                             f"file with its private key")
        if self.tls_port == self.port != 0 and not self.tls_only:
            raise ValueError(f"tls_port and port are both {self.port}: use two ports")
        if self.tls_handshake_timeout_seconds <= 0:
            raise ValueError("tls_handshake_timeout_seconds must be positive")


WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; never a wildcard host (clients cannot connect to it)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{what} {value!r} must be HOST:PORT")
    if host in WILDCARD_HOSTS:
        raise ValueError(f"{what} {value!r}: clients cannot connect to a wildcard address")
    return host, int(port)


FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _convert(name: str, value, *, from_text: bool):
    """``value`` as the setting's type. TOML values must have it already; environment and
    flag values are text to parse. Raises ValueError naming the setting."""
    kind = type(FIELDS[name].default)
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in _TRUE + _FALSE:
                    return text.lower() in _TRUE
            elif kind in (int, float):
                return kind(text)
            else:
                return value
        except ValueError:
            pass
    elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind in (str, bool) and type(value) is kind:
        return value
    raise ValueError(f"{name} must be {_KIND_NAMES[kind]}, not {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config field (``max_output_bytes`` -> ``--max-output-bytes``)."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML file with these settings (env {ENV_PREFIX}CONFIG)")
    for name, spec in FIELDS.items():
        kind = type(spec.default)
        # A switch (``--foo``) may stand alone or take a value (``--foo false``).
        switch = {"nargs": "?", "const": "true"} if kind is bool else {}
        meaning = spec.metadata.get("help", "").replace("%", "%%")   # argparse formats help
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            metavar=kind.__name__.upper(), **switch,
                            help=f"{meaning} (default {spec.default!r}; "
                                 f"env {ENV_PREFIX}{name.upper()})")


def load(args: argparse.Namespace | None = None, environ=os.environ) -> ServerConfig:
    """Defaults < TOML file (``--config`` or CHATCORE_CONFIG) < environment < flags.

    Raises ValueError (or OSError for an unreadable file) with a one-line message that
    names the setting and where its value came from.
    """
    values: dict = {}
    path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        values.update(_read_toml(path))
    for name in FIELDS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _from(ENV_PREFIX + name.upper(), name, raw, from_text=True)
    if args is not None:
        for name in FIELDS:
            raw = getattr(args, name, None)
            if raw is not None:
                flag = "--" + name.replace("_", "-")
                values[name] = _from(flag, name, raw, from_text=True)
    config = ServerConfig(**values)
    config.validate()
    return config


def _read_toml(path: str) -> dict:
    with open(path, "rb") as f:
        try:
            table = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    table = table.get("server", table)
    values = {}
    for name, value in table.items():
        if name not in FIELDS:
            raise ValueError(f"{path}: unknown setting {name!r}")
        values[name] = _from(path, name, value, from_text=False)
    return values


def _from(source: str, name: str, value, *, from_text: bool):
    try:
        return _convert(name, value, from_text=from_text)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
