"""chatcore-bench: drives a chatcore server with many real clients and checks what they receive.

Scenarios (each bounded in clients and time; flags override the defaults shown by ``--help``):

* ``fanout``  one room, N members, S senders;
* ``rooms``   many rooms of equal size, senders spread over them;
* ``dm``      pairs of users chatting directly;
* ``connect`` open and hand-shake N clients, hold them, report connect time and server memory;
* ``latency`` fan-out at a fixed rate below saturation, for the latency distribution.

Every message text carries its sender id, sequence number and send time (``verify.stamp``);
receivers count frames in bulk (``chatcore._loadgen``, or its pure twin) and check per-sender
order, losses and duplicates. A run with any loss, reordering, error or failed connection says so
on stderr and exits 1. Clients are spread over ``--procs`` processes, each one single-threaded
epoll loop; all share CLOCK_MONOTONIC, so latencies are comparable across them. ``--tls``
speaks TLS (the server's ``tls_port``); its handshake is part of the connect time.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import ssl
import subprocess
import sys
import time

from .procstat import cpu_seconds_of, default_procs, rss_bytes_of
from .report import CSV_FIELDS, _emit, _ms, csv_row, human_table
from .scenarios import SCENARIOS, make_plan
from .summary import summarize
from .verify import TEXT_HEADER_BYTES
from .worker import (PROGRESS_SECONDS, WINDOW_MESSAGES, Worker, _now_us, _raise_fd_limit,
                     _worker_main)


# -- the run ----------------------------------------------------------------------------------

def tls_context(args) -> ssl.SSLContext | None:
    """With ``--tls``: trust ``--tls-ca``, or check nothing (loopback benchmarks only)."""
    if not args.tls:
        return None
    context = ssl.create_default_context(cafile=args.tls_ca)
    if not args.tls_ca:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def worker_class(args):
    """The native protocol's worker, or with ``--proto irc`` the IRC one."""
    if args.proto == "irc":
        try:
            from .irc_client import IrcWorker
        except ImportError as exc:
            raise RuntimeError(f"--proto irc is not available: {exc}") from None
        return IrcWorker
    return Worker


def run(args) -> dict:
    kind = worker_class(args)
    plan = make_plan(args)
    procs = args.procs or default_procs(args.server_pid)
    procs = max(1, min(procs, len(plan.clients) or 1))
    ctx = multiprocessing.get_context("fork")
    rss_idle = rss_bytes_of(args.server_pids)
    cpus = set(args.cpus) if args.cpus else None
    tls = tls_context(args)
    workers, pipes = [], []
    for k in range(procs):
        parent_end, child_end = ctx.Pipe()
        specs = [s for s in plan.clients if s.index % procs == k]
        p = ctx.Process(target=_worker_main, daemon=True,
                        args=(kind, args.servers, plan, specs, child_end, cpus, tls))
        p.start()
        child_end.close()
        workers.append(p)
        pipes.append(parent_end)
    progress = Progress(args.quiet, len(plan.clients))
    try:
        return _conduct(args, plan, procs, workers, pipes, rss_idle, progress)
    finally:
        progress.done()
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


class Progress:
    """The live line on stderr."""

    def __init__(self, quiet: bool, clients: int):
        self.enabled = not quiet and (sys.stderr.isatty()
                                      or bool(os.environ.get("CHATCORE_BENCH_PROGRESS")))
        self.clients = clients
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False


def _collect(pipes, kinds, state, on_progress, timeout: float) -> None:
    """Read worker messages until each pipe has sent one of ``kinds``; state[k] keeps the last."""
    deadline = time.monotonic() + timeout
    waiting = {k for k in range(len(pipes))}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(waiting)} load generator process(es) did not answer")
        ready = multiprocessing.connection.wait([pipes[k] for k in waiting], min(left, 0.25))
        for pipe in ready:
            k = pipes.index(pipe)
            try:
                msg = pipe.recv()
            except EOFError:
                raise RuntimeError(f"load generator process {k} died") from None
            state[k] = msg
            if msg[0] in kinds:
                waiting.discard(k)
        on_progress()


