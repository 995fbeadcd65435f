"""``python -m benchmarks.tls_bench``: what TLS costs, plain against TLS, alternating runs.

Each run starts a fresh server (plain and TLS listeners, certificates from trustme) pinned to
CPU 0 and runs ``chatcore-bench`` pinned to CPU 1: ``fanout`` for deliveries/s and server CPU
per delivery, ``connect`` for connections/s (the TLS handshake included) and the server's CPU
per connection over the whole run (handshake, holding, close). ``--baseline DIR``
adds the plain ``fanout`` of another checkout (its ``server.py``), to show a change does not
slow the plain path. Prints medians with (min-max) and the ratios; exits 1 if a run failed
its verification.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from .procstat import server_cpu_seconds
from .tls_certs import write_certificates

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
START_SECONDS = 15.0
_CPUS = sorted(os.sched_getaffinity(0))


def start_server(checkout: pathlib.Path, certs: dict, workdir: pathlib.Path):
    """A server of ``checkout`` with both listeners; returns (process, plain port, TLS port)."""
    log = workdir / "server.log"
    log.unlink(missing_ok=True)
    flags = ["--log-level", "INFO", "--port", "0"]
    if checkout == ROOT:
        flags += ["--tls-port", "0", "--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    server_cpus = {_CPUS[0]}
    proc = subprocess.Popen([PY, "server.py", *flags], cwd=checkout, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.sched_setaffinity(0, server_cpus))
    deadline = time.monotonic() + START_SECONDS
    while "listening on" not in (text := log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start:\n{text}")
        time.sleep(0.05)
    line = next(line for line in text.splitlines() if "listening on" in line)
    ports = [int(word.rsplit(":", 1)[1]) for word in line.split()
             if word.count(":") == 1 and word.rsplit(":", 1)[1].isdigit()]
    time.sleep(0.2)
    return proc, ports[0], (ports[1] if len(ports) > 1 else None)


def run_once(kind: str, scenario: str, args, certs: dict, workdir: pathlib.Path) -> dict:
    checkout = pathlib.Path(args.baseline).resolve() if kind == "baseline" else ROOT
    proc, plain_port, tls_port = start_server(checkout, certs, workdir)
    out = workdir / "result.json"
    out.unlink(missing_ok=True)
    flags = ["fanout", "--duration", str(args.duration)] if scenario == "fanout" else \
        ["connect", "-c", str(args.connections), "--duration", "0.5"]
    tls = ["--tls", "--tls-ca", certs["ca"]] if kind == "tls" else []
    port = tls_port if kind == "tls" else plain_port
    cpus = [str(c) for c in _CPUS[1:]] or [str(_CPUS[0])]
    cmd = [PY, "-m", "benchmarks.loadgen", *flags, "-p", str(port), *tls, "--server-pid",
           str(proc.pid), "--json", str(out), "-q", "--cpus", *cpus, "--procs", str(len(cpus))]
    cpu_before = server_cpu_seconds(proc.pid)
    try:
        bench = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        cpu_whole_run = server_cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    if not out.exists():
        raise RuntimeError(f"{kind} {scenario}: no result\n{bench.stderr}")
    result = json.loads(out.read_text())
    if not result["ok"]:
        warnings = [line for line in (workdir / "server.log").read_text().splitlines()
                    if " WARNING " in line or " ERROR " in line]
        print(f"{kind} {scenario} failed its verification: {'; '.join(result['problems'])}"
              f"\n  server: {' | '.join(warnings[:5]) or 'no warnings'}", file=sys.stderr)
    cpu = result["server"]["cpu_seconds"] or 0.0
    return {"ok": result["ok"], "delivered_per_second": result["delivered_per_second"],
            "ns_per_delivery": cpu * 1e9 / result["delivered"] if result["delivered"] else None,
            "connections_per_second": (result["connect"]["ready"] / result["connect"]["seconds"]
                                       if result["connect"]["seconds"] else None),
            "kib_per_connection": (result["server"]["rss_bytes_per_connection"] or 0) / 1024,
            # connect, the whole run (handshakes, holding, closing) over the clients
            "server_us_per_connection": cpu_whole_run * 1e6 / result["connect"]["clients"]}


def summary(values: list, form: str = ",.0f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (f"{statistics.median(values):{form}} "
            f"({min(values):{form}}-{max(values):{form}})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tls_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of fanout traffic")
    parser.add_argument("--connections", type=int, default=2000, help="clients for connect")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout: its plain fanout")
    args = parser.parse_args(argv)
    kinds = ["plain", "tls"] + (["baseline"] if args.baseline else [])
    runs: dict = {(k, s): [] for k in kinds for s in ("fanout", "connect")}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        certs = write_certificates(str(workdir / "certs"))
        for _ in range(args.repetitions):
            for scenario in ("fanout", "connect"):
                for kind in kinds:
                    if kind == "baseline" and scenario == "connect":
                        continue
                    runs[kind, scenario].append(run_once(kind, scenario, args, certs, workdir))
    print("| build | fanout deliveries/s | server ns/delivery | connect: connections/s | "
          "server µs/connection | KiB/connection |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        fan, con = runs[kind, "fanout"], runs[kind, "connect"]
        print(f"| {kind} | {summary([r['delivered_per_second'] for r in fan])} | "
              f"{summary([r['ns_per_delivery'] for r in fan])} | "
              f"{summary([r['connections_per_second'] for r in con])} | "
              f"{summary([r['server_us_per_connection'] for r in con])} | "
              f"{summary([r['kib_per_connection'] for r in con], '.1f')} |")

    def ratio(kind: str, base: str, scenario: str, key: str) -> str:
        def median(k):
            return statistics.median(r[key] for r in runs[k, scenario])
        return f"x{median(kind) / median(base):.2f}"
    print(f"\nTLS / plain: fanout deliveries/s "
          f"{ratio('tls', 'plain', 'fanout', 'delivered_per_second')}, ns/delivery "
          f"{ratio('tls', 'plain', 'fanout', 'ns_per_delivery')}, connections/s "
          f"{ratio('tls', 'plain', 'connect', 'connections_per_second')}")
    if args.baseline:
        print(f"plain / baseline: fanout deliveries/s "
              f"{ratio('plain', 'baseline', 'fanout', 'delivered_per_second')}, ns/delivery "
              f"{ratio('plain', 'baseline', 'fanout', 'ns_per_delivery')}")
    failed = [k for k, rs in runs.items() if any(not r["ok"] for r in rs)]
    if failed:
        print(f"VERIFICATION FAILED in {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
