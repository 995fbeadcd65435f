"""A TCP relay from 127.0.0.1 to a server that adds a fixed delay to each direction: a server
that is "far away" for the client tests of server choice, without traffic control on the
machine's loopback (which other work shares).

One thread runs a selector over every socket; what arrives is forwarded ``delay_seconds``
later (a heap of due times), in order, and an end of stream is forwarded after the data
before it. ``delay_seconds`` may be changed at any time: bytes received from then on get the
new delay (bytes already waiting keep theirs, and a shorter delay never overtakes them).
"""
from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time

TICK_SECONDS = 0.05             # the longest the thread sleeps with nothing due


class DelayProxy:
    def __init__(self, port: int, delay_seconds: float = 0.0, host: str = "127.0.0.1"):
        self.upstream = (host, port)
        self.delay_seconds = delay_seconds          # each direction: the RTT grows by twice this
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0                           # connections relayed so far
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._last_due: dict[socket.socket, float] = {}    # per destination: keep order
        self._due: list = []                        # (due, seq, destination, data or None)
        self._seq = itertools.count()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            now = time.monotonic()
            wait = TICK_SECONDS
            if self._due:
                wait = max(0.0, min(wait, self._due[0][0] - now))
            for key, _ in self._selector.select(wait):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._receive(key.fileobj)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, destination, data = heapq.heappop(self._due)
                self._deliver(destination, data)
        for sock in list(self._peers):
            sock.close()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self.accepted += 1
        for sock in (client, server):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        destination = self._peers.get(sock)
        if destination is None:
            return
        if not data:                    # the end travels behind the data, with the delay
            self._selector.unregister(sock)
        due = max(time.monotonic() + self.delay_seconds, self._last_due.get(destination, 0.0))
        self._last_due[destination] = due
        heapq.heappush(self._due, (due, next(self._seq), destination, data or None))

    def _deliver(self, destination: socket.socket, data: bytes | None) -> None:
        if destination not in self._peers:
            return
        if data is not None:
            try:
                destination.sendall(data)
                return
            except OSError:
                pass
        # End of stream (or a dead destination): close this pair.
        source = self._peers.pop(destination)
        self._peers.pop(source, None)
        for sock in (destination, source):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()
