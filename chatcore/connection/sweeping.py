"""The server's housekeeping tick over its connections (pings, handshake and idle timeouts),
spread over loop turns and bounded in the connections it closes.

With 100 000 connections, one tick visiting them all in one turn costs tens of
milliseconds by itself, and 100 000 idle connections timing out together would each be told,
closed and taken out of their rooms in that one turn: seconds. So a tick visits at most
``SWEEP_SLICE_CONNECTIONS`` a turn, pings at most ``PINGS_PER_TURN`` of them, closes at most
``TIMEOUT_CLOSES_PER_TURN`` a turn and
``max_timeouts_per_tick`` in all; the timeouts past that wait for the next tick (a client
that is late anyway can be late by one more second).
"""
from __future__ import annotations

import itertools

from .closing import State

# Connections one turn of the sweep visits: a visit costs 1-2 us with its share of pings
# (each due every ping_interval_seconds), so a slice is about 1 ms ...
SWEEP_SLICE_CONNECTIONS = 500
# ... and pings one turn sends: each is a write of its own at the turn's end, 4-5 us, and
# users who arrived together (a restart, a reconnecting crowd) are due together: 2000 pings
# held the loop 8-9 ms (benchmarks/bench_cluster_turns.py), 250 are about 1 ms.
PINGS_PER_TURN = 250
# Timeout closes one turn of the sweep makes: each tells the client, leaves its rooms (a
# notice to every member) and starts a lingering close, 20-50 us, so 50 are 1-3 ms.
TIMEOUT_CLOSES_PER_TURN = 50


class Sweep:
    """One tick's visit of ``connections``: ``tick(now, enforce_timeouts)`` on each."""

    __slots__ = ("reactor", "_left", "_now", "_enforce", "_closes_left", "done")

    def __init__(self, reactor, connections, now: float, enforce_timeouts: bool,
                 max_closes: int):
        self.reactor = reactor
        self._left = iter(list(connections))
        self._now = now
        self._enforce = enforce_timeouts
        self._closes_left = max_closes
        self.done = False

    def run(self) -> None:
        """Visit the next slice (now: the first, at once); the rest on later turns."""
        if self.done:
            return
        now = self._now
        closes = pings = 0
        visited = 0
        for connection in itertools.islice(self._left, SWEEP_SLICE_CONNECTIONS):
            visited += 1
            if connection.state is not State.OPEN:
                continue
            enforce = self._enforce and self._closes_left > 0
            connection.tick(now, enforce)
            if enforce and connection.state is not State.OPEN:
                self._closes_left -= 1
                closes += 1
                if closes >= TIMEOUT_CLOSES_PER_TURN:
                    break
            elif connection.last_ping_at == now:
                pings += 1
                if pings >= PINGS_PER_TURN:
                    break
        if visited == 0:
            self.done = True
        else:
            self.reactor.call_soon(self.run)

    def stop(self) -> None:
        """A newer tick takes over: whoever this one did not reach waits for it."""
        self.done = True
