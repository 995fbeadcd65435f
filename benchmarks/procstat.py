"""The server, seen from /proc: CPU seconds and resident memory of a process by pid.

A cluster run names several processes (every node and the redis-server): the ``*_of``
functions take a list of pids, so CPU per delivery can be summed over all of them."""
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


def cpu_seconds_of(pids) -> dict:
    """pid -> utime + stime in seconds (None where /proc cannot be read)."""
    return {pid: server_cpu_seconds(pid) for pid in pids}


def rss_bytes_of(pids) -> int | None:
    """Resident memory of all of ``pids`` together; None when none can be read."""
    values = [v for v in (server_rss_bytes(pid) for pid in pids) if v is not None]
    return sum(values) if values else None


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


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
