"""The housekeeping tick spread over loop turns (chatcore.connection.sweeping): a slice of the
connections a turn, at most TIMEOUT_CLOSES_PER_TURN closes a turn and max_timeouts_per_tick
a tick; with fake connections, then with a real in-process server and sockets."""
from __future__ import annotations

import socket
import time

from chatcore import events as ev
from chatcore.config import ServerConfig
from chatcore.connection import State
from chatcore.connection.sweeping import (PINGS_PER_TURN, SWEEP_SLICE_CONNECTIONS,
                                         TIMEOUT_CLOSES_PER_TURN, Sweep)
from chatcore.protocol import encode_event
from chatcore.reactor import Reactor
from chatcore.server import Server
from tests import inprocess


class FakeReactor:
    def __init__(self):
        self.soon: list = []

    def call_soon(self, callback, *args) -> None:
        self.soon.append(callback)

    def turn(self) -> None:
        queued, self.soon = self.soon, []
        for callback in queued:
            callback()


class Idle:
    """A connection whose idle timeout is due: a tick that may enforce it closes it."""

    last_ping_at = -1.0          # (not pinged by this tick)

    def __init__(self):
        self.state = State.OPEN
        self.ticks: list[bool] = []

    def tick(self, now: float, enforce_timeouts: bool = True) -> None:
        self.ticks.append(enforce_timeouts)
        if enforce_timeouts:
            self.state = State.CLOSING


def test_a_tick_closes_a_bounded_number_per_turn_and_in_all():
    reactor = FakeReactor()
    connections = [Idle() for _ in range(1000)]
    sweep = Sweep(reactor, connections, 0.0, True, max_closes=120)
    sweep.run()                                 # the first slice runs at once
    closed = [sum(c.state is not State.OPEN for c in connections)]
    while reactor.soon:
        reactor.turn()
        closed.append(sum(c.state is not State.OPEN for c in connections))
    steps = [b - a for a, b in zip([0, *closed], closed)]
    assert max(steps) == TIMEOUT_CLOSES_PER_TURN
    assert closed[-1] == 120                    # the rest wait for the next tick ...
    assert all(c.ticks for c in connections)    # ... but every one was visited (pings)
    assert all(c.ticks == [False] for c in connections[120:])
    assert sweep.done


def test_a_tick_visits_a_slice_of_the_connections_per_turn():
    reactor = FakeReactor()

    class Quiet(Idle):
        def tick(self, now, enforce_timeouts=True):
            self.ticks.append(enforce_timeouts)

    connections = [Quiet() for _ in range(SWEEP_SLICE_CONNECTIONS * 2 + 1)]
    sweep = Sweep(reactor, connections, 0.0, True, max_closes=1000)
    sweep.run()
    assert sum(bool(c.ticks) for c in connections) == SWEEP_SLICE_CONNECTIONS
    reactor.turn()
    reactor.turn()
    assert all(c.ticks == [True] for c in connections)
    sweep.stop()
    reactor.turn()
    assert not reactor.soon and sweep.done


def test_a_turn_sends_a_bounded_number_of_pings():
    """Users who arrived together are due a ping together: their writes spread over turns."""
    reactor = FakeReactor()

    class Due(Idle):
        def tick(self, now, enforce_timeouts=True):
            self.ticks.append(enforce_timeouts)
            self.last_ping_at = now

    connections = [Due() for _ in range(SWEEP_SLICE_CONNECTIONS)]
    sweep = Sweep(reactor, connections, 5.0, True, max_closes=1000)
    pinged = []
    sweep.run()
    while reactor.soon:
        pinged.append(sum(c.last_ping_at == 5.0 for c in connections))
        reactor.turn()
    assert pinged[0] == PINGS_PER_TURN < SWEEP_SLICE_CONNECTIONS
    assert all(b - a <= PINGS_PER_TURN for a, b in zip(pinged, pinged[1:]))
    assert all(c.last_ping_at == 5.0 for c in connections) and sweep.done


def test_a_newer_tick_takes_over_from_an_unfinished_one():
    reactor = FakeReactor()
    connections = [Idle() for _ in range(200)]
    old = Sweep(reactor, connections, 0.0, True, max_closes=1000)
    old.run()                                   # 50 closed, the rest not reached yet
    old.stop()
    reactor.turn()
    assert sum(c.state is not State.OPEN for c in connections) == TIMEOUT_CLOSES_PER_TURN


def test_mass_idle_timeout_is_spread_over_ticks_on_a_real_server():
    reactor = Reactor()
    server = Server(ServerConfig(port=0, idle_timeout_seconds=60, ping_interval_seconds=30,
                                 max_timeouts_per_tick=120, limit_exempt="127.0.0.0/8"),
                    reactor)
    server._schedule_tick = lambda: None        # only the ticks below, however slow they are
    server.start()
    socks = []
    try:
        for i in range(300):
            sock = socket.create_connection(server.address, timeout=10)
            sock.sendall(encode_event(ev.Hello(1, f"u{i}", request_id=1)))
            socks.append(sock)
        run_until(reactor, lambda: sum(c.session is not None
                                       for c in server.connections) == 300)
        for connection in server.connections:
            connection.last_received -= 120     # all of them silent past the timeout
        open_counts = []
        for _ in range(3):
            server._tick_due = time.monotonic()     # an on-time tick
            server._tick()
            run_until(reactor, lambda: server._sweep.done)
            open_counts.append(sum(c.state is State.OPEN for c in server.connections))
        assert open_counts == [180, 60, 0]
    finally:
        for connection in list(server.connections):
            connection.abort(ev.Reason.DISCONNECTED)
        for sock in socks:
            sock.close()
        server.listener.close()
        reactor.close()


def run_until(reactor: Reactor, condition, timeout: float = 20.0) -> None:
    inprocess.run_until(reactor, condition, timeout)
