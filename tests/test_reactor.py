"""The event loop on its own: timers, fds, before-sleep hooks, signals."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from chatcore.reactor import Reactor


@pytest.fixture
def reactor():
    loop = Reactor()
    yield loop
    loop.close()


def test_timers_run_in_order_and_cancelled_ones_do_not(reactor):
    ran = []
    reactor.call_later(0.02, ran.append, "second")
    reactor.call_later(0.01, ran.append, "first")
    reactor.call_later(0.015, ran.append, "cancelled").cancel()
    reactor.call_later(0.03, reactor.stop)
    reactor.run()
    assert ran == ["first", "second"]


def test_call_soon_runs_next_turn_and_hooks_run_before_sleeping(reactor):
    order = []
    reactor.add_before_sleep(lambda: order.append("hook"))
    reactor.call_soon(order.append, "soon")
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert order[:2] == ["hook", "soon"]


def test_a_hook_added_first_runs_before_the_hooks_added_earlier(reactor):
    """(The broker's writes go out before the clients' replies of the same turn.)"""
    order = []
    reactor.add_before_sleep(lambda: order.append("clients"))
    reactor.add_before_sleep(lambda: order.append("broker"), first=True)
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert order[:2] == ["broker", "clients"]


def test_reader_and_writer_callbacks(reactor):
    a, b = socket.socketpair()
    with a, b:
        got = []

        def on_readable():
            got.append(a.recv(100))
            reactor.stop()

        def on_writable():
            b.send(b"ping")
            reactor.remove_writer(b.fileno())

        reactor.add_reader(a.fileno(), on_readable)
        reactor.add_writer(b.fileno(), on_writable)
        reactor.run()
        assert got == [b"ping"]
        reactor.remove_reader(a.fileno())


def test_failing_callbacks_do_not_stop_the_loop(reactor, caplog):
    a, b = socket.socketpair()
    with a, b:
        ran = []
        reactor.call_soon(lambda: 1 / 0)
        reactor.call_later(0, lambda: [][1])
        reactor.add_before_sleep(lambda: {}["hook"])
        b.send(b"x")
        reactor.add_reader(a.fileno(), lambda: None + 1)
        reactor.call_later(0.01, ran.append, "still running")
        reactor.call_later(0.02, reactor.stop)
        reactor.run()
        reactor.remove_reader(a.fileno())
    assert ran == ["still running"]
    for error in ("ZeroDivisionError", "IndexError", "KeyError", "TypeError"):
        assert error in caplog.text


def test_signals_are_delivered_on_the_loop(reactor):
    got = []
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        reactor.add_signal_handler(signal.SIGUSR1, lambda signum: (got.append(signum),
                                                                    reactor.stop()))
        reactor.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        reactor.call_later(5, reactor.stop)
        reactor.run()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got == [signal.SIGUSR1]


def test_priority_readers_run_first_in_their_turn(reactor):
    plain_a, plain_b = socket.socketpair()
    urgent_a, urgent_b = socket.socketpair()
    with plain_a, plain_b, urgent_a, urgent_b:
        order = []

        def reader(sock, label):
            def on_readable():
                sock.recv(100)
                order.append(label)
                if len(order) == 2:
                    reactor.stop()
            return on_readable

        # The plain reader is registered first and its data is ready first.
        reactor.add_reader(plain_a.fileno(), reader(plain_a, "plain"))
        reactor.add_reader(urgent_a.fileno(), reader(urgent_a, "urgent"), priority=True)
        plain_b.send(b"x")
        urgent_b.send(b"x")
        reactor.run()
        assert order == ["urgent", "plain"]
        reactor.remove_reader(plain_a.fileno())
        reactor.remove_reader(urgent_a.fileno())


def test_sleep_until_holds_readiness_until_then_and_timers_end_it_early(reactor):
    a, b = socket.socketpair()
    try:
        started = reactor.time()
        read_at = []
        reactor.add_reader(a.fileno(), lambda: (read_at.append(reactor.time()), a.recv(16)))
        holds = [0.05]

        def hold() -> None:
            if holds:
                reactor.sleep_until(started + holds.pop())
        reactor.add_before_sleep(hold)
        b.send(b"x")                        # ready at once, but the turn sleeps first
        reactor.call_later(0.08, reactor.stop)
        reactor.run()
        assert read_at and read_at[0] - started >= 0.05

        timer_at = []
        started = reactor.time()
        holds.append(1.0)                   # a timer due long before the hold ends it
        reactor.call_later(0.01, lambda: (timer_at.append(reactor.time()), reactor.stop()))
        reactor.run()
        assert timer_at and timer_at[0] - started < 0.5
    finally:
        reactor.remove_fd(a.fileno())
        a.close()
        b.close()


def test_turn_trace_records_each_turn_when_asked(tmp_path, monkeypatch):
    # CHATCORE_TRACE_TURNS: one line a turn, written when run() returns (a diagnostic for
    # where a slow delivery waited: docs/benchmarks.md, latency).
    path = tmp_path / "turns.txt"
    monkeypatch.setenv("CHATCORE_TRACE_TURNS", str(path))
    loop = Reactor()
    a, b = socket.socketpair()
    try:
        got = []
        loop.add_reader(a.fileno(), lambda: got.append(a.recv(10)))
        loop.call_later(0.01, b.send, b"x")
        loop.call_later(0.03, loop.stop)
        loop.run()
    finally:
        loop.close()
        a.close()
        b.close()
    assert got == [b"x"]
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# woke worked hooked held timeout ready waited cpu")
    rows = [tuple(map(float, line.split())) for line in lines[1:]]
    assert len(rows) >= 2
    for woke, worked, hooked, held, timeout, ready, waited, cpu in rows:
        assert woke <= worked <= hooked and waited >= 0 and cpu >= 0 and held == 0
    assert any(ready == 1 for *_, ready, _waited, _cpu in rows)
    # Turns follow each other: each wakes after the one before had finished waiting.
    for before, after in zip(rows, rows[1:]):
        assert after[0] >= before[2] + before[6] - 1e-6


def test_no_turn_trace_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CHATCORE_TRACE_TURNS", raising=False)
    loop = Reactor()
    loop.call_later(0.005, loop.stop)
    loop.run()
    loop.close()
    assert loop.trace is None


class RecordingSelector:
    """The reactor's selector, with every select's timeout and result size written down."""

    def __init__(self, selector):
        self.selector = selector
        self.calls: list = []          # (timeout, ready count, seconds it took)

    def select(self, timeout=None):
        start = time.monotonic()
        ready = self.selector.select(timeout)
        self.calls.append((timeout, len(ready), time.monotonic() - start))
        return ready

    def __getattr__(self, name):
        return getattr(self.selector, name)


def test_idle_poll_finds_input_without_sleeping_and_keeps_to_its_share(reactor):
    a, b = socket.socketpair()
    recording = reactor._selector = RecordingSelector(reactor._selector)
    try:
        got = []
        reactor.add_reader(a.fileno(), lambda: got.append(a.recv(16)))
        reactor.set_idle_poll(0.002, 0.2)
        # Input that comes while the loop polls is handled without a sleeping select.
        reactor.call_later(0.001, b.send, b"x")
        reactor.call_later(0.2, reactor.stop)
        started = time.monotonic()
        reactor.run()
        elapsed = time.monotonic() - started
        assert got == [b"x"]
        polls = [c for c in recording.calls if c[0] == 0]
        assert polls and any(ready for _, ready, _ in polls)
        # A quiet 0.2 s: polls of 2 ms at most, 20 % of the time plus the first few polls.
        polled = sum(seconds for _, _, seconds in polls)
        assert polled <= 0.2 * elapsed + 4 * 0.002 + 0.005
        assert any(timeout is not None and timeout > 0 for timeout, _, _ in recording.calls)
    finally:
        reactor.remove_fd(a.fileno())
        a.close()
        b.close()


def test_without_idle_poll_a_quiet_loop_sleeps_in_select(reactor):
    recording = reactor._selector = RecordingSelector(reactor._selector)
    reactor.call_later(0.05, reactor.stop)
    reactor.run()
    assert [timeout for timeout, _, _ in recording.calls if timeout == 0] == []


def test_idle_poll_spins_through_a_short_hold_and_still_holds(reactor, monkeypatch):
    a, b = socket.socketpair()
    slept = []
    monkeypatch.setattr("chatcore.reactor.time.sleep", lambda s: slept.append(s))
    try:
        reactor.set_idle_poll(0.005, 1.0)
        started = reactor.time()
        read_at = []
        reactor.add_reader(a.fileno(), lambda: (read_at.append(reactor.time()), a.recv(16)))
        holds = [0.003]

        def hold() -> None:
            if holds:
                reactor.sleep_until(started + holds.pop())
        reactor.add_before_sleep(hold)
        b.send(b"x")
        reactor.call_later(0.03, reactor.stop)
        reactor.run()
        assert read_at and read_at[0] - started >= 0.003      # held, though not asleep
        assert slept == []
    finally:
        reactor.remove_fd(a.fileno())
        a.close()
        b.close()


def test_idle_poll_settings_are_checked(reactor):
    with pytest.raises(ValueError):
        reactor.set_idle_poll(-1)
    with pytest.raises(ValueError):
        reactor.set_idle_poll(0.001, 1.5)
