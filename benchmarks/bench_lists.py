"""What reading a list of 100 000 rooms costs everyone else: a bystander's delivery latency.

Starts a server (on the active hot path), creates the rooms from raw pipelined connections,
then measures one bystander pair (a message sent, timed until the other member has it, one
in flight at a time) in phases: nobody listing (baseline), a client paging through all rooms
(one page in flight, as ``ChatClient.iter_rooms`` does), a client pipelining 20 page requests
in one write, and the same with a sparse glob (each request examines the scan budget). Prints
median, p99 and max per phase and the paging rate.

    python -m benchmarks.bench_lists [--rooms 100000] [--seconds 3]
    CHATCORE_NO_EXTENSIONS=1 python -m benchmarks.bench_lists      # the fallback
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.codec import IMPLEMENTATION
from chatcore.protocol import PROTOCOL_VERSION, encode_event

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOIN_BATCH = 2000
LISTENING = re.compile(r"listening on \S+:(\d+)")


def start_server(rooms: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "server.py"), "--port", "0", "--log-level", "INFO",
         "--max-rooms-per-user", str(rooms), "--max-rooms", str(rooms + 10)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = LISTENING.search(line)
        if found:
            port = int(found.group(1))
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, port
    raise RuntimeError("server did not start")


def create_rooms(port: int, names: list, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, user, request_id=1)))
    for batch, start in enumerate(range(0, len(names), JOIN_BATCH)):
        frames = [encode_event(ev.JoinRoom(name, request_id=2 + start + i))
                  for i, name in enumerate(names[start:start + JOIN_BATCH])]
        pong = encode_event(ev.Pong(batch, request_id=0xFFFFFFFF))
        sock.sendall(b"".join(frames) + encode_event(ev.Ping(batch, request_id=0xFFFFFFFF)))
        tail = b""
        while pong not in tail:
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("server closed a room-making connection")
            tail = tail[-len(pong):] + data
    return sock


class Bystander:
    """Two members of one room; records send-to-delivery times while ``recording``."""

    def __init__(self, port: int):
        self.sender = ChatClient("127.0.0.1", port, timeout=60)
        self.receiver = ChatClient("127.0.0.1", port, timeout=60)
        self.sender.connect("bystander-a")
        self.receiver.connect("bystander-b")
        self.sender.join("bystanders")
        self.receiver.join("bystanders")
        self.samples: list[float] = []
        self.recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            text = str(count)
            sent = time.monotonic()
            self.sender.send(ev.SendRoom("bystanders", text))
            self.receiver.wait_for(lambda e: type(e) is ev.RoomMessage and e.text == text)
            if self.recording:
                self.samples.append(time.monotonic() - sent)
            self.sender.drain()
            time.sleep(0.001)

    def phase(self, work) -> tuple[list[float], float]:
        self.samples = []
        self.recording = True
        started = time.monotonic()
        work()
        elapsed = time.monotonic() - started
        self.recording = False
        return self.samples, elapsed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def summary(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"n={len(ordered):5d}  median {statistics.median(ordered) * 1e3:6.2f} ms  "
            f"p99 {p99 * 1e3:6.2f} ms  max {ordered[-1] * 1e3:6.2f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="baseline phase length")
    args = parser.parse_args(argv)
    print(f"hot path: {IMPLEMENTATION}; rooms: {args.rooms}")
    proc, port = start_server(args.rooms)
    try:
        names = [f"room-{i:06d}" for i in range(args.rooms)]
        started = time.monotonic()
        makers = [create_rooms(port, names[i::4], f"maker{i}") for i in range(4)]
        print(f"created {args.rooms} rooms in {time.monotonic() - started:.1f} s")
        bystander = Bystander(port)
        pager = ChatClient("127.0.0.1", port, timeout=60)
        pager.connect("pager")

        samples, _ = bystander.phase(lambda: time.sleep(args.seconds))
        print(f"{'baseline (nobody listing)':44s} {summary(samples)}")

        read: list = []
        samples, elapsed = bystander.phase(lambda: read.extend(pager.iter_rooms()))
        print(f"{'paging all rooms, one page in flight':44s} {summary(samples)}")
        print(f"  read {len(read)} rooms in {elapsed:.2f} s "
              f"({len(read) / elapsed:,.0f} rooms/s, {len(read) / 200:.0f} pages)")

        def burst(request) -> None:
            for _ in range(5):
                ids = range(1000, 1020)
                pager.send_raw(b"".join(encode_event(request(i)) for i in ids))
                for i in ids:
                    pager.wait_for(lambda e, i=i: getattr(e, "request_id", 0) == i
                                   and type(e) in (ev.RoomPage, ev.RoomList, ev.Error))
                time.sleep(0.2)

        samples, _ = bystander.phase(lambda: burst(
            lambda i: ev.ListRoomsPage(request_id=i)))
        print(f"{'20 ListRoomsPage in one write (x5)':44s} {summary(samples)}")
        samples, _ = bystander.phase(lambda: burst(
            lambda i: ev.ListRoomsPage(pattern="*x*", request_id=i)))
        print(f"{'20 sparse-glob pages in one write (x5)':44s} {summary(samples)}")
        samples, _ = bystander.phase(lambda: burst(lambda i: ev.ListRooms(request_id=i)))
        print(f"{'20 old ListRooms in one write (x5)':44s} {summary(samples)}")
        bystander.stop()
        for maker in makers:
            maker.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
