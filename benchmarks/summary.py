"""A run's verdict and figures: what the senders had acknowledged against what the receivers
counted (loss, duplicates, reordering, errors), latency percentiles and CDF, CPU and memory."""
from __future__ import annotations

from . import verify
from .procstat import process_name
from .verify import bucket_floor
from .worker import ERROR_SAMPLES

# A generator process busier than this (CPU over wall time), or runnable for longer (on a CPU
# or waiting for one: on a loaded machine it may want a core it does not get), was the
# saturated side: the server may take more than the run shows.
SATURATED_CPU = 0.9

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def merge_hist(hists) -> dict:
    out: dict = {}
    for hist in hists:
        for bucket, n in hist.items():
            out[int(bucket)] = out.get(int(bucket), 0) + n
    return out


def hist_summary(hist: dict) -> dict:
    """Percentiles and max in milliseconds (bucket floors: under 0.1 % low above 2 ms)."""
    total = sum(hist.values())
    result = {"count": total}
    if not total:
        result.update({f"p{p:g}": None for p in PERCENTILES})
        result["max"] = None
        return result
    items = sorted(hist.items())
    targets = [(p, total * p / 100.0) for p in PERCENTILES]
    seen = 0
    ti = 0
    for bucket, n in items:
        seen += n
        while ti < len(targets) and seen >= targets[ti][1]:
            result[f"p{targets[ti][0]:g}"] = bucket_floor(bucket) / 1000.0
            ti += 1
    result["max"] = bucket_floor(items[-1][0]) / 1000.0
    return result


def cdf_points(hist: dict, points: int = 200) -> list:
    """(latency ms, cumulative fraction) pairs for plotting."""
    total = sum(hist.values())
    out, seen = [], 0
    for bucket, n in sorted(hist.items()):
        seen += n
        out.append((bucket_floor(bucket) / 1000.0, seen / total))
    if len(out) > points:
        step = len(out) / points
        out = [out[int(i * step)] for i in range(points)] + [out[-1]]
    return out


