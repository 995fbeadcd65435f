"""One-thread event loop: a selector for sockets, a heap for timers, hooks before sleeping.

Knows file descriptors, readiness, timers and signals; nothing about chat or frames.
Callbacks run one at a time on the loop's thread; an exception in one is logged and the loop
goes on.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import selectors
import signal
import socket
import time

from .stats import TURN_BUCKETS_SECONDS, Histogram

log = logging.getLogger(__name__)

# CHATCORE_TRACE_TURNS=PATH: record every loop turn and write the records to PATH when
# ``run`` returns (see TurnTrace). A diagnostic for where a message's latency goes; off, the
# loop pays one ``is not None`` a turn. At most TRACE_MAX_TURNS turns are kept (the first
# ones: 8 floats each, ~64 MB at the cap), so a forgotten trace cannot grow without bound.
TRACE_ENV = "CHATCORE_TRACE_TURNS"
TRACE_MAX_TURNS = 1_000_000
# Idle polling (Reactor.set_idle_poll) may run ahead of its share by this many whole polls:
# a burst of quiet gaps is polled through, a long quiet stretch is not.
IDLE_POLL_BURST = 4

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class TimerHandle:
    """A scheduled call; ``cancel()`` makes the loop skip it (removed lazily from the heap)."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback, args: tuple):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        # The handle stays in the heap until its time; what it would have called (a closed
        # connection, a finished TLS handshake and its session) need not stay with it.
        self.cancelled = True
        self.callback = None
        self.args = ()


