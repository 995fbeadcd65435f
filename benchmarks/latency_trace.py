"""Where a slow delivery's time went: the server's turn trace lined up with the probe's samples.

    python benchmarks/latency_trace.py cc=. "fb=.:CHATCORE_NO_EXTENSIONS=1" --rate 1000 \\
        --rounds 3 --duration 4 --fifo

Each ARM (``NAME=TREE[:FLAGS]``, as in benchmarks/ab_trees.py; ``VAR=value`` words first set
the server's environment) runs the ``latency`` scenario at ``--rate`` with the independent
latency probe, the server pinned to CPU 0 with its turn trace on (``CHATCORE_TRACE_TURNS``,
chatcore/reactor.py) and the probe writing every sample. Arms alternate, rounds rotate their
order. Per run it prints the generator's and the probe's p99, the server's CPU per delivery,
and, for each probe echo slower than ``--slow`` ms (a message that meets nobody's fan-out and
no generator), what the server was doing between its send and its return:

* ``asleep``: waiting in ``select`` with the message already sent (woken late: the kernel or
  the host did not run it),
* ``held``: sleeping in a write-coalescing hold (``sleep_until``),
* ``busy``: running turns (its own work: other messages' reads, fan-outs, writes),
* ``off-core``: inside a turn but not on its core (wall time minus the thread's CPU time),

summed over the slow echoes, with the longest single turn and the longest single wait among
them; and over the whole run, the longest turns and holds. ``foreign FIFO`` is the CPU time
other SCHED_FIFO processes (another benchmark on the shared machine) used during the run: a
run with much of it measured them, not the server.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on \S+:(\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FOREIGN_FIFO_ALLOWED = 0.05     # s of another real-time process's CPU a run may contain


def read_turns(path: str) -> list:
    """The turn trace's rows as tuples of floats (see chatcore.reactor.TurnTrace)."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                rows.append(tuple(float(x) for x in line.split()))
    return rows


def read_samples(path: str) -> dict:
    """{"listen": [(sent_s, latency_s)], "echo": [...]} from a probe's ``--samples`` file."""
    out: dict = {"listen": [], "echo": []}
    with open(path) as f:
        for line in f:
            kind, sent, latency = line.split()
            out[kind].append((int(sent) / 1e6, int(latency) / 1e6))
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def attribute(turns: list, start: float, end: float) -> dict:
    """Seconds of [start, end] the server spent asleep in select, held, busy, off-core."""
    parts = {"asleep": 0.0, "held": 0.0, "busy": 0.0, "off_core": 0.0,
             "longest_turn": 0.0, "longest_wait": 0.0}
    starts = [row[0] for row in turns]
    i = max(0, bisect.bisect_right(starts, start) - 1)
    while i < len(turns) and turns[i][0] < end:
        woke, _worked, hooked, held, _timeout, _ready, waited, cpu = turns[i]
        wall = hooked - woke
        busy = _overlap(woke, hooked, start, end)
        if busy > 0 and wall > 0:
            off = max(0.0, wall - cpu) * busy / wall
            parts["busy"] += busy - off
            parts["off_core"] += off
            parts["longest_turn"] = max(parts["longest_turn"], wall)
        # The wait after the turn: a hold first (when there was one), then select.
        parts["held"] += _overlap(hooked, hooked + held, start, end)
        parts["asleep"] += _overlap(hooked + held, hooked + waited, start, end)
        if _overlap(hooked, hooked + waited, start, end) > 0:
            parts["longest_wait"] = max(parts["longest_wait"], waited)
        i += 1
    return parts


def _foreign_fifo() -> dict:
    """{pid: CPU ticks so far} of the SCHED_FIFO/RR processes that are neither this one's
    descendants (server, generator, probe) nor kernel threads: another benchmark's."""
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stats[int(pid)] = f.read().rsplit(")", 1)[1].split()
            except OSError:
                pass
    me, foreign = os.getpid(), {}
    for pid, fields in stats.items():
        # fields[k] is field k + 3 of proc(5): ppid 4, flags 9, utime 14, stime 15, policy 41
        if int(fields[38]) not in (1, 2) or int(fields[6]) & 0x00200000:     # PF_KTHREAD
            continue
        ancestor = pid
        while ancestor > 1 and ancestor != me and ancestor in stats:
            ancestor = int(stats[ancestor][1])
        if ancestor != me:
            foreign[pid] = int(fields[11]) + int(fields[12])
    return foreign


