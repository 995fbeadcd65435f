"""The load generator's own ceiling, without a server: how many verified deliveries per second
one generator core takes in.

    python -m benchmarks.bench_generator                   # fanout's shape: 200 x 10 senders
    python -m benchmarks.bench_generator --loop per-socket # the loop before: recv_into + feed
    CHATCORE_NO_EXTENSIONS=1 python -m benchmarks.bench_generator   # the pure-Python twin

A sender process (forked; Python, but only ``bytes.join`` and ``send`` of large buffers, so it
writes at memcpy speed) writes valid stamped RoomMessage frames from ``--senders`` senders, in
turn, into ``--connections`` TCP loopback connections, round after round: a round's buffer is
built once from a template split at the high five hex digits of every sequence number, so
sequence numbers run on without a gap from round to round (seq = round << 12 | k, 4096
messages per sender and round) and nothing is rewritten per frame.
This process is the receiving generator: the real ``worker.Worker`` with one ready client per
connection, its ``poll`` in a loop, every frame verified (per-sender order, loss, duplicates;
the send times are the template's, so latencies mean nothing here). It prints deliveries per
second of wall time, its own CPU (user + system, from getrusage) and deliveries per CPU
second: the ceiling of one core, whatever the sender or the machine's load manage to feed it.
A run whose frames are not all verified in order exits 1. Pin with ``--cpus RECEIVER SENDER``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import select
import socket
import sys
import time

from chatcore.protocol import encode_room_message

from . import verify
from .scenarios import ClientSpec, Plan
from .worker import Worker

SEQ_LOW_BITS = 12                 # a round: 4096 messages per sender (three hex digits)
SOCKET_BUFFER_BYTES = 4 << 20     # asked of SO_SNDBUF/SO_RCVBUF (the kernel caps it: *mem_max)
HIGH_DIGITS = (32 - SEQ_LOW_BITS) // 4


def round_template(senders: int, size: int, run: str) -> list:
    """One round's frames, the senders taking turns, split where each sequence number's high
    hex digits go: ``b"%05x" % round`` joins the pieces into that round's bytes."""
    room = f"b{run}r0".encode()
    text_bytes = max(size, verify.TEXT_HEADER_BYTES)
    pieces, piece = [], []
    for k in range(1 << SEQ_LOW_BITS):
        for s in range(senders):
            text = verify.stamp(s, k, 1, size)        # high digits 0, replaced per round
            frame = encode_room_message(room, f"b{run}n{s}".encode(), k + 1, 0, text)
            high = len(frame) - text_bytes + 8        # after the sender id
            piece.append(frame[:high])
            pieces.append(b"".join(piece))
            piece = [frame[high + HIGH_DIGITS:]]
    pieces.append(b"".join(piece))
    return pieces


class Feeder:
    """Writes rounds into sending sockets, each connection at its own round and offset."""

    def __init__(self, socks, pieces):
        self.socks = socks
        self.pieces = pieces
        self.at = [(0, 0)] * len(socks)          # (round, offset) per connection
        self.rounds: dict = {}                   # round -> its bytes, while someone needs it
        for s in socks:
            s.setblocking(False)

    def data(self, rnd: int) -> bytes:
        if rnd not in self.rounds:
            low = min(r for r, _ in self.at)
            for old in [r for r in self.rounds if r < low]:
                del self.rounds[old]
            if rnd >= 1 << (32 - SEQ_LOW_BITS):
                raise SystemExit("bench_generator: sequence numbers exhausted; run shorter")
            self.rounds[rnd] = (b"%0*x" % (HIGH_DIGITS, rnd)).join(self.pieces)
        return self.rounds[rnd]

    def fill(self, k: int) -> None:
        """Write into connection k until its socket buffers are full."""
        rnd, offset = self.at[k]
        sock = self.socks[k]
        while True:
            data = self.data(rnd)
            try:
                offset += sock.send(memoryview(data)[offset:])
            except BlockingIOError:
                break
            if offset >= len(data):
                rnd, offset = rnd + 1, 0
            self.at[k] = (rnd, offset)


def sender_main(socks, pieces, stop_at: float, cpu) -> None:
    """--mode stream: keep every connection full until ``stop_at``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    feeder = Feeder(socks, pieces)
    ep = select.epoll()
    for k, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLOUT)
    index = {s.fileno(): k for k, s in enumerate(socks)}
    while time.monotonic() < stop_at:
        for fd, _ in ep.poll(0.1):
            feeder.fill(index[fd])


def connect_pairs(n: int) -> tuple:
    """n TCP loopback connections with buffers as large as the system allows: (receiving ends,
    sending ends)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    ours, theirs = [], []
    for _ in range(n):
        out = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out.connect(listener.getsockname())
        sock, _ = listener.accept()
        sock.setblocking(False)
        ours.append(sock)
        theirs.append(out)
    listener.close()
    return ours, theirs


def socket_pairs(n: int) -> tuple:
    """n AF_UNIX stream socketpairs: (receiving ends, sending ends)."""
    ours, theirs = [], []
    for _ in range(n):
        a, b = socket.socketpair()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        a.setblocking(False)
        ours.append(a)
        theirs.append(b)
    return ours, theirs