class Reactor:
    """``add_reader``/``add_writer`` per fd, ``call_later``, ``call_soon``,
    ``add_before_sleep`` hooks (run once per turn, right before waiting), ``run`` and ``stop``.

    A reader added with ``priority=True`` runs before every other ready callback of its turn
    (a broker link must be read before the clients whose requests would publish to it).
    """

    def __init__(self):
        # How long each turn's work took, from the wake-up to the next wait (hooks included).
        self.turn_seconds = Histogram(TURN_BUCKETS_SECONDS)
        self._selector = selectors.DefaultSelector()
        self._timers: list = []
        self._timer_seq = itertools.count()
        self._soon: collections.deque = collections.deque()
        self._before_sleep: list = []
        self._signal_handlers: dict = {}
        self._wakeup_r: socket.socket | None = None
        self._wakeup_w: socket.socket | None = None
        self._running = False
        self._priority_fds: set[int] = set()
        self._sleep_until: float | None = None      # see sleep_until
        # Idle polling (set_idle_poll): the longest poll a wait starts with, the share of
        # wall time polls may take, and the poll time still allowed (a token bucket).
        self.idle_poll_seconds = 0.0
        self.idle_poll_max_share = 0.0
        self._poll_allowed = 0.0
        self._poll_refilled_at = 0.0
        path = os.environ.get(TRACE_ENV)
        self.trace: TurnTrace | None = TurnTrace(path) if path else None

    # -- file descriptors ------------------------------------------------------------------

    def add_reader(self, fd: int, callback, *, priority: bool = False) -> None:
        self._set(fd, _READ, callback)
        if priority:
            self._priority_fds.add(fd)
        else:
            self._priority_fds.discard(fd)

    def add_writer(self, fd: int, callback) -> None:
        self._set(fd, _WRITE, callback)

    def remove_reader(self, fd: int) -> None:
        self._unset(fd, _READ)
        self._priority_fds.discard(fd)

    def remove_writer(self, fd: int) -> None:
        self._unset(fd, _WRITE)

    def remove_fd(self, fd: int) -> None:
        """Forget ``fd`` entirely (call before closing it)."""
        self._priority_fds.discard(fd)
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _set(self, fd: int, event: int, callback) -> None:
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            callbacks = [None, None]
            callbacks[event == _WRITE] = callback
            self._selector.register(fd, event, callbacks)
            return
        key.data[event == _WRITE] = callback
        if not key.events & event:
            self._selector.modify(fd, key.events | event, key.data)

    def _unset(self, fd: int, event: int) -> None:
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            return
        key.data[event == _WRITE] = None
        remaining = key.events & ~event
        if remaining:
            self._selector.modify(fd, remaining, key.data)
        else:
            self._selector.unregister(fd)

    # -- time ------------------------------------------------------------------------------

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback, *args) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (handle.when, next(self._timer_seq), handle))
        return handle

    def call_soon(self, callback, *args) -> None:
        """Run ``callback`` on the next turn, before anything waits."""
        self._soon.append((callback, args))

    def add_before_sleep(self, callback, first: bool = False) -> None:
        """Run ``callback()`` at the end of every turn, right before the loop waits (with
        ``first``, before the hooks added so far)."""
        if first:
            self._before_sleep.insert(0, callback)
        else:
            self._before_sleep.append(callback)

    def sleep_until(self, when: float) -> None:
        """Make this turn's wait a plain sleep until ``when`` (a ``time()`` value), not
        woken by readiness; what became ready meanwhile is handled in the turn after it.

        For a before-sleep hook that holds output for a moment (the write-coalescing
        window): waking for every arrival would cost a wait and a turn each, though
        nothing is written before ``when`` anyway. A timer due earlier ends the sleep
        then. It holds for this turn only: the hook asks again on the next.
        """
        if self._sleep_until is None or when < self._sleep_until:
            self._sleep_until = when

    def set_idle_poll(self, seconds: float, max_share: float = 0.25) -> None:
        """Before sleeping, poll for readiness for up to ``seconds`` (and spin through a
        ``sleep_until`` hold no longer than that), the polls taking at most ``max_share``
        of the wall time over any stretch (past that budget, waits sleep at once).

        A process that sleeps gives up its core; on a virtual machine whose virtual CPU
        halts when it has nothing to run, a wake-up after a gap longer than the host polls
        a halted CPU for is the host's scheduler, which may take milliseconds
        (docs/benchmarks.md, latency). Polling keeps the core through gaps shorter than
        ``seconds``. The share bounds the CPU it costs, and keeps a SCHED_FIFO server
        below the kernel's real-time throttling (95 % of a second by default), which stops
        it for the rest of the second: an unbounded 0.5 ms poll at 100 k deliveries/s, load
        6, made p99 24-36 ms against 5-8 without. ``seconds`` 0 turns it off.
        """
        if seconds < 0 or not 0 <= max_share <= 1:
            raise ValueError("idle poll: seconds must not be negative, the share in 0..1")
        self.idle_poll_seconds = seconds
        self.idle_poll_max_share = max_share
        self._poll_allowed = seconds
        self._poll_refilled_at = time.monotonic()

    def _poll_budget(self, now: float) -> float:
        """Seconds this wait may poll: the bucket refills at ``idle_poll_max_share`` of the
        time gone by and holds at most a few polls' worth."""
        allowed = self._poll_allowed + (now - self._poll_refilled_at) * self.idle_poll_max_share
        self._poll_allowed = min(allowed, IDLE_POLL_BURST * self.idle_poll_seconds)
        self._poll_refilled_at = now
        return min(self._poll_allowed, self.idle_poll_seconds)

    # -- signals ---------------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback) -> None:
        """Run ``callback(signum)`` on the loop when the signal arrives (main thread only)."""
        if self._wakeup_r is None:
            self._wakeup_r, self._wakeup_w = socket.socketpair()
            self._wakeup_r.setblocking(False)
            self._wakeup_w.setblocking(False)
            signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
            self.add_reader(self._wakeup_r.fileno(), self._on_signal_bytes)
        self._signal_handlers[signum] = callback
        # The C-level handler writes the signal number to the wakeup fd; this one only has
        # to exist so Python does not apply the default action.
        signal.signal(signum, _ignore_signal)

    def _on_signal_bytes(self) -> None:
        try:
            data = self._wakeup_r.recv(512)
        except BlockingIOError:
            return
        for signum in data:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler(signum)

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Make ``run`` return after the current turn."""
        self._running = False

    def run(self) -> None:
        self._running = True
        select = self._selector.select
        timers = self._timers
        priority = self._priority_fds
        turn_seconds = self.turn_seconds
        monotonic = time.monotonic
        sleep = time.sleep
        trace = self.trace
        try:
            self._loop(select, timers, priority, turn_seconds, monotonic, sleep, trace)
        finally:
            if trace is not None:
                trace.write()

    def _loop(self, select, timers, priority, turn_seconds, monotonic, sleep, trace) -> None:
        woke_at = worked_at = None
        while self._running:
            self._run_hooks()
            if woke_at is not None:
                hooked_at = monotonic()
                turn_seconds.observe(hooked_at - woke_at)
            held = 0.0
            if self._soon or not self._running:
                timeout = 0
            elif self._sleep_until is not None:
                until = self._sleep_until
                if timers and timers[0][0] < until:
                    until = timers[0][0]
                now = monotonic()
                delay = until - now
                if delay > 0:
                    held = delay
                    if not self.idle_poll_seconds or delay > self._poll_budget(now):
                        sleep(delay)
                    else:
                        while monotonic() < until:
                            pass
                        self._poll_allowed -= delay
                timeout = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            else:
                timeout = None
            self._sleep_until = None
            if timeout == 0 or not self.idle_poll_seconds:
                ready = select(timeout)
            else:
                ready = self._poll_then_select(select, timeout, monotonic)
            if trace is not None and woke_at is not None:
                trace.turn(woke_at, worked_at, hooked_at, held,
                           -1.0 if timeout is None else timeout, len(ready))
            woke_at = monotonic()
            if priority and len(ready) > 1:
                first = [item for item in ready if item[0].fd in priority]
                if first:
                    ready = first + [item for item in ready if item[0].fd not in priority]
            for key, mask in ready:
                reader, writer = key.data
                try:
                    if mask & _READ and reader is not None:
                        reader()
                    if mask & _WRITE and writer is not None and key.data[1] is writer:
                        writer()
                except Exception:
                    log.exception("callback for fd %s failed", key.fd)
            if timers:
                self._run_due_timers()
            if self._soon:
                self._run_soon()
            if trace is not None:
                worked_at = monotonic()
        self._run_hooks()

    def _poll_then_select(self, select, timeout: float | None, monotonic) -> list:
        """``select(timeout)``, polled without sleeping for as long as the budget allows."""
        start = monotonic()
        budget = self._poll_budget(start)
        if timeout is not None:
            budget = min(budget, timeout)
        if budget <= 0:
            return select(timeout)
        poll_until = start + budget
        ready = select(0)
        while not ready and monotonic() < poll_until:
            ready = select(0)
        now = monotonic()
        self._poll_allowed -= now - start
        if ready:
            return ready
        return select(None if timeout is None else max(0.0, start + timeout - now))

    def _run_hooks(self) -> None:
        for hook in self._before_sleep:
            try:
                hook()
            except Exception:
                log.exception("before-sleep hook %r failed", hook)

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, handle = heapq.heappop(timers)
            if handle.cancelled:
                continue
            try:
                handle.callback(*handle.args)
            except Exception:
                log.exception("timer %r failed", handle.callback)

    def _run_soon(self) -> None:
        # Only what was queued before this point: callbacks queued now wait a turn.
        for _ in range(len(self._soon)):
            callback, args = self._soon.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("callback %r failed", callback)

    def close(self) -> None:
        if self._wakeup_r is not None:
            signal.set_wakeup_fd(-1)
            self.remove_fd(self._wakeup_r.fileno())
            self._wakeup_r.close()
            self._wakeup_w.close()
            self._wakeup_r = self._wakeup_w = None
        self._selector.close()


class TurnTrace:
    """Per-turn timings of a ``Reactor.run``, written as text when it returns.

    One line a turn: ``woke worked hooked held timeout ready waited cpu``: CLOCK_MONOTONIC
    seconds when the turn woke, when its callbacks and timers were done, when its
    before-sleep hooks (the flush) were done; the hold it then slept (``sleep_until``, 0
    if none), the ``select`` timeout it asked (-1: none), how many descriptors that
    select returned ready, how long the wait took, and the thread's CPU seconds from the
    wake-up to the end of the hooks (less than ``hooked - woke``: the turn was kept off its
    core). A turn that woke late, worked long or flushed long is what a slow delivery
    waited for.
    """

    __slots__ = ("path", "rows", "_cpu_at")

    def __init__(self, path: str):
        self.path = path
        self.rows: list = []
        self._cpu_at = time.thread_time()

    def turn(self, woke: float, worked: float, hooked: float, held: float, timeout: float,
             ready: int) -> None:
        waited = time.monotonic() - hooked
        cpu = time.thread_time()
        if len(self.rows) < TRACE_MAX_TURNS:
            self.rows.append((woke, worked, hooked, held, timeout, ready, waited,
                              cpu - self._cpu_at))
        self._cpu_at = cpu

    def write(self) -> None:
        try:
            with open(self.path, "w") as f:
                f.write("# woke worked hooked held timeout ready waited cpu\n")
                for row in self.rows:
                    f.write("%.6f %.6f %.6f %.6f %.6f %d %.6f %.6f\n" % row)
        except OSError as exc:
            log.warning("turn trace not written to %s: %s", self.path, exc)


def _ignore_signal(signum, frame) -> None:
    pass
