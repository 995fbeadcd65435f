"""The benchmark suite's tables and plots: medians (min-max) of alternating runs per scenario and
implementation, ratios between implementations, throughput bars and latency CDFs (matplotlib,
when installed), and the summary of a py-spy profile."""
from __future__ import annotations

import collections
import os
import pathlib
import statistics
import sys


def say(message: str) -> None:
    print(f"[run_suite] {message}", file=sys.stderr, flush=True)


def key_numbers(r: dict) -> dict:
    srv = r["server"] or {}
    return {
        "delivered_per_second": r["delivered_per_second"],
        "sent_per_second": r["sent_per_second"],
        "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
        "p999_ms": r["latency_ms"]["p99.9"],
        "ns_per_delivery": srv.get("ns_per_delivery"),
        "server_cpu": srv.get("cpu_utilization"),
        "connect_seconds": r["connect"]["seconds"],
        "claim_p50_ms": r["connect"].get("claim_ms", {}).get("p50"),
        "claim_p99_ms": r["connect"].get("claim_ms", {}).get("p99"),
        # a cluster's redis-server: its share of a core (the issue: never the saturated side)
        "redis_cpu": next((p["cpu_utilization"] for p in srv.get("processes", ())
                           if p["name"] == "redis-server"), None),
        "kib_per_connection": (None if srv.get("rss_bytes_per_connection") is None
                               else srv["rss_bytes_per_connection"] / 1024),
        "generator_saturated": r["generator"]["saturated"],
        "generator_cpu": r["generator"]["busiest_process_utilization"],
        "generator_ns_per_delivery": r["generator"].get("ns_per_delivery"),
        # the independent latency probe (loadgen --probe), when it ran
        "probe_echo_p99_ms": (r.get("probe") or {}).get("echo", {}).get("p99"),
        "probe_listen_p99_ms": (r.get("probe") or {}).get("listen", {}).get("p99"),
        "ok": r["ok"],
    }


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def summarize(runs) -> dict:
    grouped = collections.defaultdict(list)
    loads = collections.defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["impl"])].append(key_numbers(run["result"]))
        if run.get("loadavg") is not None:
            loads[(run["scenario"], run["impl"])].append(run["loadavg"])
    summary = {}
    for (scenario, impl), items in grouped.items():
        entry = {"runs": len(items), "all_ok": all(i["ok"] for i in items),
                 "generator_saturated_runs": sum(bool(i["generator_saturated"]) for i in items)}
        for key in ("delivered_per_second", "sent_per_second", "p50_ms", "p99_ms", "p999_ms",
                    "ns_per_delivery", "server_cpu", "connect_seconds", "kib_per_connection",
                    "claim_p50_ms", "claim_p99_ms", "redis_cpu", "generator_cpu",
                    "generator_ns_per_delivery", "probe_echo_p99_ms", "probe_listen_p99_ms"):
            entry[key] = med([i[key] for i in items])
        entry["loadavg"] = loads[(scenario, impl)]
        summary.setdefault(scenario, {})[impl] = entry
    return summary


def _fmt(triple, fmt="{:,.0f}", scale=1.0) -> str:
    m, lo, hi = triple
    if m is None:
        return "-"
    return f"{fmt.format(m * scale)} ({fmt.format(lo * scale)}–{fmt.format(hi * scale)})"


