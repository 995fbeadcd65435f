"""What rooms across cluster nodes cost a member: room-message latency (sent -> received by
another member, and sent -> the sender's Ack) on one server without Redis, in a room whose
members are all on one cluster node (local: delivered at once), and in a room shared by two
nodes (one PUBLISH, delivered in Redis's order, the origin too).

Starts its own redis-server (127.0.0.1, a free port, no persistence) and server processes on
the active hot path; one message in flight at a time, so the figures are latencies, not
throughput. Prints p50/p99/max in milliseconds per case.

    python -m benchmarks.bench_cluster_rooms [--count 1000]
"""
from __future__ import annotations

import argparse
import sys
import time

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.codec import IMPLEMENTATION

try:
    from .bench_cluster import start_redis, start_server, summary
except ImportError:                                     # run as a script
    from bench_cluster import start_redis, start_server, summary


def room_latencies(alice: ChatClient, bob: ChatClient, count: int) -> tuple[list, list]:
    """(sent -> bob has it, sent -> alice has her Ack), one message at a time."""
    delivered, acked = [], []
    for i in range(count):
        text = f"message {i}"
        started = time.perf_counter()
        request_id = alice.send(ev.SendRoom("bench", text))
        message = bob.wait_for(ev.RoomMessage)
        delivered.append(time.perf_counter() - started)
        alice.wait_for(lambda e: type(e) is ev.Ack and e.request_id == request_id)
        acked.append(time.perf_counter() - started)
        assert message.text == text, message
        alice.drain()                   # her own copy of the message
    return delivered, acked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="samples per case")
    args = parser.parse_args(argv)
    redis, url = start_redis()
    processes = [redis]
    try:
        alone, alone_port = start_server()
        alpha, alpha_port = start_server("--redis", url, "--server-name", "alpha")
        beta, beta_port = start_server("--redis", url, "--server-name", "beta")
        processes += [alone, alpha, beta]
        print(f"hot path {IMPLEMENTATION}, {args.count} samples per case, one in flight")
        for case, (label, a_port, b_port) in enumerate((
                ("one server", alone_port, alone_port),
                ("one cluster node (local room)", alpha_port, alpha_port),
                ("across two nodes (shared room)", alpha_port, beta_port))):
            alice, bob = ChatClient("127.0.0.1", a_port), ChatClient("127.0.0.1", b_port)
            alice.connect(f"alice{case}")
            bob.connect(f"bob{case}")
            alice.join("bench")
            bob.join("bench")
            room_latencies(alice, bob, 50)              # warm up
            delivered, acked = room_latencies(alice, bob, args.count)
            print(f"room message, {label:<31}: delivered {summary(delivered)}")
            print(f"{'':<45}  Ack       {summary(acked)}")
            alice.quit()
            bob.quit()
    finally:
        for proc in reversed(processes):
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