def _conduct(args, plan, procs, workers, pipes, rss_idle, progress) -> dict:
    n = len(plan.clients)
    state = [("connecting", 0, 0)] * procs
    t_setup = time.monotonic()

    def show_connect():
        ready = sum(s[1] for s in state if s[0] in ("connecting", "ready"))
        bad = sum(s[2] for s in state if s[0] in ("connecting", "ready"))
        progress.show(f"{plan.scenario}: connecting {ready}/{n}, failed {bad}, "
                      f"{time.monotonic() - t_setup:.1f}s")

    _collect(pipes, ("ready",), state, show_connect, args.setup_timeout)
    probe = start_probe(args, plan) if args.probe else None
    rss_connected = rss_bytes_of(args.server_pids)
    cpu0 = cpu_seconds_of(args.server_pids)
    go_us = _now_us() + 50_000
    stop_us = go_us + int(plan.duration * 1e6)
    for pipe in pipes:
        pipe.send(("go", go_us, stop_us))
    if probe is not None:
        probe.stdin.write(f"{go_us}\n")
        probe.stdin.flush()
    rss_peak = rss_connected or 0
    rss_samples = []
    last = [(0, 0, 0)] * procs
    results: list = [None] * procs
    hold_until = time.monotonic() + plan.duration + max(5.0, plan.duration) + 30.0
    prev = (time.monotonic(), 0, 0)

    def on_message():
        nonlocal rss_peak, prev
        rss = rss_bytes_of(args.server_pids)
        if rss:
            rss_peak = max(rss_peak, rss)
            if _now_us() < stop_us:
                rss_samples.append(rss)
        for k, msg in enumerate(state):
            if msg[0] == "progress":
                last[k] = msg[1:]
            elif msg[0] == "result":
                results[k] = msg[1]
        sent = sum(x[0] for x in last)
        delivered = sum(x[1] for x in last)
        errors = sum(x[2] for x in last)
        now = time.monotonic()
        if now - prev[0] >= PROGRESS_SECONDS:
            dt = now - prev[0]
            phase = "run" if _now_us() < stop_us else "drain"
            progress.show(f"{plan.scenario} {phase} {max(0.0, (_now_us() - go_us) / 1e6):5.1f}s: "
                          f"sent {(sent - prev[1]) / dt:,.0f}/s, delivered "
                          f"{(delivered - prev[2]) / dt:,.0f}/s, errors {errors}")
            prev = (now, sent, delivered)

    _collect(pipes, ("result",), state, on_message, hold_until - time.monotonic())
    cpu1 = cpu_seconds_of(args.server_pids)
    for k, msg in enumerate(state):
        results[k] = msg[1]
    result = summarize(args, plan, procs, results, go_us, stop_us, cpu0, cpu1, rss_idle,
                       rss_connected, rss_peak, rss_samples)
    if probe is not None:
        result["probe"] = finish_probe(probe)
    return result


def start_probe(args, plan):
    """``--probe``: the independent latency probe (benchmarks.latency_probe) on the first
    server, listening in the first sender's room and echoing at ``--probe`` messages a
    second, SCHED_FIFO on the generator's cores; returns once it has joined."""
    host, port = args.servers[0]
    room = next((s.room for s in plan.clients if s.sender and s.room and s.server == 0), None)
    cmd = [sys.executable, "-m", "benchmarks.latency_probe", "--host", host, "-p", str(port),
           "--echo-rate", str(args.probe), "--duration", str(plan.duration), "--wait-go",
           "--fifo"]
    if room:
        cmd += ["--room", room]
    if args.cpus:
        cmd += ["--cpus", *map(str, args.cpus)]
    if args.probe_samples:
        cmd += ["--samples", args.probe_samples]
    probe = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = probe.stdout.readline().strip()
    if line != "ready":
        probe.kill()
        probe.wait()
        raise RuntimeError(f"the latency probe did not start ({line or 'no answer'})")
    return probe


def probe_line(probe) -> str:
    """The probe's figures for the one-line summary ('' without a probe)."""
    if not probe:
        return ""
    if "error" in probe:
        return f"; probe: {probe['error']}"
    parts = [f"{what} p50 {probe[what]['p50']:.2f} p99 {probe[what]['p99']:.2f} ms"
             for what in ("listen", "echo") if probe[what].get("count")]
    return "; probe " + ", ".join(parts)


def finish_probe(probe) -> dict:
    try:
        out, _ = probe.communicate(timeout=30)
        return json.loads(out)
    except (subprocess.TimeoutExpired, ValueError) as exc:
        probe.kill()
        probe.wait()
        return {"error": f"the latency probe gave no result: {exc}"}


