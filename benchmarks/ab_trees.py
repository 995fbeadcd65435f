"""A/B of source trees (two commits, or one with different server flags), alternating.

    python benchmarks/ab_trees.py A=/tmp/main B=. "C=.:--metrics-port 0:scrape" --rounds 4
    python benchmarks/ab_trees.py A=/tmp/main B=. --scenario latency --rate 10000
    python benchmarks/ab_trees.py A=/tmp/main B=. --scenario rooms --proto irc

Each ARM is ``NAME=TREE[:SERVER FLAGS[:scrape]]``: the server is ``python server.py`` started
in TREE (its own chatcore, extensions built in place), pinned to CPU 0; the load generator of
this checkout runs ``--scenario`` (default ``fanout``; ``--rate`` for ``latency``) against it
on CPU 1. ``scrape`` fetches the server's metrics page every second during the run. The arms'
order rotates each round; the medians of deliveries/s, of the server's CPU nanoseconds per
delivery and of the p50/p99 latency are printed with their ratio to the first arm, and the
1-minute load average after each run (the machine is shared: quote it with the figures).
``--proto irc`` starts each server with an IRC port and drives that with the generator's IRC
worker.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import deploy  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on \S+:(\d+)")
METRICS = re.compile(r"metrics on (http://\S+)")


def run_arm(tree: str, flags: list[str], scrape: bool, duration: float, out: str,
            generator: list[str], nice: list[str], proto: str = "native") -> dict:
    # The generator's clients all come from loopback: exempt it from the per-address limit
    # and flood control, as benchmarks/run_suite does.
    env = dict(os.environ)
    flags = list(flags)
    while flags and re.fullmatch(r"[A-Z_]+=.*", flags[0]):      # VAR=value: environment
        key, _, value = flags.pop(0).partition("=")
        env[key] = value
    irc_port = None
    if proto == "irc":
        irc_port = deploy.free_port()
        flags += ["--irc-port", str(irc_port)]
    server = subprocess.Popen([*nice, "taskset", "-c", "0", sys.executable, "server.py", "--port", "0",
                               "--log-level", "INFO", "--limit-exempt", "127.0.0.0/8,::1",
                               *flags], cwd=tree, text=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = url = None
    for line in server.stderr:
        if match := METRICS.search(line):
            url = match.group(1)
        if match := LISTENING.search(line):
            port = int(match.group(1))
            break
    threading.Thread(target=server.stderr.read, daemon=True).start()
    if irc_port is not None:
        port = irc_port
        generator = [*generator, "--proto", "irc"]
    stop = threading.Event()

    def scraper() -> None:
        while not stop.wait(1.0):
            urllib.request.urlopen(url, timeout=5).read()

    if scrape:
        threading.Thread(target=scraper, daemon=True).start()
    try:
        subprocess.run([*nice, "taskset", "-c", "1", sys.executable, "-m", "benchmarks.loadgen",
                        *generator, "-p", str(port), "--server-pid", str(server.pid),
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
    parser.add_argument("--scenario", default="fanout",
                        choices=("fanout", "rooms", "dm", "latency"))
    parser.add_argument("--nice", type=int, default=0,
                        help="run server and generator at this nice level (negative: ahead "
                             "of other work on a shared machine; say so with the figures)")
    parser.add_argument("--fifo", action="store_true",
                        help="run server and generator as SCHED_FIFO priority 1 (chrt): on a "
                             "shared machine the only way to see the latency a quiet one "
                             "gives; keep runs short, they run ahead of everything else")
    parser.add_argument("--proto", choices=("native", "irc"), default="native",
                        help="drive the servers over their native protocol or over IRC")
    parser.add_argument("--rate", type=float, help="aggregate messages/s (latency: 1000 is "
                                                   "100 k deliveries/s, 10000 is 1 M)")
    parser.add_argument("--probe", type=float, default=0.0, metavar="RATE",
                        help="latency: also run the independent latency probe (echo RATE "
                             "messages/s) and print its listen/echo p99")
    args = parser.parse_args(argv)
    arms = {}
    for spec in args.arms:
        name, _, rest = spec.partition("=")
        tree, _, rest = rest.partition(":")
        flags, _, scrape = rest.partition(":")
        arms[name] = (os.path.abspath(tree), flags.split(), scrape == "scrape")
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    if args.fifo:
        nice = ["chrt", "-f", "1"]
    generator = [args.scenario] + (["--rate", str(args.rate)] if args.rate else [])
    if args.probe:
        generator += ["--probe", str(args.probe)]
    names = list(arms)
    rows: dict = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as work:
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                result = run_arm(*arms[name], args.duration, os.path.join(work, "out.json"),
                                 generator, nice, args.proto)
                latency = result.get("latency_ms") or {}
                row = (result["delivered_per_second"], result["server"]["ns_per_delivery"],
                       latency.get("p50", 0.0), latency.get("p99", 0.0),
                       latency.get("p90", 0.0))
                probe = result.get("probe") or {}
                row += tuple(probe.get(what, {}).get("p99", 0.0) for what in ("listen", "echo"))
                rows[name].append(row)
                probed = (f", probe p99 listen {row[5]:.2f} echo {row[6]:.2f} ms"
                          if probe else "")
                print(f"round {round_number} {name}: {row[0]:,.0f} deliveries/s, "
                      f"{row[1]:.1f} server ns/delivery, p50 {row[2]:.2f} ms, "
                      f"p90 {row[4]:.2f} ms, p99 {row[3]:.2f} ms{probed}, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    base = [statistics.median(column) for column in zip(*rows[names[0]])]
    for name in names:
        rate, ns, p50, p99, p90, listen, echo = (statistics.median(column)
                                                 for column in zip(*rows[name]))
        low, high = min(r[0] for r in rows[name]), max(r[0] for r in rows[name])
        print(f"{name}: median {rate:,.0f} deliveries/s ({rate / base[0]:.3f} of "
              f"{names[0]}; {low:,.0f}-{high:,.0f}), median {ns:.1f} server ns/delivery "
              f"({ns / base[1]:.3f} of {names[0]}; {min(r[1] for r in rows[name]):.0f}-"
              f"{max(r[1] for r in rows[name]):.0f}), p50 {p50:.2f} ms, p90 {p90:.2f} ms, "
              f"p99 {p99:.2f} ms "
              f"({min(r[3] for r in rows[name]):.2f}-{max(r[3] for r in rows[name]):.2f})"
              + (f", probe p99 listen {listen:.2f} echo {echo:.2f} ms" if args.probe else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
