"""An independent latency probe: what the server adds, measured apart from the load generator.

One small process with two native-protocol clients of its own, run beside a load:

* ``listen`` joins the loaded room (``--room``, the generator's) as one more member and reads
  the generator's stamped messages: receive time minus the send stamp is a delivery's latency
  without the generator's receive side (it is the room's last member, so the last written);
* ``echo`` joins a room of its own and sends ``--echo-rate`` messages a second at random
  (Poisson) times with its own clock, timing each until the server hands it back: the server's
  added latency for a message that fans out to nobody else, with no generator in the path.

Both stamps are CLOCK_MONOTONIC microseconds, the generator's clock too. Run it as SCHED_FIFO
(``chrt -f 1``) so that its own wake-ups are on time; ``late_wakeup_ms`` says how late they were
anyway. It prints one JSON object: ``{"listen": summary, "echo": summary, ...}``, each summary
with count and p50/p90/p99/p99.9/max in ms. ``benchmarks.loadgen --probe`` runs it for a load.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import sys
import time

from chatcore import events as ev
from chatcore.codec import FrameDecoder, encode_frame
from chatcore.protocol import PROTOCOL_VERSION, encode_event

from .verify import TEXT_HEADER_BYTES

ECHO_RATE = 200.0              # probe messages a second: ~1 % of the 100 k/s load's requests
READ_BYTES = 1 << 20
SETUP_SECONDS = 10.0
ROOM_MESSAGE, OK, WELCOME, ERROR, PING, PONG = 0xA0, 0x80, 0x81, 0x83, 0x02, 0x03
_HELLO_ID, _JOIN_ID = 1, 2


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def percentiles(samples_us: list) -> dict:
    """count, p50/p90/p99/p99.9/max (ms) of latencies in microseconds (nearest rank)."""
    if not samples_us:
        return {"count": 0}
    xs = sorted(samples_us)
    n = len(xs)

    def at(q: float) -> float:
        return xs[min(n - 1, max(0, int(q * n + 0.5) - 1))] / 1000

    return {"count": n, "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "p999": at(0.999), "max": xs[-1] / 1000}


class ProbeClient:
    """One blocking-connect, then non-blocking client: frames in, events out."""

    def __init__(self, addr, name: str, room: str):
        self.sock = socket.create_connection(addr, timeout=SETUP_SECONDS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.room = room
        self.decoder = FrameDecoder(16 << 20)
        self.sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, name, "latency-probe",
                                                request_id=_HELLO_ID))
                          + encode_event(ev.JoinRoom(room, request_id=_JOIN_ID)))
        deadline = time.monotonic() + SETUP_SECONDS
        joined = False
        while not joined:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(READ_BYTES)
            if not data:
                raise RuntimeError(f"{name}: the server closed the connection during setup")
            for msg_type, request_id, payload in self.frames(data):
                if msg_type == ERROR:
                    raise RuntimeError(f"{name}: server error {payload[3:]!r}")
                if msg_type == OK and request_id == _JOIN_ID:
                    joined = True
        self.sock.setblocking(False)

    def frames(self, data) -> list:
        self.decoder.receive_data(data)
        out = []
        while (frame := self.decoder.next_frame()) is not None:
            if frame[0] == PING:
                self.sock.send(encode_frame(PONG, frame[1], frame[2]))
            else:
                out.append(frame)
        return out

    def read(self) -> list:
        try:
            data = self.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        if not data:
            raise RuntimeError("the server closed the probe's connection")
        return self.frames(data)


def _stamp_of(payload: bytes) -> int | None:
    """The send time (us) in a RoomMessage's stamped text, or None for any other text."""
    pos = 0
    for _ in range(2):                                 # room, sender
        pos += 2 + int.from_bytes(payload[pos:pos + 2], "big")
    pos += 16                                          # msg_id, timestamp_ms
    head = payload[pos:pos + TEXT_HEADER_BYTES]
    if len(head) < TEXT_HEADER_BYTES:
        return None
    try:
        return int(head[16:32], 16)
    except ValueError:
        return None


