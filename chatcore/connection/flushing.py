"""The per-turn write flush, bounded: at most ``max_turn_writes`` writes a loop turn.

One room message to a room of 1 001 costs 1 001 writes (about 5-15 us each on loopback), so
writing every pending connection in one turn would make the turn as long as the room is big,
whatever the fair-turn budget of the sender. Past the budget, the rest waits for the next
turn (the loop does not sleep meanwhile). What became pending this turn is written before
what waits from earlier turns, except that the waiting ones always get at least half the
budget: a bystander's reply is not queued behind a thousand writes of someone's fan-out, and
the fan-out still moves every turn.

A connection whose fair turn ran out continues only once the output queued before its pause
has been written (``after_output``): a sender cannot queue faster than the server writes, so
a burst into a big room costs bounded memory and bounded turns.

Write coalescing (``coalesce_writes_seconds``): a write costs the same few microseconds of
kernel time whether it carries one message or ten, so a busy server should let messages
share writes. When the last flush carried at least ``coalesce_writes_min_frames``
deliveries per connection written (several messages reached each connection in one flush:
the server is busy enough that the writes are shared anyway), the next flush waits until
``coalesce_writes_seconds`` after the last one began, the loop reading and handling input
meanwhile. A quiet server's flushes carry about one message each and are never held, and
a held flush is never held longer than the window, so a message is late by at most that.
"""
from __future__ import annotations

import collections
import time

from ..codec import write_all


class Flusher:
    """Writes the output buffers the outlets marked pending, ``writes_per_turn`` at most."""

    __slots__ = ("outlet", "reactor", "writes_per_turn", "waiting", "_after", "work",
                 "coalesce_seconds", "coalesce_min_frames", "held_flushes", "_coalescing",
                 "_flushed_at", "_work_at", "_held_after", "stats")

    def __init__(self, outlet, reactor, writes_per_turn: int, coalesce_seconds: float = 0.0,
                 coalesce_min_frames: int = 4, work=None, stats=None):
        self.outlet = outlet            # whose ``pending`` list the outlets append to
        self.reactor = reactor
        # Counts ``bytes_sent`` of the writes ``write_all`` makes itself (those of buffers
        # with a ``direct_fd``: every plain connection's, while a full write is all it needs);
        # None: such buffers are flushed by their owners as the others are.
        self.stats = stats
        self.writes_per_turn = writes_per_turn
        # Buffers whose write was left for a later turn, in order; a list in it holds the
        # callbacks of ``after_output`` that wait for the buffers before it.
        self.waiting: collections.deque = collections.deque()
        self._after: list = []
        # Coalescing: ``work.work_done`` counts deliveries (the hub's counter; None: off).
        self.work = work
        self.coalesce_seconds = coalesce_seconds
        self.coalesce_min_frames = coalesce_min_frames
        self.held_flushes = 0           # flushes that waited for the window
        self._held_after = -1.0         # _flushed_at of the flush the last held one follows
        self._coalescing = False        # the last flush carried enough to hold the next
        self._flushed_at = 0.0          # when the last flush began
        self._work_at = 0               # work.work_done then

    def after_output(self, callback) -> None:
        """Run ``callback()`` on a later turn, once everything queued so far is written."""
        self._after.append(callback)

    def buffers(self):
        """The buffers waiting for a later turn's write (for the metrics page)."""
        return (item for item in self.waiting if type(item) is not list)

    def flush(self) -> None:
        """The before-sleep hook: write this turn's pending buffers, then waiting ones."""
        waiting = self.waiting
        outlet = self.outlet
        if self.work is not None and outlet.pending:
            now = time.monotonic()
            if self._coalescing and now < self._flushed_at + self.coalesce_seconds:
                # Busy: what comes before the window ends shares the next writes. The
                # writes of the last flush that did not fit its turn go on meanwhile.
                if self._held_after != self._flushed_at:
                    self._held_after = self._flushed_at
                    self.held_flushes += 1
                if waiting:
                    self._write_waiting(self.writes_per_turn)
                    if waiting:
                        self.reactor.call_soon(_write_more)
                        return
                self.reactor.sleep_until(self._flushed_at + self.coalesce_seconds)
                return
            if not waiting:
                work_done = self.work.work_done
                self._coalescing = (work_done - self._work_at
                                    >= self.coalesce_min_frames * len(outlet.pending))
                self._flushed_at, self._work_at = now, work_done
        left = self.writes_per_turn
        if waiting:
            left -= self._write_waiting(max(1, left // 2))
        left = self._write_new(left)
        if waiting and left > 0:
            left -= self._write_waiting(left)
            self._write_new(left)       # what those writes caused (a drop's leave notices)
        if self._after:
            callbacks, self._after = self._after, []
            if waiting:
                waiting.append(callbacks)
            else:
                for callback in callbacks:
                    self.reactor.call_soon(callback)
        if waiting:
            # Writes are left: the loop must come back at once instead of sleeping.
            self.reactor.call_soon(_write_more)

    def _write_new(self, left: int) -> int:
        outlet = self.outlet
        while outlet.pending:
            pending = outlet.take_pending()
            if len(pending) > left:
                self.waiting.extend(pending[left:])
                del pending[left:]
            left -= len(pending)
            self._write(pending)
        return left

    def _write_waiting(self, count: int) -> int:
        waiting = self.waiting
        call_soon = self.reactor.call_soon
        batch = []
        while waiting and (len(batch) < count or type(waiting[0]) is list):
            item = waiting.popleft()
            if type(item) is list:
                # call_soon: they run on the next turn, after the batch below is written.
                for callback in item:
                    call_soon(callback)
            else:
                batch.append(item)
        if batch:
            self._write(batch)
        return len(batch)

    def _write(self, buffers: list) -> None:
        """Write ``buffers``: those with a ``direct_fd`` in one compiled loop, the rest (and
        any that loop could not finish) through their owner's ``flush()``."""
        if self.stats is not None:
            sent, buffers = write_all(buffers)
            self.stats.bytes_sent += sent
        for outbuf in buffers:
            outbuf.owner.flush()


def _write_more() -> None:
    """Nothing: queued only so that the loop turns again without waiting."""
