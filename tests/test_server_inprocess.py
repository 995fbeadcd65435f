"""The server on an in-process reactor, for timing logic a subprocess cannot be made to show."""
from __future__ import annotations

import socket
import time

import pytest

from chatcore import events as ev
from chatcore.config import ServerConfig
from chatcore.connection import State
from chatcore.protocol import encode_event
from chatcore.reactor import Reactor
from chatcore.server import Server


@pytest.fixture
def running():
    """A started server and a helper that turns the loop until a condition holds."""
    reactor = Reactor()
    server = Server(ServerConfig(port=0, idle_timeout_seconds=0.5, ping_interval_seconds=5),
                    reactor)
    server.start()

    def turn_until(condition, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout

        def check() -> None:
            if condition() or time.monotonic() > deadline:
                reactor.stop()
        reactor.add_before_sleep(check)
        reactor.call_later(timeout, reactor.stop)
        reactor.run()
        reactor._before_sleep.remove(check)
        assert condition(), "condition not reached"

    yield server, turn_until
    for connection in list(server.connections):
        connection.abort(ev.Reason.DISCONNECTED)
    server.listener.close()
    reactor.close()


def test_a_late_tick_does_not_enforce_idle_timeouts(running):
    server, turn_until = running
    with socket.create_connection(server.address) as client:
        client.sendall(encode_event(ev.Hello(1, "alice", request_id=1)))
        turn_until(lambda: any(c.session for c in server.connections))
        (connection,) = server.connections
        connection.last_received -= 10          # silent for far longer than 0.5 s ...

        server._tick_due = time.monotonic() - 5  # ... but the loop itself was stalled
        server._tick()
        assert connection.state is State.OPEN

        server._tick_due = time.monotonic()      # an on-time tick: now it counts
        server._tick()
        assert connection.state is not State.OPEN
