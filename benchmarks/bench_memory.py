"""Server memory per connection, from /proc RSS of a real server process, both builds.

    python -m benchmarks.bench_memory                    # 10 000 idle, 1 000 x 64 KiB partial
    python -m benchmarks.bench_memory --idle 2000 --partial 500 --builds compiled

The figures per build, each from a fresh server (``--limit-exempt 127.0.0.0/8``, as the
suite starts it, so the per-address limit does not refuse 10 000 clients from one address):

* **idle**: (RSS holding ``--idle`` hand-shaken, silent clients − RSS before they connected)
  ÷ clients: what one held connection costs.
* **partial**: ``--partial`` clients each send ``--partial-bytes`` (default: all but 4) of
  a 65 540-byte frame (64 KiB after its length prefix, the largest the default
  ``max_frame_bytes`` lets through), sent in N writes (one row per N in ``--pieces``; each
  write of every client is read before the next): the RSS growth per connection while the
  server holds the unfinished frames.
* **after close**: the partial-frame clients close; the RSS growth over the start still held
  once the server has dropped them (after its housekeeping tick), in MiB and as a share of
  what the partial frames had added.

``--breakdown N`` instead lists where an idle connection's bytes are (``tracemalloc`` over an
in-process server, by allocating line). A probe client's ping round trip proves the server has read every byte sent before it, so no
figure is taken while the server is still catching up. Prints one table; ``--json`` too.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import struct
import sys
import tempfile
import time

from benchmarks.abuse import ROOT, rss_bytes, start_server, stop_server
from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.protocol import PROTOCOL_VERSION, encode_event

BUILDS = {"compiled": {}, "fallback": {"CHATCORE_NO_EXTENSIONS": "1"}}
SERVER_FLAGS = ["--limit-exempt", "127.0.0.0/8"]
SETTLE_SECONDS = 0.3            # after the probe's round trip, before RSS is read
AFTER_CLOSE_WAIT_SECONDS = 3.0  # RSS is watched this long after the mass close
_SEND_ROOM = 0x22
FRAME_LENGTH = 65536            # the default max_frame_bytes: the frame is 65 540 bytes


def _hello(i: int, prefix: str) -> bytes:
    return encode_event(ev.Hello(PROTOCOL_VERSION, f"{prefix}{i}", "memory", request_id=1))


def _open(port: int, count: int, prefix: str) -> list[socket.socket]:
    """``count`` hand-shaken clients (each got its Welcome)."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(_hello(i, prefix))
        socks.append(sock)
    for sock in socks:
        if not sock.recv(65536):
            raise RuntimeError("the server closed a client during its handshake")
    return socks


def _round_trip(port: int, name: str) -> None:
    """A ping through a fresh client: the server has handled every earlier byte by then."""
    probe = ChatClient("127.0.0.1", port, timeout=60)
    probe.connect(name)
    probe.ping()
    probe.close()


def _settled_rss(pid: int, port: int, name: str) -> int:
    _round_trip(port, name)
    time.sleep(SETTLE_SECONDS)
    return rss_bytes(pid)


def measure_idle(env: dict, workdir: pathlib.Path, count: int) -> dict:
    proc, port = start_server(SERVER_FLAGS, workdir, env)
    try:
        before = _settled_rss(proc.pid, port, "probe0")
        socks = _open(port, count, "idle")
        held = _settled_rss(proc.pid, port, "probe1")
        for sock in socks:
            sock.close()
    finally:
        stop_server(proc)
    return {"idle_connections": count, "idle_kib_per_connection": (held - before) / count / 1024}