def markdown(meta: dict, summary: dict, impls, scenarios, group: str = "native",
             base: str = "chatcore", comparisons=()) -> str:
    """One group's table, its ratios against ``base`` and its ``comparisons``
    ((label, numerator, denominator, figure, target[, scenarios it applies to]), as
    ratios of medians)."""
    redis = any(e.get("redis_cpu", (None,))[0] is not None
                for row in summary.values() for e in row.values())
    lines = [f"# chatcore benchmark suite — {meta['timestamp']}, group {group}", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
             f"{meta['machine']['memory_gib']} GiB, Linux {meta['machine']['kernel']}, "
             f"Python {meta['machine']['python']}; load average at start "
             f"{', '.join('%.2f' % x for x in meta['machine']['loadavg_at_start'])}.",
             f"Command: `{meta['command']}`; server pinned to CPU {meta['server_cpus']}, "
             f"generator to {meta['generator_cpus']}; {meta['repetitions']} repetitions of "
             f"{meta['duration']} s, medians with (min–max).", "",
             *_load_line(summary), 
             "| scenario | implementation | delivered msgs/s | p50 ms | p99 ms | server ns/delivery "
             "| server CPU | " + ("Redis CPU | " if redis else "") + "connect s | claim p50 ms "
             "| claim p99 ms | KiB/conn | gen. CPU | gen. saturated | ok |",
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if redis else "")
             + "---:|---:|---:|---:|---:|---:|---|"]
    for scenario in scenarios:
        for impl in impls:
            e = summary.get(scenario, {}).get(impl)
            if e is None:
                continue
            lines.append(
                f"| {scenario} | {impl} | {_fmt(e['delivered_per_second'])} | "
                f"{_fmt(e['p50_ms'], '{:.2f}')} | {_fmt(e['p99_ms'], '{:.2f}')} | "
                f"{_fmt(e['ns_per_delivery'])} | {_fmt(e['server_cpu'], '{:.0f}%', 100)} | "
                + (f"{_fmt(e['redis_cpu'], '{:.0f}%', 100)} | " if redis else "") +
                f"{_fmt(e['connect_seconds'], '{:.2f}')} | "
                f"{_fmt(e['claim_p50_ms'], '{:.2f}')} | {_fmt(e['claim_p99_ms'], '{:.2f}')} | "
                f"{_fmt(e['kib_per_connection'], '{:.2f}')} | "
                f"{_fmt(e['generator_cpu'], '{:.0f}%', 100)} | "
                f"{e['generator_saturated_runs']}/{e['runs']}"
                f"{' **(gen. limited)**' if e['generator_saturated_runs'] else ''} | "
                f"{'yes' if e['all_ok'] else '**NO**'} |")
    others = [i for i in impls if i != base]
    if base in impls and others:
        lines += ["", f"Ratios of medians ({base} ÷ other; delivered msgs/s, or for connect the "
                  "inverse of connect time, for latency the inverse of p99):", "",
                  "| scenario | " + " | ".join(f"vs {i}" for i in others) + " |",
                  "|---|" + "---:|" * len(others)]
        for scenario in scenarios:
            row = summary.get(scenario, {})
            if row.get(base) is None:
                continue
            cells = [_ratio(scenario, row[base], row.get(impl)) for impl in others]
            lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    rows = []
    for label, top, bottom, figure, target, *only in comparisons:
        for scenario in scenarios:
            if only and scenario not in only[0]:
                continue
            row = summary.get(scenario, {})
            if row.get(top) is None or row.get(bottom) is None:
                continue
            a, b = row[top][figure][0], row[bottom][figure][0]
            if not a or not b:
                continue
            rows.append(f"| {label} | {scenario} | {a / b:.2f}× | {target or '-'} |")
    if rows:
        lines += ["", "| comparison (ratio of medians) | scenario | ratio | target |",
                  "|---|---|---:|---|", *rows]
    lines += _probe_lines(summary, impls, scenarios)
    return "\n".join(lines) + "\n"


def _probe_lines(summary: dict, impls, scenarios) -> list:
    """The independent probe's p99 beside the generator's (docs/benchmarks.md, latency)."""
    rows = []
    for scenario in scenarios:
        for impl in impls:
            e = summary.get(scenario, {}).get(impl)
            if e is None or e["probe_echo_p99_ms"][0] is None:
                continue
            rows.append(f"| {scenario} | {impl} | {_fmt(e['p99_ms'], '{:.2f}')} | "
                        f"{_fmt(e['probe_listen_p99_ms'], '{:.2f}')} | "
                        f"{_fmt(e['probe_echo_p99_ms'], '{:.2f}')} |")
    if not rows:
        return []
    return ["", "Latency probe (benchmarks.latency_probe, SCHED_FIFO): p99 ms of the generator's "
            "receivers, of the probe as the room's last member, and of the probe's own message "
            "in a room of its own:", "",
            "| scenario | implementation | generator p99 | probe, last member | probe, echo |",
            "|---|---|---:|---:|---:|", *rows]


