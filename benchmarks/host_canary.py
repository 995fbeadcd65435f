"""How steady is this machine's CPU? A fixed piece of work, timed over and over.

    python -m benchmarks.host_canary --cpus 0 1 --duration 3 --fifo

On each CPU named, one process repeats the same small pure-Python computation (~150 us) and
records the thread's CPU time for each repetition. On a steady machine every repetition costs
about the same; on a shared virtual machine some cost several times more CPU time even at
SCHED_FIFO, where nothing in the guest can preempt them: the host is running something else
on the core (or its sibling) without the guest seeing it as steal time. A latency run whose
server spends such a stretch on its work has a tail of that length whatever the server does
(docs/benchmarks.md, latency). Prints one JSON object per CPU: repetitions, the CPU time per
repetition (p50, p99, p99.9, max, in us), the share of repetitions slower than ``SLOW_FACTOR``
times the median, and the slow stretches (repetitions within ``CLUSTER_GAP_MS`` of each
other) with the longest.

``--sleeps US ...`` measures wake-ups instead: on each CPU, a process sleeps each length in
turn (``time.sleep``) for ``--duration`` seconds and records how late it woke (p50, p99,
max, in us). A virtual CPU with nothing to run halts; a host that polls a halted CPU for a
while before giving its core away wakes short sleeps on time and longer ones late, so
lateness that jumps past some sleep length says the host's halt polling ends there. Run it
on an idle machine: on a busy one the CPU never halts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SLOW_FACTOR = 4.0           # a repetition this many times the median's CPU time is slow
CLUSTER_GAP_MS = 5.0        # slow repetitions closer than this belong to one slow stretch
UNIT_ITERATIONS = 2000      # the work of one repetition (~150 us of CPython here)


def unit() -> int:
    x = 0
    for i in range(UNIT_ITERATIONS):
        x += i * i
    return x


def measure(duration: float) -> list:
    """[(start monotonic ns, CPU ns)] of every repetition for ``duration`` seconds."""
    out = []
    end = time.monotonic_ns() + int(duration * 1e9)
    cpu_ns, mono_ns = time.thread_time_ns, time.monotonic_ns
    while (start := mono_ns()) < end:
        before = cpu_ns()
        unit()
        out.append((start, cpu_ns() - before))
    return out


def wake_lateness(sleep_us: float, duration: float) -> dict:
    """How late ``time.sleep(sleep_us)`` woke, over ``duration`` seconds of such sleeps."""
    late = []
    seconds = sleep_us / 1e6
    end = time.monotonic() + duration
    mono = time.monotonic
    while (start := mono()) < end:
        time.sleep(seconds)
        late.append(mono() - start - seconds)
    late.sort()
    n = len(late)
    return {"sleep_us": sleep_us, "wakeups": n, "late_p50_us": late[n // 2] * 1e6,
            "late_p99_us": late[min(n - 1, int(n * 0.99))] * 1e6, "late_max_us": late[-1] * 1e6}


def summarize(samples: list) -> dict:
    """Percentiles of the CPU time per repetition, and the slow ones and their stretches."""
    if not samples:
        return {"repetitions": 0}
    costs = sorted(cpu for _, cpu in samples)
    n = len(costs)

    def at(q: float) -> float:
        return costs[min(n - 1, int(q * n))] / 1e3

    median = costs[n // 2]
    slow = [start for start, cpu in samples if cpu > SLOW_FACTOR * median]
    stretches, longest = 0, 0.0
    if slow:
        first = last = slow[0]
        for start in slow[1:] + [None]:
            if start is None or start - last > CLUSTER_GAP_MS * 1e6:
                stretches += 1
                longest = max(longest, (last - first) / 1e6)
                if start is not None:
                    first = start
            if start is not None:
                last = start
    return {"repetitions": n, "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999),
            "max_us": costs[-1] / 1e3, "slow_share": len(slow) / n,
            "slow_stretches": stretches, "longest_stretch_ms": round(longest, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_canary",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, nargs="+", default=[0],
                        help="CPUs to measure, one process each, at the same time")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--fifo", action="store_true",
                        help="run at SCHED_FIFO 1 (needs the privilege): nothing in the "
                             "guest preempts the work, so a slow repetition is the host's")
    parser.add_argument("--sleeps", type=float, nargs="+", metavar="US",
                        help="measure wake-up lateness after sleeps of these lengths "
                             "(microseconds) instead of the CPU time of a fixed work")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)      # a worker process
    args = parser.parse_args(argv)
    if args.one is not None:
        os.sched_setaffinity(0, {args.one})
        if args.fifo:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        if args.sleeps:
            for sleep_us in args.sleeps:
                print(json.dumps({"cpu": args.one, "fifo": args.fifo,
                                  **wake_lateness(sleep_us, args.duration)}))
        else:
            print(json.dumps({"cpu": args.one, "fifo": args.fifo,
                              **summarize(measure(args.duration))}))
        return 0
    workers = [subprocess.Popen([sys.executable, "-m", "benchmarks.host_canary", "--one",
                                 str(cpu), "--duration", str(args.duration),
                                 *(["--fifo"] if args.fifo else []),
                                 *(["--sleeps", *map(str, args.sleeps)] if args.sleeps
                                   else [])],
                                stdout=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
               for cpu in args.cpus]
    status = 0
    for worker in workers:
        out, _ = worker.communicate(timeout=args.duration * (len(args.sleeps or ()) + 1)
                                    + 60)
        status |= worker.returncode
        sys.stdout.write(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
