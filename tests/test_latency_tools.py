"""The latency tools' own arithmetic: the host canary's summary, the turn-trace attribution."""
from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import host_canary, latency_trace


def test_the_canary_finds_slow_repetitions_and_their_stretches():
    ms = 1_000_000
    steady = [(i * ms, 150_000) for i in range(1000)]
    # two slow stretches: three repetitions 1 ms apart, then one alone 100 ms later
    slow = [(2000 * ms, 900_000), (2001 * ms, 800_000), (2003 * ms, 700_000),
            (2100 * ms, 1_000_000)]
    summary = host_canary.summarize(steady + slow)
    assert summary["repetitions"] == 1004
    assert summary["p50_us"] == 150.0 and summary["max_us"] == 1000.0
    assert summary["slow_share"] == 4 / 1004
    assert summary["slow_stretches"] == 2 and summary["longest_stretch_ms"] == 3.0
    assert host_canary.summarize([]) == {"repetitions": 0}


def test_the_canary_runs_one_process_per_cpu():
    out = subprocess.run([sys.executable, "-m", "benchmarks.host_canary", "--cpus", "0",
                          "--duration", "0.2"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    result = json.loads(out)
    assert result["cpu"] == 0 and result["repetitions"] > 10
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]


def test_a_slow_echo_is_split_into_asleep_held_busy_and_off_core():
    # turns: (woke, worked, hooked, held, timeout, ready, waited, cpu)
    turns = [
        (0.000, 0.001, 0.002, 0.000, 1.0, 1, 0.003, 0.002),   # busy 0-2 ms, asleep 2-5
        (0.005, 0.006, 0.009, 0.001, 1.0, 1, 0.002, 0.001),   # 4 ms wall, 1 ms CPU; held 1
    ]
    parts = latency_trace.attribute(turns, 0.001, 0.011)
    assert abs(parts["busy"] - (0.001 + 0.001)) < 1e-9          # 1-2 ms, and 1 of 5-9
    assert abs(parts["off_core"] - 0.003) < 1e-9                # 3 of the 4 ms at 5-9
    assert abs(parts["asleep"] - (0.003 + 0.001)) < 1e-9        # 2-5 ms, 10-11 ms
    assert abs(parts["held"] - 0.001) < 1e-9                    # 9-10 ms
    assert abs(parts["longest_turn"] - 0.004) < 1e-9 and parts["longest_wait"] == 0.003


def test_the_canary_times_wake_ups_after_each_sleep_length():
    out = subprocess.run([sys.executable, "-m", "benchmarks.host_canary", "--cpus", "0",
                          "--duration", "0.1", "--sleeps", "200", "1000"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["sleep_us"] for row in rows] == [200.0, 1000.0]
    for row in rows:
        assert row["wakeups"] > 10
        assert 0 <= row["late_p50_us"] <= row["late_p99_us"] <= row["late_max_us"]
