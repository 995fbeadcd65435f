"""The server, seen from /proc: CPU seconds and resident memory of a process by pid."""
from __future__ import annotations

import os

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK     # utime + stime


def server_rss_bytes(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def default_procs(server_pid: int | None) -> int:
    mine = os.sched_getaffinity(0)
    if server_pid:
        try:
            free = mine - os.sched_getaffinity(server_pid)
            if free:
                return len(free)
        except OSError:
            pass
    return max(1, len(mine) - 1)
