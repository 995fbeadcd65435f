"""How long a cluster node holds its loop when it has many users: its longest loop turns.

    python -m benchmarks.bench_cluster_turns before=/tmp/old-checkout after=. --users 5000

Each arm (``NAME=TREE``: a source tree, its extensions built in place) runs a redis-server and
one node pinned to the first core with the node's turn trace on (``CHATCORE_TRACE_TURNS``,
chatcore/reactor.py); this process, on the other cores, connects ``--users`` clients (a name
claim each), then holds them idle for ``--seconds``. Printed per run: the turns of that idle
stretch (announcement ticks rewrite user records, the server's tick pings and checks every
connection), their p99.9 and longest wall time and the five longest with their CPU time and
the part that was the end-of-turn flush (writes to clients and Redis). A
message that arrives during a turn waits for it: the longest turn bounds the tail a node of
that many users adds to everyone's latency. Arms alternate, rounds rotate their order.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import socket
import statistics
import sys
import tempfile
import time

from benchmarks import deploy
from benchmarks.bench_cluster_claim import _welcomed
from benchmarks.latency_trace import read_turns
from chatcore import events as ev
from chatcore.protocol import PROTOCOL_VERSION, encode_event


def hold_users(port: int, users: int, seconds: float) -> tuple[float, float]:
    """Connect ``users`` clients (each welcomed), hold them idle: (start, end) of the idle
    stretch in CLOCK_MONOTONIC seconds, the clock of the node's trace."""
    held = []
    try:
        for i in range(users):
            sock = socket.create_connection(("127.0.0.1", port), 10)
            held.append(sock)
            sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, f"u{i}", "bench", 1)))
            _welcomed(sock)
        start = time.monotonic()
        time.sleep(seconds)
        return start, time.monotonic()
    finally:
        for sock in held:
            sock.close()


def run(tree: str, users: int, seconds: float, cpus, workdir: pathlib.Path) -> dict:
    redis, url = deploy.start_redis(cpus, workdir)
    trace = workdir / "node.turns"
    trace.unlink(missing_ok=True)
    try:
        node, port, _ = deploy._chatcore_node(
            "node", cpus, workdir, ("--redis", url, "--server-name", "node0"),
            {"CHATCORE_TRACE_TURNS": str(trace)}, tree=pathlib.Path(tree))
        try:
            start, end = hold_users(port, users, seconds)
        finally:
            node.terminate()
            node.wait(30)
    finally:
        redis.terminate()
        redis.wait(10)
    turns = [row for row in read_turns(str(trace)) if start <= row[0] and row[2] <= end]
    walls = sorted((row[2] - row[0], row[7], row[1] - row[0]) for row in turns)
    return {"turns": len(walls), "p999_ms": walls[int(len(walls) * 0.999)][0] * 1e3,
            "max_ms": walls[-1][0] * 1e3,
            "longest": [(round(w * 1e3, 1), round(c * 1e3, 1), round((w - k) * 1e3, 1))
                        for w, c, k in walls[-5:][::-1]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", metavar="NAME=TREE")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=7.0,
                        help="the idle stretch (three announcement ticks at the default 2 s)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    arms = [arm.partition("=")[::2] for arm in args.arms]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.users + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.users + 1024), hard))
    cpus = deploy.take_server_core()
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="chatcore-turns-") as tmp:
        for rnd in range(args.rounds):
            for name, tree in arms[rnd % len(arms):] + arms[:rnd % len(arms)]:
                r = run(tree, args.users, args.seconds, cpus, pathlib.Path(tmp))
                results.setdefault(name, []).append(r)
                print(f"{name:10} {r['turns']:6} turns, p99.9 {r['p999_ms']:6.2f} ms, longest "
                      f"{r['max_ms']:6.2f} ms; longest five (wall, cpu, of which the flush, ms) {r['longest']}; "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nmedians of {args.rounds}, {args.users} idle users; load average at end "
          f"{os.getloadavg()[0]:.2f}")
    for name, rs in results.items():
        print(f"{name:10} p99.9 {statistics.median(r['p999_ms'] for r in rs):.2f} ms, longest "
              f"{statistics.median(r['max_ms'] for r in rs):.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
