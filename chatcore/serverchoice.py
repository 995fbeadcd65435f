"""Which of several servers to use: the lowest RTT, and a move only when another one is
clearly and consistently better. Sans-IO: it is told RTT samples, failures and the time, and
answers; the sockets (probes, the chat connection) belong to the client that uses it, so its
rules are tested with a fake clock (tests/test_client_pick_policy.py).

The moving rule is Tailscale's for its DERP home region: stay, unless another server's RTT
is below ``move_ratio`` (2/3) of the current one's. Here that must also hold for
``move_sustain_seconds`` without a break, over at least ``move_min_samples`` measurements of
the other server, and save at least ``move_min_gain_seconds``: a move costs a rejoin of every
room and chat, so noise and sub-millisecond LAN differences never cause one. A server's RTT
is the median of its last ``RTT_SAMPLES_KEPT`` measurements, so one slow sample moves nothing
either way.
"""
from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

# Tailscale's DERP rule: another region must be 1/3 faster than the current home to win it.
MOVE_RATIO = 2 / 3
# Better for a minute and a half, over at least three measurements: a change of route, not
# a blip.
MOVE_SUSTAIN_SECONDS = 90.0
MOVE_MIN_SAMPLES = 3
# A 2 ms server against a 3 ms one passes the ratio; the gain is not worth a move.
MOVE_MIN_GAIN_SECONDS = 0.005
# Each other server is measured this often (a TCP connect and 3 pings, jittered by 20 %).
# A probe costs a server about 0.25 ms of CPU (2 000 probes measured on a loaded 2-core
# machine): 10 000 clients of a 3-node cluster cost each node about 5 % of a core.
PROBE_INTERVAL_SECONDS = 30.0
PROBE_JITTER = 0.2
RTT_SAMPLES_KEPT = 5
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class ChoicePolicy:
    probe_interval_seconds: float = PROBE_INTERVAL_SECONDS   # 0: measure once, never move
    move_ratio: float = MOVE_RATIO
    move_sustain_seconds: float = MOVE_SUSTAIN_SECONDS
    move_min_samples: int = MOVE_MIN_SAMPLES
    move_min_gain_seconds: float = MOVE_MIN_GAIN_SECONDS
    samples_kept: int = RTT_SAMPLES_KEPT