def summarize(args, plan, procs, results, go_us, stop_us, cpu0, cpu1, rss_idle, rss_connected,
              rss_peak, rss_samples) -> dict:
    n = len(plan.clients)
    duration = (stop_us - go_us) / 1e6
    end_us = max(r["end_us"] for r in results)
    acked: dict = {}
    sent: dict = {}
    for r in results:
        acked.update(r["acked"])
        sent.update(r["sent"])
    expected = sum(acked[s] * plan.recipients[s] for s in acked)
    tallies = [r["tally"] for r in results]
    delivered = sum(t["messages"] for t in tallies)
    counts: dict = {}
    for t in tallies:
        for k, v in t["counts"].items():
            counts[int(k)] = counts.get(int(k), 0) + v
    check = {key: sum(t[key] for t in tallies)
             for key in ("duplicates", "reordered", "gaps", "malformed")}
    check["lost"] = max(0, expected - delivered)
    check["unexpected"] = max(0, delivered - expected)
    check["unacked"] = sum(sent.values()) - sum(acked.values())
    failures = sum(r["failures"] for r in results)
    disconnects = sum(r["disconnects"] for r in results)
    errors = sum(r["errors"] for r in results)
    samples = [s for r in results for s in r["error_samples"]][:ERROR_SAMPLES]
    connect_hist = merge_hist(r["connect_hist"] for r in results)
    claim_hist = merge_hist(r["claim_hist"] for r in results)
    connect_first = min(r["connect_first_us"] for r in results)
    connect_last = max(r["connect_last_us"] for r in results)
    sent_in_window = sum(r["sent_at_stop"] for r in results)
    delivered_in_window = sum(r["delivered_at_stop"] for r in results)
    gen_cpu = [r["cpu_seconds"] for r in results]
    wall = (end_us - go_us) / 1e6
    gen_busiest = max(gen_cpu) / max(wall, 1e-9) if gen_cpu else 0.0
    runnable = [r.get("runnable_seconds") for r in results]
    gen_runnable = (None if not runnable or None in runnable
                    else max(runnable) / max(wall, 1e-9))
    server = None
    if args.server_pids:
        each = [(pid, None if cpu0.get(pid) is None or cpu1.get(pid) is None
                 else cpu1[pid] - cpu0[pid]) for pid in args.server_pids]
        server_cpu = (None if any(v is None for _, v in each)
                      else sum(v for _, v in each))
        per_conn = None
        hold_rss = (sorted(rss_samples)[len(rss_samples) // 2] if rss_samples
                    else rss_connected)
        if rss_idle and hold_rss and n:
            per_conn = (hold_rss - rss_idle) / n
        server = {
            "pid": args.server_pid,
            "cpu_seconds": server_cpu,
            "cpu_utilization": server_cpu / wall if server_cpu is not None else None,
            "ns_per_delivery": (server_cpu * 1e9 / delivered
                                if server_cpu is not None and delivered else None),
            "rss_idle_bytes": rss_idle, "rss_connected_bytes": rss_connected,
            "rss_hold_bytes": hold_rss, "rss_peak_bytes": rss_peak,
            "rss_bytes_per_connection": per_conn,
            # one entry per process (cluster: every node and redis-server), in --server-pid order
            "processes": [{"pid": pid, "name": process_name(pid), "cpu_seconds": cpu,
                           "cpu_utilization": cpu / wall if cpu is not None else None}
                          for pid, cpu in each],
        }
    problems = []
    if failures:
        problems.append(f"{failures} connection(s) failed")
    if disconnects:
        problems.append(f"{disconnects} connection(s) dropped by the server")
    if errors - failures - disconnects > 0:
        problems.append(f"{errors - failures - disconnects} error(s) from the server")
    for key, value in check.items():
        if value:
            problems.append(f"{value} {key}")
    return {
        "scenario": plan.scenario,
        "config": {"clients": n, "rooms": args.rooms if plan.scenario in ("fanout", "rooms",
                                                                        "latency") else 0,
                   "senders": len(plan.recipients), "rate": plan.rate, "size": plan.size,
                   "duration": duration, "window": plan.window, "procs": procs,
                   "host": args.servers[0][0], "port": args.servers[0][1],
                   "servers": [f"{h}:{p}" for h, p in args.servers], "proto": args.proto,
                   "tls": bool(args.tls),
                   "verifier": verify.IMPLEMENTATION},
        "sent": sum(sent.values()), "acked": sum(acked.values()),
        "delivered": delivered, "expected": expected,
        "sent_per_second": sent_in_window / duration if duration else 0.0,
        "delivered_per_second": delivered_in_window / duration if duration else 0.0,
        "latency_ms": hist_summary(merge_hist(t["hist"] for t in tallies)),
        "latency_cdf": cdf_points(merge_hist(t["hist"] for t in tallies)),
        "connect": {"clients": n, "ready": sum(r["ready"] for r in results),
                    "failures": failures,
                    "seconds": max(0, connect_last - connect_first) / 1e6,
                    "per_client_ms": hist_summary(connect_hist),
                    # Hello sent -> Welcome received (IRC: NICK/USER -> 001): the name claim
                    "claim_ms": hist_summary(claim_hist)},
        "frames": {f"0x{k:02x}": v for k, v in sorted(counts.items())},
        "check": check, "errors": errors, "disconnects": disconnects, "error_samples": samples,
        "generator": {"procs": procs, "cpu_seconds": sum(gen_cpu), "wall_seconds": wall,
                      "busiest_process_utilization": gen_busiest,
                      "busiest_process_runnable": gen_runnable,
                      "ns_per_delivery": (sum(gen_cpu) * 1e9 / delivered if delivered
                                          else None),
                      "receive_loop": verify.IMPLEMENTATION,
                      # --rate: how late each paced send went out (its stamp is the real time)
                      "send_late_ms": hist_summary(merge_hist(r.get("pace_late_hist", {})
                                                              for r in results)),
                      "saturated": max(gen_busiest, gen_runnable or 0.0) >= SATURATED_CPU},
        "server": server,
        "ok": not problems, "problems": problems,
    }