def make_worker(socks, senders: int, size: int, run: str) -> Worker:
    specs = [ClientSpec(i, f"b{run}n{senders + i}", f"b{run}r0", None, False)
             for i in range(len(socks))]
    plan = Plan("fanout", tuple(specs), {}, 0, size, 0.0, 64)
    parent, child = multiprocessing.Pipe()
    worker = Worker([("127.0.0.1", 0)], plan, specs, child)
    worker.phase = "run"
    for c, sock in zip(worker.clients, socks):
        c.sock, c.fd, c.state = sock, sock.fileno(), "ready"
        worker.by_fd[c.fd] = c
        worker.ep.register(c.fd, select.EPOLLIN)
        if hasattr(worker, "receiver"):              # (a tree before verify.Receiver: none)
            worker.receiver.add(c.fd, c.stream)
    worker._parent = parent                           # kept open: the pipe stays quiet
    return worker


def per_socket_poll(worker: Worker, timeout: float) -> None:
    """The receive loop before ``verify.Receiver``: Python's epoll, then per ready socket a
    ``recv_into`` and a ``Stream.feed``."""
    for fd, mask in worker.ep.poll(timeout):
        c = worker.by_fd.get(fd)
        if c is not None and mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            worker.readable(c)


def cpu_seconds() -> tuple:
    """(user, system) CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def drain(worker: Worker, poll) -> None:
    """Poll without waiting until two polls in a row bring no message."""
    tally, quiet = worker.tally, 0
    while quiet < 2:
        before = tally.messages
        poll(0)
        quiet = quiet + 1 if tally.messages == before else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("-d", "--size", type=int, default=100, help="text bytes")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds of receiving measured (prefill: of draining)")
    parser.add_argument("--mode", choices=("prefill", "stream"), default="prefill",
                        help="prefill: fill every connection, then drain them all, timed, and "
                             "again (the receiver never waits for the sender); stream: a sender "
                             "process writes while this one reads")
    parser.add_argument("--transport", choices=("tcp", "unix"), default="tcp",
                        help="TCP loopback (as the generator's runs) or AF_UNIX socketpairs")
    parser.add_argument("--loop", choices=("batch", "per-socket"), default="batch")
    parser.add_argument("--cpus", type=int, nargs=2, metavar=("RECEIVER", "SENDER"))
    args = parser.parse_args(argv)
    run = os.urandom(3).hex()
    pieces = round_template(args.senders, args.size, run)
    ours, theirs = (connect_pairs if args.transport == "tcp" else socket_pairs)(args.connections)
    worker = make_worker(ours, args.senders, args.size, run)
    if args.cpus:
        os.sched_setaffinity(0, {args.cpus[0]})
    poll = worker.poll if args.loop == "batch" else (
        lambda timeout: per_socket_poll(worker, timeout))
    tally = worker.tally
    wall = user = system = 0.0
    delivered = 0
    if args.mode == "prefill":
        feeder = Feeder(theirs, pieces)
        while wall < args.duration:
            for k in range(len(theirs)):
                feeder.fill(k)
            t0, cpu0, got0 = time.monotonic(), cpu_seconds(), tally.messages
            drain(worker, poll)
            t1, cpu1 = time.monotonic(), cpu_seconds()
            wall += t1 - t0
            user, system = user + cpu1[0] - cpu0[0], system + cpu1[1] - cpu0[1]
            delivered += tally.messages - got0
    else:
        start = time.monotonic()
        ctx = multiprocessing.get_context("fork")
        sender = ctx.Process(target=sender_main, daemon=True,
                             args=(theirs, pieces, start + 1.0 + args.duration,
                                   args.cpus[1] if args.cpus else None))
        sender.start()
        for s in theirs:
            s.close()
        while time.monotonic() < start + 0.5:
            poll(0.05)
        t0, cpu0, got0 = time.monotonic(), cpu_seconds(), tally.messages
        while time.monotonic() < t0 + args.duration:
            poll(0.05)
        t1, cpu1 = time.monotonic(), cpu_seconds()
        sender.kill()
        sender.join()
        wall, user, system = t1 - t0, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        delivered = tally.messages - got0
    snap = tally.snapshot()
    cpu = user + system
    bad = {k: snap[k] for k in ("gaps", "duplicates", "reordered", "malformed") if snap[k]}
    bad.update({"errors": worker.errors, "disconnects": worker.disconnects} if
               worker.errors or worker.disconnects else {})
    print(f"generator receive loop ({args.mode}, {args.transport}, {args.loop} loop, "
          f"{verify.IMPLEMENTATION} verifier): {args.connections} connections x {args.senders} "
          f"senders, {args.size}-byte texts; load average {os.getloadavg()[0]:.2f}")
    print(f"  delivered   {delivered / wall:>14,.0f} verified msgs/s of wall time "
          f"({delivered:,} in {wall:.2f} s)")
    print(f"  CPU         {cpu / wall:>14.0%} of one core ({user:.2f} s user + {system:.2f} s "
          f"system)")
    print(f"  ceiling     {delivered / max(cpu, 1e-9):>14,.0f} verified msgs per CPU second "
          f"({cpu * 1e9 / max(delivered, 1):.1f} ns each: {user * 1e9 / max(delivered, 1):.1f} "
          f"user, {system * 1e9 / max(delivered, 1):.1f} system)")
    print("  verification " + ("OK: every frame in order, none lost or repeated" if not bad
                               else f"FAILED: {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