# -- the command ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcore-bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="fanout", choices=sorted(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=7878)
    parser.add_argument("--servers", metavar="HOST:PORT,...",
                        help="several servers (cluster nodes): clients are spread over them "
                             "round-robin, so every room has members on each; overrides "
                             "--host and --port")
    parser.add_argument("--proto", choices=("native", "irc"), default="native",
                        help="wire protocol: chatcore's native one, or IRC (point -p at an IRC "
                             "port: chatcore's --irc-port, ngIRCd, InspIRCd)")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS (point -p at the server's tls_port)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="with --tls, verify the server against this CA (default: no check, "
                             "for loopback benchmarks)")
    parser.add_argument("-c", "--clients", type=int, help="clients (connections)")
    parser.add_argument("--rooms", type=int, help="rooms the clients are spread over")
    parser.add_argument("--senders", type=int, help="clients that send")
    parser.add_argument("--rate", type=float,
                        help="aggregate messages sent per second; 0 = as fast as the server "
                             "acknowledges them, WINDOW in flight per sender")
    parser.add_argument("--window", type=int, default=WINDOW_MESSAGES,
                        help="in-flight messages per sender when --rate is 0 (default %(default)s)")
    parser.add_argument("-d", "--size", type=int,
                        help=f"message text bytes (at least {TEXT_HEADER_BYTES}: the stamp)")
    parser.add_argument("--duration", type=float, help="seconds of traffic (connect: holding)")
    parser.add_argument("--procs", type=int, default=0,
                        help="generator processes (default: one per core the server is not on)")
    parser.add_argument("--cpus", type=int, nargs="+", help="pin the generator to these cores")
    parser.add_argument("--server-pid", metavar="PID[,PID...]",
                        help="the server's pid, for its CPU and RSS from /proc; several "
                             "(every node and redis-server) are summed")
    parser.add_argument("--connect-window", type=int, default=256,
                        help="handshakes in progress per generator process (default "
                             "%(default)s, the listen backlog; 1: one after another, for the "
                             "name-claim latency alone)")
    parser.add_argument("--probe", type=float, default=0.0, metavar="RATE",
                        help="also run the independent latency probe (benchmarks."
                             "latency_probe): it listens in the first room and sends RATE "
                             "messages a second in a room of its own; its latencies go in the "
                             "JSON as 'probe' (default: off)")
    parser.add_argument("--probe-samples", metavar="PATH",
                        help="the probe writes every sample to PATH (benchmarks.latency_probe "
                             "--samples)")
    parser.add_argument("--setup-timeout", type=float, default=120.0,
                        help="seconds allowed to connect and join everyone")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write the result as JSON (to stdout without PATH)")
    parser.add_argument("--csv", nargs="?", const="-", metavar="PATH",
                        help="write the result as one CSV row with header")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line; one summary line")
    return parser


def parse_address(text: str) -> tuple:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"chatcore-bench: --servers: {text!r} is not HOST:PORT")
    return (host.strip("[]") or "127.0.0.1", int(port))


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.probe and args.proto != "native":
        parser.error("--probe speaks chatcore's native protocol: not with --proto irc")
    for key, value in SCENARIOS[args.scenario].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.server_pids = [int(p) for p in (args.server_pid or "").split(",") if p.strip()]
    args.server_pid = args.server_pids[0] if args.server_pids else None
    if args.servers:
        args.servers = [parse_address(a) for a in args.servers.split(",") if a.strip()]
    else:
        args.servers = [(args.host, args.port)]
    if args.size < TEXT_HEADER_BYTES:
        args.size = TEXT_HEADER_BYTES
    if args.scenario in ("fanout", "latency") and args.rooms != 1:
        pass                              # allowed: several rooms of the same shape
    if args.scenario in ("fanout", "rooms", "latency"):
        args.rooms = max(1, min(args.rooms, args.clients))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _raise_fd_limit()
    try:
        result = run(args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"chatcore-bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        _emit(args.json, json.dumps(result, indent=2) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_FIELDS)
        writer.writeheader()
        writer.writerow(csv_row(result))
        _emit(args.csv, out.getvalue())
    if args.quiet:
        if args.json != "-" and args.csv != "-":
            lat, srv = result["latency_ms"], result["server"] or {}
            ns = srv.get("ns_per_delivery")
            print(f"{result['scenario']}: {result['delivered_per_second']:,.0f} delivered/s"
                  + ("" if ns is None else f" at {ns:.0f} ns server CPU/delivery")
                  + f", p99 {_ms(lat['p99'])} ms, {'OK' if result['ok'] else 'FAILED'}"
                  + (" (generator SATURATED)" if result["generator"]["saturated"] else "")
                  + probe_line(result.get("probe")))
    elif args.json != "-" and args.csv != "-":
        print(human_table(result))
    if not result["ok"]:
        print(f"chatcore-bench: VERIFICATION FAILED ({result['scenario']}): "
              + "; ".join(result["problems"]), file=sys.stderr)
        return 1
    if result["generator"]["saturated"]:
        gen = result["generator"]
        runnable = gen.get("busiest_process_runnable")
        print("chatcore-bench: note: the generator was the saturated side "
              f"(busiest process {gen['busiest_process_utilization']:.0%} CPU"
              + ("" if runnable is None else f", runnable {runnable:.0%} of the time")
              + "); the server may take more", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