def _load_line(summary: dict) -> list:
    loads = [v for row in summary.values() for e in row.values() for v in e.get("loadavg", ())]
    if not loads:
        return []
    return [f"1-minute load average after each run: {min(loads):.2f}–{max(loads):.2f} "
            f"(median {statistics.median(loads):.2f}) on {os.cpu_count()} cores.", ""]


def _ratio(scenario, base, other) -> str:
    if other is None:
        return "-"
    if scenario == "connect":
        a, b = other["connect_seconds"][0], base["connect_seconds"][0]
    elif scenario.startswith("latency"):
        a, b = other["p99_ms"][0], base["p99_ms"][0]
    else:
        a, b = base["delivered_per_second"][0], other["delivered_per_second"][0]
    if not a or not b:
        return "-"
    return f"{a / b:.2f}×"


def plots(summary: dict, runs, impls, stem: pathlib.Path, suffix: str = "") -> list:
    try:
        import matplotlib
    except ImportError:
        say("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    scenarios = [s for s in ("fanout", "rooms", "dm") if s in summary]
    if not scenarios and not any(s.startswith("latency") for s in summary):
        return []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(impls))
    for k, impl in enumerate(impls):
        xs, ys, lo, hi = [], [], [], []
        for i, scenario in enumerate(scenarios):
            e = summary[scenario].get(impl)
            if e is None or e["delivered_per_second"][0] is None:
                continue
            m, a, b = e["delivered_per_second"]
            xs.append(i + (k - (len(impls) - 1) / 2) * width)
            ys.append(m)
            lo.append(m - a)
            hi.append(b - m)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=impl)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_yscale("log")
    ax.set_ylabel("delivered messages/s (median, min–max)")
    ax.set_title(f"chatcore{suffix.replace('-', ' ')}: delivered messages per second")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = stem.with_name(f"{stem.name}{suffix}-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    for scenario in ("latency-100k", "latency-1m"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = False
        for impl in impls:
            candidates = [r["result"] for r in runs
                          if r["scenario"] == scenario and r["impl"] == impl]
            if not candidates:
                continue
            candidates.sort(key=lambda r: r["latency_ms"]["p99"] or 0)
            cdf = candidates[len(candidates) // 2]["latency_cdf"]
            if cdf:
                ax.plot([max(x, 0.001) for x, _ in cdf], [y for _, y in cdf], label=impl)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xscale("log")
        ax.set_xlabel("latency, send to delivery (ms)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(f"latency CDF, {scenario} deliveries/s (median-p99 run)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}{suffix}-cdf-{scenario}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def summarize_profile(raw: pathlib.Path, top: int = 25) -> str:
    own = collections.Counter()
    inclusive = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        total += n
        own[_short(frames[-1]) if frames else "?"] += n
        for f in set(_short(f) for f in frames):
            inclusive[f] += n
    lines = [f"py-spy samples: {total}", "", "| own % | inclusive % | function |",
             "|---:|---:|---|"]
    for name, n in own.most_common(top):
        lines.append(f"| {100 * n / total:.1f} | {100 * inclusive[name] / total:.1f} | "
                     f"`{name}` |")
    lines += ["", "Inclusive time of the main loop's parts:", "", "| inclusive % | function |",
              "|---:|---|"]
    for name, n in inclusive.most_common(top):
        lines.append(f"| {100 * n / total:.1f} | `{name}` |")
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # "func (path/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})" if file else name
