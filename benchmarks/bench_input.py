"""The server's input path per request, in process: one read of 64 pipelined SendRoom frames
into a room of N members (socketpairs), through ``Connection.on_readable``.

    python -m benchmarks.bench_input [members] [repetitions]

Prints the median and 10th percentile of nanoseconds per request. It runs against any
checkout (also the ones before fair turns), so a before/after A/B is: run it alternately in
two work trees.
"""
from __future__ import annotations

import socket
import statistics
import sys
import time

from chatcore import events as ev
from chatcore.codec import IMPLEMENTATION
from chatcore.config import ServerConfig
from chatcore.connection import Connection
from chatcore.protocol import PROTOCOL_VERSION, encode_event
from chatcore.reactor import Reactor
from chatcore.server import Server

BATCH = 64


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    members = int(argv[0]) if argv else 1
    repetitions = int(argv[1]) if len(argv) > 1 else 300
    reactor = Reactor()
    server = Server(ServerConfig(port=0), reactor)
    server.start()
    pairs = []
    for i in range(members):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        connection = Connection(server, ours, ("127.0.0.1", 1))     # exempt: no address key
        server.connections.add(connection)
        theirs.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, f"u{i}", "bench", request_id=1))
                       + encode_event(ev.JoinRoom("r", request_id=2)))
        connection.on_readable()
        pairs.append((connection, theirs))
    sender, peer = pairs[0]
    batch = b"".join(encode_event(ev.SendRoom("r", "hello world", request_id=i + 10))
                     for i in range(BATCH))
    samples = []
    for _ in range(repetitions):
        peer.sendall(batch)
        started = time.perf_counter_ns()
        sender.on_readable()
        samples.append((time.perf_counter_ns() - started) / BATCH)
        server.flush_pending()
        for _, theirs in pairs:
            try:
                while theirs.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
    samples.sort()
    print(f"{IMPLEMENTATION} members={members}: {statistics.median(samples):.0f} ns/request "
          f"median, {samples[len(samples) // 10]:.0f} p10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