def measure_partial(env: dict, workdir: pathlib.Path, count: int, parked_bytes: int,
                    pieces: int) -> dict:
    """``count`` clients each sending the first ``parked_bytes`` of a frame as large as the
    default ``max_frame_bytes`` allows, in ``pieces`` writes (every client's piece k is read
    before any client's piece k + 1), then closing."""
    proc, port = start_server(SERVER_FLAGS, workdir, env)
    header = struct.pack(">IBI", FRAME_LENGTH, _SEND_ROOM, 7)
    parked = (header + b"\0" * FRAME_LENGTH)[:parked_bytes]
    step = -(-len(parked) // pieces)
    try:
        before = _settled_rss(proc.pid, port, "probe0")
        socks = _open(port, count, "part")
        connected = _settled_rss(proc.pid, port, "probe1")
        for k, offset in enumerate(range(0, len(parked), step)):
            for sock in socks:
                sock.sendall(parked[offset:offset + step])
            _round_trip(port, f"piece{k}")
        held = _settled_rss(proc.pid, port, "probe2")
        for sock in socks:
            sock.close()
        after = _settled_rss(proc.pid, port, "probe3")
        # The housekeeping tick (at most a second apart) may give more back: the lowest
        # reading over a few seconds.
        deadline = time.monotonic() + AFTER_CLOSE_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            after = min(after, rss_bytes(proc.pid))
    finally:
        stop_server(proc)
    added = held - connected
    return {"partial_connections": count, "partial_bytes": parked_bytes,
            "partial_pieces": pieces,
            "partial_kib_per_connection": added / count / 1024,
            "after_close_mib": (after - before) / 2**20,
            "after_close_share": max(0.0, (after - connected) / added) if added > 0 else 0.0}


_IDLE_CLIENTS = r"""
import sys
from benchmarks.bench_memory import _open
socks = _open(int(sys.argv[1]), int(sys.argv[2]), "idle")
print("ready", flush=True)
sys.stdin.readline()
"""


def breakdown(count: int, top: int = 25) -> list[tuple]:
    """Where an idle connection's bytes are, by allocating line: an in-process server under
    ``tracemalloc``, ``count`` clients from a subprocess. Returns (bytes per connection,
    objects per connection, "file:line") for the largest ``top``."""
    import gc
    import subprocess
    import tracemalloc

    from chatcore.config import ServerConfig
    from chatcore.reactor import Reactor
    from chatcore.server import Server

    reactor = Reactor()
    server = Server(ServerConfig(port=0, limit_exempt="127.0.0.0/8"), reactor)
    server.start()
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.take_snapshot()
    clients = subprocess.Popen([sys.executable, "-c", _IDLE_CLIENTS, str(server.address[1]),
                                str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               cwd=ROOT)
    # The clients say "ready" once every Welcome arrived: then the server is idle.
    reactor.add_reader(clients.stdout.fileno(), reactor.stop)
    timeout = reactor.call_later(300, reactor.stop)
    try:
        reactor.run()
        timeout.cancel()
        reactor.remove_reader(clients.stdout.fileno())
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        clients.communicate(b"\n", timeout=60)
    tracemalloc.stop()
    stats = after.compare_to(before, "lineno")
    rows = [(sum(st.size_diff for st in stats) / count, 0.0, "total")]
    for st in stats[:top]:
        frame = st.traceback[0]
        rows.append((st.size_diff / count, st.count_diff / count,
                     f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno}"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", nargs="+", choices=sorted(BUILDS),
                        default=["compiled", "fallback"])
    parser.add_argument("--idle", type=int, default=10_000, help="idle clients (0: skip)")
    parser.add_argument("--partial", type=int, default=1000,
                        help="clients parking a partial frame (0: skip)")
    parser.add_argument("--partial-bytes", type=int, default=65536,
                        help="bytes of a 65 540-byte frame each client sends (default: all "
                             "but 4)")
    parser.add_argument("--pieces", type=int, nargs="+", default=[1, 16],
                        help="writes each partial frame is sent in; one row each")
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--breakdown", type=int, metavar="N",
                        help="instead: tracemalloc of N idle connections, by allocating line")
    args = parser.parse_args(argv)
    if args.breakdown:
        for per_connection, objects, where in breakdown(args.breakdown):
            print(f"{per_connection:8.1f} B/conn {objects:5.2f} objects/conn  {where}")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for build in args.builds:
            env = {**os.environ, **BUILDS[build]}
            if args.idle:
                rows.append({"build": build,
                             **measure_idle(env, pathlib.Path(tmp), args.idle)})
                print(json.dumps(rows[-1]), file=sys.stderr)
            for pieces in args.pieces if args.partial else ():
                rows.append({"build": build,
                             **measure_partial(env, pathlib.Path(tmp), args.partial,
                                               args.partial_bytes, pieces)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print("| build | measure | KiB per connection | RSS kept after close |")
    print("|---|---|---:|---:|")
    for row in rows:
        if "idle_kib_per_connection" in row:
            print(f"| {row['build']} | {row['idle_connections']} idle | "
                  f"{row['idle_kib_per_connection']:.2f} | - |")
        else:
            print(f"| {row['build']} | {row['partial_connections']} x "
                  f"{row['partial_bytes']} B of a frame, in {row['partial_pieces']} "
                  f"write(s) | {row['partial_kib_per_connection']:.1f} | "
                  f"{row['after_close_mib']:.1f} MiB ({row['after_close_share']:.0%} of it) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
