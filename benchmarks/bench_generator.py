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
            if s is not None:
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

    def fill(self, k: int, limit: int = 0) -> None:
        """Write into connection k until its socket buffers are full, or ``limit`` bytes
        (if not 0)."""
        rnd, offset = self.at[k]
        sock = self.socks[k]
        left = limit or -1
        while left:
            data = self.data(rnd)
            chunk = memoryview(data)[offset:] if left < 0 else \
                memoryview(data)[offset:offset + left]
            try:
                n = sock.send(chunk)
            except BlockingIOError:
                break
            offset += n
            left = left - n if left > 0 else left
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


def make_worker(socks, senders: int, size: int, run: str, recv_bytes: int,
                budget_bytes: int) -> Worker:
    specs = [ClientSpec(i, f"b{run}n{senders + i}", f"b{run}r0", None, False)
             for i in range(len(socks))]
    plan = Plan("fanout", tuple(specs), {}, 0, size, 0.0, 64)
    parent, child = multiprocessing.Pipe()
    worker = Worker([("127.0.0.1", 0)], plan, specs, child)
    worker.phase = "run"
    if hasattr(worker, "receiver"):                  # (a tree before verify.Receiver: none)
        worker.receiver = (verify.Receiver(worker.ep, recv_bytes, budget_bytes)
                           if hasattr(verify, "READ_BUDGET_BYTES") else
                           verify.Receiver(worker.ep, recv_bytes))
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


class BareLoop:
    """The kernel's floor: the same epoll and the same reads per ready socket (of up to
    ``buffer_bytes``, again while a read fills the buffer, up to ``budget_bytes`` a poll), the
    bytes counted and thrown away (no frame looked at); deliveries = bytes / frame bytes."""

    def __init__(self, worker: Worker, buffer_bytes: int, budget_bytes: int,
                 frame_bytes: float):
        self.ep = worker.ep
        self.fds = set(worker.by_fd)
        self.size = buffer_bytes
        self.view = memoryview(bytearray(buffer_bytes))
        self.budget = max(budget_bytes, 1)
        self.frame_bytes = frame_bytes
        self.bytes = 0

    @property
    def messages(self) -> int:
        return int(self.bytes // self.frame_bytes)

    def poll(self, timeout: float) -> None:
        readv, view, fds, size, budget = os.readv, [self.view], self.fds, self.size, self.budget
        for fd, _ in self.ep.poll(timeout):
            if fd in fds:
                total = 0
                while total < budget:
                    try:
                        n = readv(fd, view)
                    except BlockingIOError:
                        break
                    total += n
                    if n < size:
                        break
                self.bytes += total


def frame_cuts(data: bytes, every: int) -> list:
    """Offsets of frame starts in ``data`` about ``every`` bytes apart (and its end)."""
    cuts, pos, last = [0], 0, 0
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos:pos + 4], "big")
        if pos - last >= every or pos >= len(data):
            cuts.append(pos)
            last = pos
    return cuts


