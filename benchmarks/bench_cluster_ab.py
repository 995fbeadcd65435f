"""The cluster's cost against one node, A/B of two source trees in one alternating run.

    python -m benchmarks.bench_cluster_ab --before /tmp/old-checkout --repetitions 3 --duration 3

Arms: ``1-node`` (this tree, one server), ``2-nodes-before`` (the ``--before`` tree, its
extensions built in place or copied in: two nodes on a redis-server) and ``2-nodes`` (this
tree, likewise; with ``--unix`` also ``2-nodes-unix``, on Redis's Unix socket); each run of
each scenario starts fresh processes pinned to CPU 0 (nodes and
redis-server together, as ``run_suite`` does) with the load generator on the other cores. The
arms' order rotates each repetition. Printed: the medians of the server CPU per delivery
(summed over every node and redis-server), deliveries/s, latency p50/p99 (for ``claim``: of
Hello -> Welcome), redis-server's share of the CPU, the time the server processes waited
for a core during the run (``runq``, from /proc/PID/schedstat: the share of a latency tail
that is the machine's), and the 1-minute load average around the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from benchmarks import deploy

# name: (load generator scenario, its flags); claim: 1000 clients connecting one at a time,
# for the Hello -> Welcome latency alone (a name claim on a cluster node).
SCENARIOS = {"fanout": ("fanout", []), "rooms": ("rooms", []),
             "latency-100k": ("latency", ["--rate", "1000"]),
             "claim": ("connect", ["-c", "1000", "--connect-window", "1"])}


def _run_delay_seconds(pids) -> float:
    """Time the processes spent runnable but waiting for a core (/proc/PID/schedstat): on a
    shared machine this, not the code, is what a latency tail is made of."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def run(arm: str, tree, scenario: str, duration: float, cpus, gen_cpus, workdir) -> dict:
    if arm == "1-node":
        deployment = deploy.start_chatcore(arm, cpus, workdir)
    else:
        deployment = deploy.start_cluster(arm, cpus, workdir, nodes=2, tree=tree,
                                          redis_unix=arm.endswith("-unix"))
    out = workdir / "result.json"
    out.unlink(missing_ok=True)
    base, flags = SCENARIOS[scenario]
    cmd = [sys.executable, "-m", "benchmarks.loadgen", base,
           "--servers", ",".join(f"{h}:{p}" for h, p in deployment.addrs),
           "--server-pid", ",".join(map(str, deployment.pids)), "--duration", str(duration),
           "--json", str(out), "-q", *flags]
    if gen_cpus:
        cmd += ["--cpus", *map(str, sorted(gen_cpus)), "--procs", str(len(gen_cpus))]
    waited = _run_delay_seconds(deployment.pids)
    try:
        subprocess.run(cmd, cwd=deploy.ROOT, capture_output=True, text=True,
                       timeout=duration * 4 + 180)
        waited = _run_delay_seconds(deployment.pids) - waited
    finally:
        deployment.stop()
    result = json.loads(out.read_text())
    server = result["server"]
    redis = sum(p["cpu_seconds"] for p in server.get("processes", [])
                if p["name"] == "redis-server")
    claim = result.get("connect", {}).get("claim_ms", {})
    latency = result.get("latency_ms") or {}
    if base == "connect":                   # no deliveries: the claim latency is the figure
        latency = claim
    return {"ns": server.get("ns_per_delivery") or 0.0,
            "per_s": result.get("delivered_per_second", 0.0),
            "p50": latency.get("p50", 0.0), "p99": latency.get("p99", 0.0),
            "redis_share": redis / server["cpu_seconds"] if server["cpu_seconds"] else 0.0,
            "ok": result["ok"], "load": os.getloadavg()[0], "runq_ms": waited * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="source tree of the 'before' arm")
    parser.add_argument("--scenarios", nargs="+", default=["fanout", "rooms"],
                        choices=sorted(SCENARIOS))
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--unix", action="store_true",
                        help="a fourth arm, 2-nodes-unix: this tree's nodes on Redis's Unix "
                             "socket (unix:// URL) instead of loopback TCP")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    cpus = {cores[0]} if len(cores) > 1 else None
    gen_cpus = set(cores[1:]) if len(cores) > 1 else None
    arms = [("1-node", deploy.ROOT), ("2-nodes-before", pathlib.Path(args.before)),
            ("2-nodes", deploy.ROOT)]
    if args.unix:
        arms.append(("2-nodes-unix", deploy.ROOT))
    results: dict = {}
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="chatcore-ab-") as tmp:
        for rep in range(args.repetitions):
            order = arms[rep % len(arms):] + arms[:rep % len(arms)]
            for scenario in args.scenarios:
                for arm, tree in order:
                    r = run(arm, tree, scenario, args.duration, cpus, gen_cpus,
                            pathlib.Path(tmp))
                    results.setdefault((scenario, arm), []).append(r)
                    print(f"{scenario:13} {arm:15} {r['ns']:8.0f} ns/delivery "
                          f"{r['per_s'] / 1e3:8.0f} k/s p50 {r['p50']:7.2f} p99 "
                          f"{r['p99']:7.2f} ms redis {100 * r['redis_share']:4.1f} % "
                          f"load {r['load']:.2f} runq {r['runq_ms']:.0f} ms"
                          f"{'' if r['ok'] else ' NOT OK'}", flush=True)
    print(f"\nmedians of {args.repetitions}; load average at end {os.getloadavg()[0]:.2f}")
    for scenario in args.scenarios:
        base = statistics.median(r["ns"] for r in results[(scenario, "1-node")]) or 1.0
        for arm, _ in arms:
            rs = results[(scenario, arm)]
            ns = statistics.median(r["ns"] for r in rs)
            print(f"{scenario:13} {arm:15} {ns:8.0f} ns/delivery ({ns / base:4.2f}x) "
                  f"{statistics.median(r['per_s'] for r in rs) / 1e3:8.0f} k/s "
                  f"p50 {statistics.median(r['p50'] for r in rs):7.2f} "
                  f"p99 {statistics.median(r['p99'] for r in rs):7.2f} ms "
                  f"redis {100 * statistics.median(r['redis_share'] for r in rs):4.1f} % "
                  f"runq {statistics.median(r['runq_ms'] for r in rs):.0f} ms")


if __name__ == "__main__":
    main()
