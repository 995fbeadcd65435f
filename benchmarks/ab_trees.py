"""Fan-out A/B of source trees (two commits, or one with different server flags), alternating.

    python benchmarks/ab_trees.py A=/tmp/main B=. "C=.:--metrics-port 0:scrape" --rounds 4

Each ARM is ``NAME=TREE[:SERVER FLAGS[:scrape]]``: the server is ``python server.py`` started
in TREE (its own chatcore, extensions built in place), pinned to CPU 0; the load generator of
this checkout runs ``fanout`` against it on CPU 1. ``scrape`` fetches the server's metrics page
every second during the run. The arms' order rotates each round; the medians of deliveries/s
and of the server's CPU nanoseconds per delivery are printed with their ratio to the first arm.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on \S+:(\d+)")
METRICS = re.compile(r"metrics on (http://\S+)")


def run_arm(tree: str, flags: list[str], scrape: bool, duration: float, out: str) -> dict:
    # The generator's clients all come from loopback: exempt it from the per-address limit
    # and flood control, as benchmarks/run_suite does.
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "server.py", "--port", "0",
                               "--log-level", "INFO", "--limit-exempt", "127.0.0.0/8,::1",
                               *flags], cwd=tree, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = url = None
    for line in server.stderr:
        if match := METRICS.search(line):
            url = match.group(1)
        if match := LISTENING.search(line):
            port = int(match.group(1))
            break
    threading.Thread(target=server.stderr.read, daemon=True).start()
    stop = threading.Event()

    def scraper() -> None:
        while not stop.wait(1.0):
            urllib.request.urlopen(url, timeout=5).read()

    if scrape:
        threading.Thread(target=scraper, daemon=True).start()
    try:
        subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "benchmarks.loadgen",
                        "fanout", "-p", str(port), "--server-pid", str(server.pid),
                        "--duration", str(duration), "--json", out, "-q"],
                       cwd=HERE, check=True, timeout=duration * 4 + 120)
    finally:
        stop.set()
        server.terminate()
        server.wait(10)
    with open(out) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", metavar="NAME=TREE[:FLAGS[:scrape]]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    arms = {}
    for spec in args.arms:
        name, _, rest = spec.partition("=")
        tree, _, rest = rest.partition(":")
        flags, _, scrape = rest.partition(":")
        arms[name] = (os.path.abspath(tree), flags.split(), scrape == "scrape")
    names = list(arms)
    rows: dict = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as work:
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                result = run_arm(*arms[name], args.duration, os.path.join(work, "out.json"))
                row = (result["delivered_per_second"], result["server"]["ns_per_delivery"])
                rows[name].append(row)
                print(f"round {round_number} {name}: {row[0]:,.0f} deliveries/s, "
                      f"{row[1]:.1f} server ns/delivery", flush=True)
    base = [statistics.median(column) for column in zip(*rows[names[0]])]
    for name in names:
        rate, ns = (statistics.median(column) for column in zip(*rows[name]))
        low, high = min(r[0] for r in rows[name]), max(r[0] for r in rows[name])
        print(f"{name}: median {rate:,.0f} deliveries/s ({rate / base[0]:.3f} of "
              f"{names[0]}; {low:,.0f}-{high:,.0f}), median {ns:.1f} server ns/delivery "
              f"({ns / base[1]:.3f} of {names[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