def verify_from_memory(pieces, size: int, recv_bytes: int, duration: float) -> tuple:
    """The verifier alone: the first ``recv_bytes`` of frames (cut at a frame start), as one
    read leaves them in the cache, fed to a new ``verify.Stream`` again and again for
    ``duration`` seconds. (the fastest feed's ns per message, the median feed's, messages per
    feed, tally): on a busy machine the fastest feed is the one nothing interrupted or slowed
    (another process on the core's other hyperthread, or in its caches), the median the usual."""
    data = Feeder([None], pieces).data(0)
    data = data[:frame_cuts(data, recv_bytes)[1]]
    times, stop = [], time.monotonic() + duration
    while time.monotonic() < stop:
        tally = verify.Tally(size)
        stream = verify.Stream(tally)
        t0 = time.perf_counter_ns()
        stream.feed(data, 0)
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    n = max(tally.messages, 1)
    return times[0] / n, times[len(times) // 2] / n, tally


def cpu_seconds() -> tuple:
    """(user, system) CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def drain(tally, poll) -> None:
    """Poll without waiting until two polls in a row bring no message."""
    quiet = 0
    while quiet < 2:
        before = tally.messages
        poll(0)
        quiet = quiet + 1 if tally.messages == before else 0


SHAPES = {            # --shape: (connections, senders each hears, messages per sender per fill)
    "fanout": (200, 10, 0),       # one room of 200, 10 senders; every socket filled up
    "rooms": (2000, 1, 8),        # 2000 sockets each hearing its room's one sender, a few at a time
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="fanout",
                        help="the defaults of the next three: " + "; ".join(
                            f"{k} {c} connections x {n} senders, burst {b}"
                            for k, (c, n, b) in SHAPES.items()))
    parser.add_argument("--connections", type=int)
    parser.add_argument("--senders", type=int)
    parser.add_argument("--burst", type=int, metavar="MESSAGES",
                        help="prefill: messages per sender written into each connection before "
                             "each drain (0: until its socket buffers are full)")
    parser.add_argument("-d", "--size", type=int, default=100, help="text bytes")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds of receiving measured (prefill: of draining)")
    parser.add_argument("--mode", choices=("prefill", "stream"), default="prefill",
                        help="prefill: fill every connection, then drain them all, timed, and "
                             "again (the receiver never waits for the sender); stream: a sender "
                             "process writes while this one reads")
    parser.add_argument("--transport", choices=("tcp", "unix"), default="tcp",
                        help="TCP loopback (as the generator's runs) or AF_UNIX socketpairs")
    parser.add_argument("--loop", choices=("batch", "per-socket", "bare", "memory"),
                        default="batch",
                        help="batch: verify.Receiver (the generator's); per-socket: recv_into "
                             "and Stream.feed per ready socket (the loop before); bare: the "
                             "same reads, nothing verified (the kernel's floor); memory: the "
                             "verifier alone, fed from memory (no socket: its user CPU)")
    parser.add_argument("--recv-bytes", type=int, default=getattr(verify, "RECV_BYTES",
                                                                  256 * 1024),
                        help="the receive buffer: each read takes at most this many bytes")
    parser.add_argument("--budget-bytes", type=int,
                        default=getattr(verify, "READ_BUDGET_BYTES", 0),
                        help="a ready socket is read again while its reads fill the buffer, up "
                             "to this many bytes per poll (0 in a tree before: one read)")
    parser.add_argument("--cpus", type=int, nargs=2, metavar=("RECEIVER", "SENDER"))
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    connections = args.connections if args.connections is not None else shape[0]
    senders = args.senders if args.senders is not None else shape[1]
    burst = args.burst if args.burst is not None else shape[2]
    run = os.urandom(3).hex()
    pieces = round_template(senders, args.size, run)
    round_bytes = sum(map(len, pieces)) + HIGH_DIGITS * (len(pieces) - 1)
    frame_bytes = round_bytes / (senders << SEQ_LOW_BITS)
    if args.loop == "memory":
        best, median, tally = verify_from_memory(pieces, args.size, args.recv_bytes,
                                                 args.duration)
        snap = tally.snapshot()
        bad = {k: snap[k] for k in ("gaps", "duplicates", "reordered", "malformed") if snap[k]}
        print(f"generator verifier from memory ({verify.IMPLEMENTATION}): {senders} senders, "
              f"{args.size}-byte texts ({frame_bytes:.0f}-byte frames), "
              f"{args.recv_bytes // 1024} KiB fed at once; load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"  ceiling     {1e9 / best:>14,.0f} msgs per CPU second ({best:.1f} ns each, the "
              f"fastest feed of {tally.messages:,} messages; the median feed {median:.1f} ns)")
        print("  verification " + ("OK: every frame in order, none lost or repeated" if not bad
                                   else f"FAILED: {bad}"))
        return 1 if bad else 0
    ours, theirs = (connect_pairs if args.transport == "tcp" else socket_pairs)(connections)
    worker = make_worker(ours, senders, args.size, run, args.recv_bytes, args.budget_bytes)
    if args.cpus:
        os.sched_setaffinity(0, {args.cpus[0]})
    if args.loop == "bare":
        tally = BareLoop(worker, args.recv_bytes, args.budget_bytes, frame_bytes)
        poll = tally.poll
    else:
        tally = worker.tally
        poll = worker.poll if args.loop == "batch" else (
            lambda timeout: per_socket_poll(worker, timeout))
    limit = round(burst * senders * frame_bytes)
    wall = user = system = 0.0
    delivered = 0
    if args.mode == "prefill":
        feeder = Feeder(theirs, pieces)
        while wall < args.duration:
            for k in range(len(theirs)):
                feeder.fill(k, limit)
            t0, cpu0, got0 = time.monotonic(), cpu_seconds(), tally.messages
            drain(tally, poll)
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
    snap = worker.tally.snapshot()
    cpu = user + system
    bad = {k: snap[k] for k in ("gaps", "duplicates", "reordered", "malformed") if snap[k]}
    bad.update({"errors": worker.errors, "disconnects": worker.disconnects} if
               worker.errors or worker.disconnects else {})
    verifier = "no" if args.loop == "bare" else verify.IMPLEMENTATION
    print(f"generator receive loop ({args.shape}, {args.mode}, {args.transport}, {args.loop} "
          f"loop, {verifier} verifier): {connections} connections x {senders} senders, "
          f"burst {burst or 'full'}, {args.size}-byte texts ({frame_bytes:.0f}-byte frames), "
          f"{args.recv_bytes // 1024} KiB reads; load average {os.getloadavg()[0]:.2f}")
    print(f"  delivered   {delivered / wall:>14,.0f} {'' if args.loop == 'bare' else 'verified '}"
          f"msgs/s of wall time ({delivered:,} in {wall:.2f} s)")
    print(f"  CPU         {cpu / wall:>14.0%} of one core ({user:.2f} s user + {system:.2f} s "
          f"system)")
    print(f"  ceiling     {delivered / max(cpu, 1e-9):>14,.0f} msgs per CPU second "
          f"({cpu * 1e9 / max(delivered, 1):.1f} ns each: {user * 1e9 / max(delivered, 1):.1f} "
          f"user, {system * 1e9 / max(delivered, 1):.1f} system)")
    if args.loop == "bare":
        print("  verification none (bare reads: the kernel's floor)")
        return 0
    print("  verification " + ("OK: every frame in order, none lost or repeated" if not bad
                               else f"FAILED: {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
