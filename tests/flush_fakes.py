"""Fakes for the per-turn write flush (chatcore.connection.flushing): an outlet with pending
buffers, a reactor that queues call_soon callbacks and records sleep_until, and buffers that
log their writes; and real TCP pairs on loopback for the tests that write to sockets."""
from __future__ import annotations

import socket

from chatcore.connection.flushing import _write_more


def tcp_pairs(count: int, sndbuf: int = 0):
    """``count`` connected (writer, reader) TCP pairs on 127.0.0.1; writers non-blocking."""
    pairs = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for _ in range(count):
            writer = socket.create_connection(listener.getsockname())
            reader, _ = listener.accept()
            writer.setblocking(False)
            if sndbuf:
                writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
            reader.setblocking(False)
            pairs.append((writer, reader))
    return pairs


class FakeOutlet:
    def __init__(self):
        self.pending: list = []

    def take_pending(self) -> list:
        pending, self.pending = self.pending, []
        return pending


class FakeReactor:
    def __init__(self):
        self.soon: list = []
        self.wake_at: list = []

    def call_soon(self, callback, *args) -> None:
        self.soon.append(callback)

    def sleep_until(self, when: float) -> None:
        self.wake_at.append(when)

    def run_soon(self) -> list:
        """Run what was queued (one turn's call_soon callbacks); returns them, minus the
        flusher's own keep-turning callback."""
        queued, self.soon = self.soon, []
        for callback in queued:
            callback()
        return [callback for callback in queued if callback is not _write_more]


class Buffer:
    """An output buffer whose owner records its writes in ``log``."""

    def __init__(self, name: str, log: list, on_flush=None):
        self.name = name
        self.owner = self
        self._log = log
        self._on_flush = on_flush

    def flush(self) -> None:
        self._log.append(self.name)
        if self._on_flush is not None:
            self._on_flush()

    def __repr__(self) -> str:
        return self.name
