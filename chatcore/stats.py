"""Plain counters the server keeps as it works, read by the metrics page at scrape time.

Counting is an integer addition on objects the hot path already holds (no locks, no
prometheus_client call per event: one thread does everything); chatcore.metrics turns these
into Prometheus metric families only when someone asks.
"""
from __future__ import annotations

import bisect
import collections

# Round-trip times from a loopback test (0.1 ms) to a congested mobile link (seconds).
RTT_BUCKETS_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                       0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A loop turn's work: tens of microseconds idle, milliseconds under load; the 20 ms a
# bystander should wait at most (issue 8) sits between two buckets' bounds.
TURN_BUCKETS_SECONDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Counts of observations per bucket (upper bounds, inclusive) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)      # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with +inf."""
        total = 0
        rows = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            rows.append((bound, total))
        return rows


# Why the server closes a connection (the "reason" label of chatcore_drops_total); listed
# so that each series exists, at 0, from the start.
DROP_REASONS = ("slow_reader", "idle", "handshake_timeout", "protocol_error", "server_full",
                "resumed_elsewhere", "tls_handshake_timeout", "tls_handshake_failed", "flood",
                "input_budget", "per_address_limit")


class ServerStats:
    """What one server has done since it started. Connections and the outlet add to it."""

    __slots__ = ("connections_accepted", "tls_connections", "room_messages",
                 "direct_messages", "bytes_received", "bytes_sent", "drops", "rtt_seconds",
                 "backlogged")

    def __init__(self):
        self.connections_accepted = 0
        self.tls_connections = 0        # open ones, of the server's connections
        self.room_messages = 0          # accepted SendRoom and SendRoomAction requests
        self.direct_messages = 0        # accepted SendDirect and SendDirectAction requests
        self.bytes_received = 0         # from clients, as read from their sockets
        self.bytes_sent = 0             # to clients, as the kernel took them
        # Connections the server closed, by DROP_REASONS (a client's own quit or disconnect
        # is not a drop).
        self.drops: collections.Counter = collections.Counter(dict.fromkeys(DROP_REASONS, 0))
        self.rtt_seconds = Histogram(RTT_BUCKETS_SECONDS)
        # Connections whose output the kernel did not all take, waiting for write readiness:
        # the only ones with a queue between turns, so a scrape need not visit the others.
        self.backlogged: set = set()

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1
