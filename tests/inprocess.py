"""A server on an in-process reactor, for tests that must see the loop's turns."""
from __future__ import annotations

import contextlib
import time

from chatcore import events as ev
from chatcore.config import ServerConfig
from chatcore.reactor import Reactor
from chatcore.server import Server


def run_until(reactor: Reactor, condition, timeout: float = 10.0) -> None:
    """Turn ``reactor`` until ``condition()`` holds (asserted) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            reactor.stop()
    reactor.add_before_sleep(check)
    stopper = reactor.call_later(timeout, reactor.stop)
    reactor.run()
    stopper.cancel()
    reactor._before_sleep.remove(check)
    assert condition(), "condition not reached"


@contextlib.contextmanager
def running_server(config: ServerConfig, timeout: float = 10.0):
    """A started server on its own reactor and ``turn_until(condition)``; closed after."""
    reactor = Reactor()
    server = Server(config, reactor)
    server.start()
    try:
        yield server, lambda condition, timeout=timeout: run_until(reactor, condition, timeout)
    finally:
        for connection in list(server.connections):
            connection.abort(ev.Reason.DISCONNECTED)
        server.listener.close()
        reactor.close()