def foreign_fifo_seconds(before: dict, after: dict) -> float:
    """CPU seconds the foreign real-time processes used between two ``_foreign_fifo()``
    (one that started meanwhile counts whole, one that ended meanwhile is not seen)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / CLOCK_TICKS


def wait_for_no_foreign_fifo(limit: float) -> float:
    """Wait (up to ``limit`` seconds) until no other benchmark runs at real-time priority;
    how long it waited."""
    start = time.monotonic()
    while _foreign_fifo() and time.monotonic() - start < limit:
        time.sleep(0.5)
    return time.monotonic() - start


def cpu_ticks(cpu: int = 0) -> tuple:
    """(idle, steal, total) clock ticks of ``cpu`` so far (/proc/stat). Steal: the host ran
    something else while this virtual CPU had work; idle: it had none (and halted)."""
    with open("/proc/stat") as f:
        for row in f:
            if row.startswith(f"cpu{cpu} "):
                ticks = [int(x) for x in row.split()[1:]]
                return ticks[3], ticks[7], sum(ticks[:8])
    return 0, 0, 0


def interrupts() -> dict:
    """{"RES0": n, "RES1": n, "CAL0": ...}: rescheduling (a wake-up sent to another CPU)
    and function-call interrupts received by each CPU so far (/proc/interrupts); on a
    virtual machine each is a trip through the hypervisor."""
    out = {}
    with open("/proc/interrupts") as f:
        for row in f:
            name, _, rest = row.strip().partition(":")
            if name in ("RES", "CAL"):
                for cpu, count in enumerate(rest.split()[:2]):
                    out[f"{name}{cpu}"] = int(count)
    return out


def run_once(tree: str, flags: list, args, work: str, tag: str) -> dict:
    env = dict(os.environ)
    flags = list(flags)
    while flags and re.fullmatch(r"[A-Z_]+=.*", flags[0]):
        key, _, value = flags.pop(0).partition("=")
        env[key] = value
    turns_path = os.path.join(work, f"{tag}.turns")
    samples_path = os.path.join(work, f"{tag}.samples")
    out = os.path.join(work, f"{tag}.json")
    env["CHATCORE_TRACE_TURNS"] = turns_path
    fifo = ["chrt", "-f", "1"] if args.fifo else []
    server = subprocess.Popen([*fifo, "taskset", "-c", "0", sys.executable, "server.py",
                               "--port", "0", "--log-level", "INFO", "--limit-exempt",
                               "127.0.0.0/8,::1", *flags], cwd=tree, text=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    for line in server.stderr:
        if match := LISTENING.search(line):
            port = int(match.group(1))
            break
    threading.Thread(target=server.stderr.read, daemon=True).start()
    ticks_before, cpu_before, irqs_before = _foreign_fifo(), cpu_ticks(), interrupts()
    try:
        subprocess.run([*fifo, "taskset", "-c", "1", sys.executable, "-m",
                        "benchmarks.loadgen", "latency", "--rate", str(args.rate), "--probe",
                        str(args.probe), "--probe-samples", samples_path, "-p", str(port),
                        "--server-pid", str(server.pid), "--duration", str(args.duration),
                        "--json", out, "-q"], cwd=HERE, check=True,
                       timeout=args.duration * 4 + 120)
    finally:
        foreign = foreign_fifo_seconds(ticks_before, _foreign_fifo())
        idle, steal, total = (b - a for a, b in zip(cpu_before, cpu_ticks()))
        irqs = {key: n - irqs_before.get(key, 0) for key, n in interrupts().items()}
        server.terminate()
        server.wait(10)
    with open(out) as f:
        result = json.load(f)
    result["foreign_fifo_seconds"] = foreign
    result["steal_seconds"] = steal / CLOCK_TICKS
    result["cpu0_idle"] = idle / max(1, total)
    result["interrupts"] = irqs
    result["turns"] = read_turns(turns_path)
    result["samples"] = read_samples(samples_path)
    return result


def summarize(result: dict, slow_ms: float) -> dict:
    turns = result["turns"]
    probe = result.get("probe") or {}
    slow = [(sent, lat) for sent, lat in result["samples"]["echo"] if lat * 1e3 > slow_ms]
    total = {"asleep": 0.0, "held": 0.0, "busy": 0.0, "off_core": 0.0}
    longest_turn = longest_wait = 0.0
    for sent, lat in slow:
        parts = attribute(turns, sent, sent + lat)
        for key in total:
            total[key] += parts[key]
        longest_turn = max(longest_turn, parts["longest_turn"])
        longest_wait = max(longest_wait, parts["longest_wait"])
    walls = sorted(row[2] - row[0] for row in turns)
    holds = [row[3] for row in turns if row[3] > 0]
    return {
        "p99": (result.get("latency_ms") or {}).get("p99", 0.0),
        "p50": (result.get("latency_ms") or {}).get("p50", 0.0),
        "listen_p99": probe.get("listen", {}).get("p99", 0.0),
        "echo_p99": probe.get("echo", {}).get("p99", 0.0),
        "ns": result["server"]["ns_per_delivery"],
        "foreign": result["foreign_fifo_seconds"],
        "steal": result["steal_seconds"],
        "idle": result["cpu0_idle"],
        "irq_per_msg": {key: n / max(1, result["sent"]) for key, n in
                        result["interrupts"].items()},
        "off_core_ms": 1e3 * sum(max(0.0, row[2] - row[0] - row[7]) for row in turns),
        "slow": len(slow), "echoes": len(result["samples"]["echo"]),
        "slow_ms": {key: value * 1e3 for key, value in total.items()},
        "slow_longest_turn_ms": longest_turn * 1e3, "slow_longest_wait_ms": longest_wait * 1e3,
        "turns": len(turns), "turn_p99_ms": walls[int(len(walls) * 0.99)] * 1e3 if walls else 0,
        "turn_max_ms": walls[-1] * 1e3 if walls else 0,
        "holds": len(holds), "hold_ms": sum(holds) * 1e3,
    }


def line(name: str, s: dict) -> str:
    parts = " ".join(f"{k} {v:.1f}" for k, v in s["slow_ms"].items())
    return (f"{name}: p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, probe listen {s['listen_p99']:.2f}"
            f" echo {s['echo_p99']:.2f} ms, {s['ns']:.0f} ns/delivery, foreign FIFO "
            f"{s['foreign']:.2f} s, CPU 0 steal {s['steal']:.2f} s idle {s['idle']:.0%}, turns off-core "
            f"{s['off_core_ms']:.0f} ms, interrupts per message "
            + " ".join(f"{k} {v:.1f}" for k, v in sorted(s["irq_per_msg"].items()))
            + f", load {os.getloadavg()[0]:.2f}; {s['slow']}/{s['echoes']} slow "
            f"echoes: {parts} ms (longest turn {s['slow_longest_turn_ms']:.2f}, wait "
            f"{s['slow_longest_wait_ms']:.2f}); {s['turns']} turns, p99 "
            f"{s['turn_p99_ms']:.2f} max {s['turn_max_ms']:.2f} ms, {s['holds']} holds "
            f"{s['hold_ms']:.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", metavar="NAME=TREE[:FLAGS]")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="aggregate messages/s (1000: 100 k deliveries/s, 10000: 1 M)")
    parser.add_argument("--probe", type=float, default=200.0, help="probe echoes a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--slow", type=float, default=1.0,
                        help="an echo slower than this many ms is attributed (default 1)")
    parser.add_argument("--fifo", action="store_true",
                        help="server and generator SCHED_FIFO 1 (as run_suite --fifo)")
    parser.add_argument("--wait-quiet", type=float, default=120.0, metavar="SECONDS",
                        help="before each run, wait up to this long until no other process "
                             "runs at real-time priority (another engineer's --fifo run)")
    parser.add_argument("--retries", type=int, default=3,
                        help="run again (at most this often) when another real-time process "
                             "used more than %.2f s of CPU during the run" % 0.05)
    parser.add_argument("--keep", metavar="DIR", help="keep the traces and samples in DIR")
    args = parser.parse_args(argv)
    arms = {}
    for spec in args.arms:
        name, _, rest = spec.partition("=")
        tree, _, flags = rest.partition(":")
        arms[name] = (os.path.abspath(tree), flags.split())
    names = list(arms)
    rows: dict = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                for attempt in range(args.retries + 1):
                    waited = wait_for_no_foreign_fifo(args.wait_quiet)
                    result = run_once(*arms[name], args, work, f"{name}-{round_number}")
                    if result["foreign_fifo_seconds"] <= FOREIGN_FIFO_ALLOWED:
                        break
                    print(f"round {round_number} {name}: another real-time benchmark used "
                          f"{result['foreign_fifo_seconds']:.2f} s of CPU (waited {waited:.0f}"
                          f" s before): run again", flush=True)
                summary = summarize(result, args.slow)
                rows[name].append(summary)
                print(f"round {round_number} " + line(name, summary), flush=True)
    for name in names:
        p99s = ", ".join(f"{r['p99']:.2f}" for r in rows[name])
        med = {key: statistics.median(r[key] for r in rows[name])
               for key in ("p50", "p99", "listen_p99", "echo_p99", "ns", "foreign")}
        print(f"{name}: median p50 {med['p50']:.2f} p99 {med['p99']:.2f} ms "
              f"({p99s}), probe listen "
              f"{med['listen_p99']:.2f} echo {med['echo_p99']:.2f} ms, {med['ns']:.0f} "
              f"ns/delivery, foreign FIFO {med['foreign']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
