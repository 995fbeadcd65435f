"""A run's result for people and tools: the human table, one CSV row, writing to a file or stdout."""
from __future__ import annotations

import sys

def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def human_table(r: dict) -> str:
    c, lat, con, gen, srv = r["config"], r["latency_ms"], r["connect"], r["generator"], r["server"]
    lines = [
        f"== {r['scenario']}: {c['clients']} clients, {c['senders']} senders, "
        f"{c['rooms']} rooms, {c['size']}-byte text, rate {c['rate'] or 'max'}"
        f"{'' if c['rate'] else ' (window %d)' % c['window']}, {c['duration']:g}s, "
        f"{c['procs']} proc(s), {c['verifier']} verifier",
        f"  connect         {con['ready']}/{con['clients']} in {con['seconds']:.3f}s, "
        f"{con['failures']} failed, p50 {_ms(con['per_client_ms']['p50'])} ms, "
        f"p99 {_ms(con['per_client_ms']['p99'])} ms",
        f"  name claim      Hello -> Welcome p50 {_ms(con['claim_ms']['p50'])} ms, "
        f"p99 {_ms(con['claim_ms']['p99'])} ms ({con['claim_ms']['count']} clients)",
    ]
    if len(c["servers"]) > 1 or c["proto"] != "native":
        lines.insert(1, f"  servers         {', '.join(c['servers'])} ({c['proto']} protocol)")
    if r["sent"] or r["scenario"] != "connect":
        lines += [
            f"  sent            {r['sent_per_second']:>14,.0f} msgs/s   ({r['sent']:,} total)",
            f"  delivered       {r['delivered_per_second']:>14,.0f} msgs/s   "
            f"({r['delivered']:,} total, {r['expected']:,} expected)"
            + ("" if not srv or srv["ns_per_delivery"] is None
               else f", server {srv['ns_per_delivery']:.0f} ns CPU/delivery"),
            f"  latency ms      p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  "
            f"p99 {_ms(lat['p99'])}  p99.9 {_ms(lat['p99.9'])}  max {_ms(lat['max'])}",
        ]
    runnable, gen_ns = gen.get("busiest_process_runnable"), gen.get("ns_per_delivery")
    lines.append(f"  generator       {gen['cpu_seconds']:.2f} CPU s over {gen['wall_seconds']:.2f}s"
                 f" on {gen['procs']} proc(s), busiest {gen['busiest_process_utilization']:.0%}"
                 + ("" if runnable is None else f" (runnable {runnable:.0%})")
                 + ("" if gen_ns is None else f", {gen_ns:.0f} ns CPU/delivery")
                 + ("  << SATURATED: the generator limited this run" if gen["saturated"] else ""))
    if srv:
        cpu, util, ns = srv["cpu_seconds"], srv["cpu_utilization"], srv["ns_per_delivery"]
        per_conn = srv["rss_bytes_per_connection"]
        lines.append(
            f"  server          CPU {'-' if cpu is None else '%.2fs' % cpu} "
            f"({'-' if util is None else '%.0f%%' % (util * 100)}), "
            f"{'-' if ns is None else '%.0f' % ns} ns/delivery, "
            f"RSS idle {_mib(srv['rss_idle_bytes'])}, holding {_mib(srv['rss_hold_bytes'])}, "
            f"peak {_mib(srv['rss_peak_bytes'])}"
            + ("" if per_conn is None else f", {per_conn / 1024:.2f} KiB/connection"))
        if len(srv["processes"]) > 1:
            lines.append("  server CPU by process  " + ", ".join(
                f"{p['name']} {p['pid']}: "
                + ("-" if p["cpu_seconds"] is None else f"{p['cpu_seconds']:.2f}s")
                for p in srv["processes"]))
    lines.append(f"  errors          {r['errors']}" +
                 "".join(f"\n    {s}" for s in r["error_samples"]))
    lines.append("  verification    " + ("OK" if r["ok"] else
                                        "FAILED: " + "; ".join(r["problems"])))
    return "\n".join(lines)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


CSV_FIELDS = ("scenario", "clients", "senders", "rooms", "size", "rate", "duration",
              "sent_per_second", "delivered_per_second", "p50_ms", "p90_ms", "p99_ms",
              "p99.9_ms", "max_ms", "connect_seconds", "connect_failures", "claim_p50_ms",
              "claim_p99_ms", "errors",
              "generator_cpu_seconds", "generator_saturated", "server_cpu_seconds",
              "server_ns_per_delivery", "server_rss_bytes_per_connection", "ok",
              "generator_busiest_utilization", "generator_ns_per_delivery")


def csv_row(r: dict) -> dict:
    srv = r["server"] or {}
    c, lat = r["config"], r["latency_ms"]
    return {"scenario": r["scenario"], "clients": c["clients"], "senders": c["senders"],
            "rooms": c["rooms"], "size": c["size"], "rate": c["rate"],
            "duration": c["duration"], "sent_per_second": round(r["sent_per_second"]),
            "delivered_per_second": round(r["delivered_per_second"]),
            "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
            "p99.9_ms": lat["p99.9"], "max_ms": lat["max"],
            "connect_seconds": round(r["connect"]["seconds"], 4),
            "connect_failures": r["connect"]["failures"],
            "claim_p50_ms": r["connect"]["claim_ms"]["p50"],
            "claim_p99_ms": r["connect"]["claim_ms"]["p99"], "errors": r["errors"],
            "generator_cpu_seconds": round(r["generator"]["cpu_seconds"], 3),
            "generator_saturated": r["generator"]["saturated"],
            "server_cpu_seconds": srv.get("cpu_seconds"),
            "server_ns_per_delivery": (None if srv.get("ns_per_delivery") is None
                                       else round(srv["ns_per_delivery"], 1)),
            "server_rss_bytes_per_connection": (
                None if srv.get("rss_bytes_per_connection") is None
                else round(srv["rss_bytes_per_connection"])),
            "ok": r["ok"],
            "generator_busiest_utilization": round(r["generator"]["busiest_process_utilization"],
                                                   3),
            "generator_ns_per_delivery": (None if r["generator"].get("ns_per_delivery") is None
                                          else round(r["generator"]["ns_per_delivery"], 1))}


def _emit(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
