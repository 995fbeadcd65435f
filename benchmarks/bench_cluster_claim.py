"""Where a name claim's tail comes from: sequential Hello -> Welcome against one node and a
cluster node, with the time every process spent waiting for a core beside it.

    python -m benchmarks.bench_cluster_claim --count 1000 --repetitions 3

Each run starts fresh servers pinned to the first core (a redis-server and two nodes, or one
node alone) and this process on the others; ``count`` clients connect one after another and
each times its Hello -> Welcome (one claim). Printed per run: p50/p99/max, the samples over
1 ms and their time above the median summed, and the run-queue wait (/proc/PID/schedstat)
of this process and of the servers during the run. When the slow samples' excess is about
the run-queue waits, the tail is the machine's scheduling, not the claim.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import socket
import statistics
import struct
import tempfile
import time

from benchmarks import deploy
from benchmarks.bench_cluster_ab import _run_delay_seconds
from chatcore import events as ev
from chatcore.protocol import PROTOCOL_VERSION, encode_event

WELCOME_TYPE = 0x81
SLOW_MS = 1.0


def _welcomed(sock: socket.socket) -> None:
    """Read frames until a Welcome (anything else before it is skipped)."""
    buffer = b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection before Welcome")
        buffer += data
        pos = 0
        while len(buffer) - pos >= 5:
            (length,) = struct.unpack_from(">I", buffer, pos)
            if len(buffer) - pos - 4 < length:
                break
            if buffer[pos + 4] == WELCOME_TYPE:
                return
            pos += 4 + length
        buffer = buffer[pos:]


def claims(port: int, count: int, tag: str) -> list[float]:
    """Hello -> Welcome of ``count`` clients, one after another, in ms (they stay open)."""
    held, samples = [], []
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port), 10)
            held.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = encode_event(ev.Hello(PROTOCOL_VERSION, f"{tag}{i}", "bench", 1))
            started = time.perf_counter()
            sock.sendall(hello)
            _welcomed(sock)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        for sock in held:
            sock.close()
    return samples


def run(arm: str, count: int, cpus, workdir: pathlib.Path, tag: str) -> dict:
    deployment = (deploy.start_chatcore(arm, cpus, workdir) if arm == "1-node"
                  else deploy.start_cluster(arm, cpus, workdir, nodes=2))
    try:
        servers_before, own_before = (_run_delay_seconds(deployment.pids),
                                      _run_delay_seconds([os.getpid()]))
        samples = claims(deployment.addrs[0][1], count, tag)
        servers = _run_delay_seconds(deployment.pids) - servers_before
        own = _run_delay_seconds([os.getpid()]) - own_before
    finally:
        deployment.stop()
    ordered = sorted(samples)
    median = statistics.median(ordered)
    slow = [s for s in ordered if s > SLOW_MS]
    return {"p50": median, "p99": ordered[int(len(ordered) * 0.99)], "max": ordered[-1],
            "slow": len(slow), "excess_ms": sum(s - median for s in slow),
            "runq_client_ms": own * 1000, "runq_servers_ms": servers * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    cpus = deploy.take_server_core()
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="chatcore-claim-") as tmp:
        for rep in range(args.repetitions):
            arms = ("1-node", "2-nodes") if rep % 2 == 0 else ("2-nodes", "1-node")
            for arm in arms:
                r = run(arm, args.count, cpus, pathlib.Path(tmp), f"c{rep}x")
                results.setdefault(arm, []).append(r)
                print(f"{arm:8} p50 {r['p50']:.3f} p99 {r['p99']:.3f} max {r['max']:.2f} ms; "
                      f"{r['slow']} over {SLOW_MS:g} ms, {r['excess_ms']:.0f} ms above the "
                      f"median; run-queue wait: client {r['runq_client_ms']:.0f} ms, servers "
                      f"{r['runq_servers_ms']:.0f} ms; load {os.getloadavg()[0]:.2f}",
                      flush=True)
    print(f"\nmedians of {args.repetitions}; load average at end {os.getloadavg()[0]:.2f}")
    for arm, rs in results.items():
        print(f"{arm:8} " + " ".join(f"{k} {statistics.median(r[k] for r in rs):.3f}"
                                     for k in ("p50", "p99", "max", "slow", "excess_ms",
                                               "runq_client_ms", "runq_servers_ms")))


if __name__ == "__main__":
    main()