@dataclass(eq=False)
class Server:
    """One server the client knows: from its configuration or from a server list."""
    host: str
    port: int
    name: str = ""                        # the node's name, once a server list or Welcome says
    configured: bool = False              # given by the user (never forgotten)
    samples: collections.deque = field(default_factory=collections.deque)
    failed_at: float | None = None        # the last failed connect or probe, until a success
    better_since: float | None = None     # continuously better than the current since then
    better_samples: int = 0               # measurements of this server during that time
    node_rtt_seconds: float | None = None  # from the current node to it (its server list)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def rtt(self) -> float | None:
        """The median of the kept measurements, in seconds; None before the first."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def label(self) -> str:
        return self.name or host_port(self.host, self.port)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``[V6]:PORT`` or ``[V6]`` as (host, port); ValueError if bad."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"not HOST:PORT: {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:                       # a bare IPv6 address
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port number in {text!r}") from None
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range 1-65535 in {text!r}")
    return host, port


class ServerChoice:
    """The known servers, their RTTs, the current one and whether to move."""

    def __init__(self, policy: ChoicePolicy = ChoicePolicy(), *,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self.servers: list[Server] = []
        self.current: Server | None = None

    # -- what is known ---------------------------------------------------------------------

    def add(self, host: str, port: int, name: str = "", *, configured: bool = True) -> Server:
        """The server at ``host:port``, added if new."""
        server = self.find(host, port)
        if server is None:
            server = Server(host, port, name, configured,
                            collections.deque(maxlen=self.policy.samples_kept))
            self.servers.append(server)
        else:
            server.configured = server.configured or configured
            server.name = server.name or name
        return server

    def find(self, host: str, port: int) -> Server | None:
        for server in self.servers:
            if server.port == port and server.host.casefold() == host.casefold():
                return server
        return None

    def named(self, name: str) -> Server | None:
        for server in self.servers:
            if server.name and server.name.casefold() == name.casefold():
                return server
        return None

    def learn(self, entries: Iterable) -> None:
        """A server list from the current server (objects with ``name``, ``host``, ``port``
        and ``rtt_us``, as ``ServerInfo``): new nodes are added, nodes no longer listed and
        only learned are forgotten. A wildcard host means the current server's host."""
        current = self.current
        listed = set()
        for entry in entries:
            if current is not None and current.name and \
                    entry.name.casefold() == current.name.casefold():
                server = current            # we reached it by our own address: keep that
            else:
                host = entry.host
                if host in WILDCARD_HOSTS and current is not None:
                    host = current.host
                server = self.find(host, entry.port) or self.named(entry.name)
                if server is None:
                    server = self.add(host, entry.port, entry.name, configured=False)
                server.name = entry.name
            rtt_us = getattr(entry, "rtt_us", None)
            server.node_rtt_seconds = (None if rtt_us is None or rtt_us == 0xFFFFFFFF
                                       else rtt_us / 1e6)
            listed.add(id(server))
        self.servers = [s for s in self.servers
                        if s.configured or s is current or id(s) in listed]

    def set_current(self, server: Server, name: str = "") -> None:
        """Connected to ``server`` (as node ``name``, from its Welcome); a duplicate entry of
        the same node under another address is dropped."""
        if name:
            server.name = name
            self.servers = [s for s in self.servers if s is server or s.configured
                            or not s.name or s.name.casefold() != name.casefold()]
        self.current = server
        server.failed_at = None
        for other in self.servers:
            other.better_since = None
            other.better_samples = 0

    # -- measurements ----------------------------------------------------------------------

    def observe(self, server: Server, rtt_seconds: float) -> None:
        """A measured RTT of ``server`` (the current one: pings on the chat connection;
        others: probes)."""
        now = self.clock()
        server.samples.append(rtt_seconds)
        server.failed_at = None
        current = self.current
        if current is None:
            return
        for other in self.servers:
            if other is current:
                continue
            if self._better(other, current):
                if other.better_since is None:
                    other.better_since, other.better_samples = now, 0
                if other is server:
                    other.better_samples += 1
            else:
                other.better_since, other.better_samples = None, 0

    def failed(self, server: Server) -> None:
        """A connect or probe of ``server`` failed: it ranks last until it answers again."""
        server.failed_at = self.clock()
        server.better_since, server.better_samples = None, 0

    def _better(self, other: Server, current: Server) -> bool:
        mine, theirs = current.rtt, other.rtt
        if mine is None or theirs is None or other.failed_at is not None:
            return False
        policy = self.policy
        return (theirs < policy.move_ratio * mine
                and mine - theirs >= policy.move_min_gain_seconds)

    # -- answers ---------------------------------------------------------------------------

    def ranked(self) -> list[Server]:
        """Every server, best first: answering ones by RTT, then unmeasured ones (in the
        order given), then failed ones (least recently failed first)."""
        def key(item):
            index, server = item
            if server.failed_at is not None:
                return (2, server.failed_at, index)
            if server.rtt is None:
                return (1, 0.0, index)
            return (0, server.rtt, index)
        return [server for _, server in sorted(enumerate(self.servers), key=key)]

    def failover_order(self) -> list[Server]:
        """Where to go when the current server is lost: the others ranked, it last."""
        order = [s for s in self.ranked() if s is not self.current]
        return order + ([self.current] if self.current is not None else [])

    def others(self) -> list[Server]:
        """The servers to probe: every one but the current."""
        return [s for s in self.servers if s is not self.current]

    def move_target(self) -> Server | None:
        """The server to move to now, if one has been better long enough; else None."""
        if self.current is None or not self.policy.probe_interval_seconds:
            return None
        now = self.clock()
        policy = self.policy
        ready = [s for s in self.servers
                 if s is not self.current and s.better_since is not None
                 and now - s.better_since >= policy.move_sustain_seconds
                 and s.better_samples >= policy.move_min_samples
                 and self._better(s, self.current)]
        return min(ready, key=lambda s: s.rtt) if ready else None