def run(addr, room: str | None, echo_rate: float, duration: float, wait_go: bool = False,
        samples: str | None = None) -> dict:
    """Probe the server at ``addr`` for ``duration`` seconds; with ``wait_go``, say ``ready``
    on stdout once joined and start at the CLOCK_MONOTONIC us read from stdin then; with
    ``samples``, write every sample to that file (``listen|echo SENT_US LATENCY_US`` a line:
    to line slow ones up with a server's turn trace, CHATCORE_TRACE_TURNS)."""
    tag = os.urandom(3).hex()
    listen = ProbeClient(addr, f"probe{tag}l", room) if room else None
    echo = ProbeClient(addr, f"probe{tag}e", f"probe{tag}") if echo_rate > 0 else None
    start_us = 0
    if wait_go:
        print("ready", flush=True)
        start_us = int(sys.stdin.readline())
    listened, echoed, late = [], [], []
    listened_at, echoed_at = [], []
    now = _now_us()
    start_us = max(start_us, now)
    stop_us = start_us + int(duration * 1e6)
    next_send = start_us + (int(random.expovariate(echo_rate) * 1e6) if echo else 0)
    seq, in_flight = 0, {}
    poller = select.epoll()
    clients = {c.sock.fileno(): c for c in (listen, echo) if c is not None}
    for fd in clients:
        poller.register(fd, select.EPOLLIN)
    # The last echo gets a moment after the stop to come back.
    while (now := _now_us()) < stop_us or (in_flight and now < stop_us + 1_000_000):
        if echo is not None and now >= next_send and now < stop_us:
            late.append(now - next_send)
            text = b"%08x%08x%016x" % (0xFFFFFFFF, seq, now)
            in_flight[seq] = now
            echo.sock.send(encode_event(ev.SendRoom(echo.room, text.decode(),
                                                    request_id=3 + seq % 1000)))
            seq += 1
            next_send += max(1, int(random.expovariate(echo_rate) * 1e6))
        wait_us = (next_send if echo is not None and next_send < stop_us else stop_us + 1_000_000)
        for fd, _ in poller.poll(max(0.0, (wait_us - _now_us()) / 1e6)):
            client = clients[fd]
            frames = client.read()
            got_us = _now_us()
            for msg_type, _, payload in frames:
                if msg_type != ROOM_MESSAGE:
                    continue
                sent = _stamp_of(payload)
                if sent is None:
                    continue
                if client is listen:
                    if start_us <= sent < stop_us:
                        listened.append(got_us - sent)
                        listened_at.append(sent)
                else:
                    k = int(bytes(payload[-TEXT_HEADER_BYTES:][8:16]), 16)
                    if in_flight.pop(k, None) is not None:
                        echoed.append(got_us - sent)
                        echoed_at.append(sent)
    for c in clients.values():
        c.sock.close()
    if samples:
        with open(samples, "w") as f:
            for kind, sent_at, latencies in (("listen", listened_at, listened),
                                              ("echo", echoed_at, echoed)):
                f.writelines(f"{kind} {s} {us}\n" for s, us in zip(sent_at, latencies))
    return {"listen": percentiles(listened), "echo": percentiles(echoed),
            "echo_lost": len(in_flight), "late_wakeup_ms": percentiles(late),
            "echo_rate": echo_rate, "room": room,
            "fifo": os.sched_getscheduler(0) == os.SCHED_FIFO}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_probe",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=7878)
    parser.add_argument("--room", help="the loaded room to listen in (the generator's)")
    parser.add_argument("--echo-rate", type=float, default=ECHO_RATE,
                        help="own messages a second, at Poisson times (0: none)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--wait-go", action="store_true",
                        help="print ready once joined, then start at the CLOCK_MONOTONIC "
                             "microseconds read from stdin (how loadgen --probe runs it)")
    parser.add_argument("--cpus", type=int, nargs="+", help="pin the probe to these cores")
    parser.add_argument("--samples", metavar="PATH",
                        help="write every sample to PATH (kind, send time us, latency us)")
    parser.add_argument("--fifo", action="store_true",
                        help="run as SCHED_FIFO priority 2, above a generator under chrt -f 1 (needs the privilege; else says so)")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, args.cpus)
    if args.fifo:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(2))
        except OSError as exc:
            print(f"latency probe: not SCHED_FIFO ({exc})", file=sys.stderr)
    try:
        result = run((args.host, args.port), args.room, args.echo_rate, args.duration,
                     args.wait_go, args.samples)
    except (OSError, RuntimeError) as exc:
        print(f"latency probe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
