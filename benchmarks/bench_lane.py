"""The per-message lane against the hub path, in process, without sockets: one sender's
pipelined room messages to a room of ``--members`` native members (default 20, the size of a
room in the suite's ``rooms`` scenario), and direct messages to one peer.

    python benchmarks/bench_lane.py [--messages 20000] [--members 20] [--repeat 5]

Prints the median CPU time (process_time: the machine may be shared) per message of each path: ``hub`` (decode an event, Hub.send_room or
send_direct, encode the Ack: what the lane replaces), ``lane-python`` and ``lane-cython``.
What is not here is what both paths share: reading the socket and writing every recipient's
output (see the suite's ``rooms`` for the whole server).
"""
from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatcore import _lane_py, lane  # noqa: E402
from chatcore.codec import IMPLEMENTATION, OutputBuffer  # noqa: E402
from chatcore.connection import NativeOutlet, State  # noqa: E402
from chatcore.hub import Hub, NodeInfo  # noqa: E402
from chatcore.protocol import NativeProtocol, Role, encode_ack, encode_event  # noqa: E402
from chatcore import events as ev  # noqa: E402


def setup(members: int):
    hub = Hub(NodeInfo("bench", "127.0.0.1", 1))
    outlet = NativeOutlet()
    buffers = [OutputBuffer(None, 0) for _ in range(members)]
    sessions = [hub.connect(f"user{i}", outlet, buffers[i]) for i in range(members)]
    for session in sessions:
        hub.join(session, "lobby")
    hub.open_chat(sessions[0], "user1")
    protocol = NativeProtocol(Role.SERVER)
    protocol.send(ev.Welcome(1, "user0", "bench", 5000, 65536, 8192, 32))
    stats = types.SimpleNamespace(room_messages=0, direct_messages=0)
    conn = types.SimpleNamespace(
        protocol=protocol, hub=hub, outlet=outlet, outbuf=buffers[0], session=sessions[0],
        stats=stats, _buckets=None, config=types.SimpleNamespace(max_output_bytes=1 << 62),
        _replies=None, state=State.OPEN, _awaiting=False)
    return conn, buffers


def frames(kind: str, count: int) -> bytes:
    if kind == "room":
        return b"".join(encode_event(ev.SendRoom("lobby", f"message number {i:06d} here", i))
                        for i in range(count))
    return b"".join(encode_event(ev.SendDirect("user1", f"message number {i:06d} here", i))
                    for i in range(count))


def hub_path(conn, count: int, kind: str) -> None:
    protocol, hub, session, outbuf = conn.protocol, conn.hub, conn.session, conn.outbuf
    for _ in range(count):
        event = protocol.next_event()
        if kind == "room":
            msg_id, timestamp_ms = hub.send_room(session, event.room, event.text)
        else:
            msg_id, timestamp_ms = hub.send_direct(session, event.peer, event.text)
        outbuf.append(encode_ack(msg_id, timestamp_ms, event.request_id))


def time_one(path, kind: str, members: int, count: int) -> float:
    conn, buffers = setup(members)
    conn.protocol.receive_data(frames(kind, count))
    started = time.process_time()
    if path is None:
        hub_path(conn, count, kind)
    else:
        path(conn, 1 << 62, 0.0)
    elapsed = time.process_time() - started
    assert conn.outbuf.pending_bytes >= 25 * count
    return elapsed / count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    paths = {"hub": None, "lane-python": _lane_py.run}
    if lane.lane_c is not None:
        paths["lane-cython"] = lane.lane_c.run
    print(f"codec {IMPLEMENTATION}; {args.messages} messages, room of {args.members}; "
          f"median of {args.repeat}, per message")
    for kind in ("room", "direct"):
        results = {name: [] for name in paths}
        for _ in range(args.repeat):
            for name, path in paths.items():         # alternating
                results[name].append(time_one(path, kind, args.members, args.messages))
        line = ", ".join(f"{name} {statistics.median(times) * 1e9:,.0f} ns"
                         for name, times in results.items())
        print(f"{kind:6}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
