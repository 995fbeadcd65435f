"""The server on an in-process reactor, for timing logic a subprocess cannot be made to show."""
from __future__ import annotations

import socket
import time

import pytest

from chatcore import events as ev
from chatcore.config import ServerConfig
from chatcore.connection import State
from chatcore.protocol import encode_event
from tests.inprocess import running_server


@pytest.fixture
def running():
    """A server on an in-process reactor and a helper that turns the loop until a condition
    holds."""
    with running_server(ServerConfig(port=0, idle_timeout_seconds=0.5,
                                      ping_interval_seconds=5), timeout=5.0) as running:
        yield running


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
