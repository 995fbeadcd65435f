"""chatcore-bench: drives a chatcore server with many real clients and checks what they receive.

Scenarios (each bounded in clients and time; flags override the defaults shown by ``--help``):

* ``fanout``  one room, N members, S senders;
* ``rooms``   many rooms of equal size, senders spread over them;
* ``dm``      pairs of users chatting directly;
* ``connect`` open and hand-shake N clients, hold them, report connect time and server memory;
* ``latency`` fan-out at a fixed rate below saturation, for the latency distribution.

Every message text carries its sender id, sequence number and send time (``verify.stamp``);
receivers count frames in bulk (``chatcore._loadgen``, or its pure twin) and check per-sender
order, losses and duplicates. A run with any loss, reordering, error or failed connection says so
on stderr and exits 1. Clients are spread over ``--procs`` processes, each one single-threaded
epoll loop; all share CLOCK_MONOTONIC, so latencies are comparable across them. ``--tls``
speaks TLS (the server's ``tls_port``); its handshake is part of the connect time.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import errno
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import select
import socket
import ssl
import struct
import sys
import time

from chatcore import events as ev
from chatcore.codec import encode_frame
from chatcore.protocol import PROTOCOL_VERSION, encode_event

from . import verify
from .verify import HIST_BUCKETS, TEXT_HEADER_BYTES, bucket_floor, bucket_of, stamp

SCENARIOS = {
    # clients, rooms, senders, rate (aggregate msgs/s; 0 = window), size, duration (s)
    "fanout": dict(clients=200, rooms=1, senders=10, rate=0, size=100, duration=5.0),
    "rooms": dict(clients=2000, rooms=100, senders=100, rate=0, size=100, duration=5.0),
    "dm": dict(clients=200, rooms=0, senders=200, rate=0, size=100, duration=5.0),
    "connect": dict(clients=10000, rooms=0, senders=0, rate=0, size=100, duration=3.0),
    # 10 senders x 100 msgs/s into a room of 100: 100 000 deliveries/s.
    "latency": dict(clients=100, rooms=1, senders=10, rate=1000, size=100, duration=5.0),
}

RECV_BYTES = 256 * 1024               # one recv per readiness event; large enough for a burst
WINDOW_MESSAGES = 64                  # in-flight messages per sender when --rate is 0
CONNECT_WINDOW = 256                  # handshakes in progress per process; the listen backlog
PROGRESS_SECONDS = 0.5
DRAIN_IDLE_SECONDS = 0.3              # after the last Ack, quiet this long = nothing in flight
SATURATED_CPU = 0.9                   # a process busier than this was the bottleneck
ERROR_SAMPLES = 5

_HEADER = struct.Struct(">IBI")
_U16 = struct.Struct(">H")
_SEND_ROOM, _SEND_DIRECT = 0x22, 0x12
_PING, _PONG, _OK, _WELCOME, _ERROR, _CHAT_OPENED = 0x02, 0x03, 0x80, 0x81, 0x83, 0x91
_HELLO_ID, _JOIN_ID = 1, 2
# A non-blocking socket that cannot go on yet (TLS adds its own two).
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


# -- the plan: who is who ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class ClientSpec:
    index: int
    name: str
    room: str | None          # the room joined, if any
    peer: str | None          # dm: the peer written to
    sender: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    scenario: str
    clients: tuple
    recipients: dict          # sender index -> how many clients receive each of its messages
    rate: float
    size: int
    duration: float
    window: int


def make_plan(args) -> Plan:
    run = os.urandom(3).hex()
    n, s = args.clients, min(args.senders, args.clients)
    specs = []
    recipients = {}
    if args.scenario == "dm":
        n -= n % 2
        s = min(s, n)
        for i in range(n):
            peer = i ^ 1
            specs.append(ClientSpec(i, f"b{run}n{i}", None, f"b{run}n{peer}", i < s))
            if i < s:
                recipients[i] = 1
    else:
        rooms = args.rooms if args.scenario != "connect" else 0
        sizes = [0] * rooms
        for i in range(n):
            room = i % rooms if rooms else None
            if room is not None:
                sizes[room] += 1
            specs.append(ClientSpec(i, f"b{run}n{i}", None if room is None else f"b{run}r{room}",
                                    None, room is not None and i < s))
        for spec in specs:
            if spec.sender:
                recipients[spec.index] = sizes[spec.index % rooms]
    return Plan(args.scenario, tuple(specs), recipients, args.rate, args.size, args.duration,
                args.window)


# -- one worker process --------------------------------------------------------------------------

class Client:
    __slots__ = ("spec", "sock", "fd", "stream", "state", "started_us", "out", "writing",
                 "prefix", "seq", "inflight", "sent", "acked", "msg_type")

    def __init__(self, spec: ClientSpec, tally):
        self.spec = spec
        self.sock = None
        self.fd = -1
        self.stream = verify.Stream(tally)
        self.state = "new"
        self.started_us = 0
        self.out = bytearray()           # what the kernel did not take yet
        self.writing = False
        self.seq = 0
        self.inflight = 0
        self.sent = 0
        self.acked = 0
        target = spec.room if spec.room is not None else spec.peer
        if target is not None:
            raw = target.encode()
            self.prefix = _U16.pack(len(raw)) + raw
            self.msg_type = _SEND_ROOM if spec.room is not None else _SEND_DIRECT
        else:
            self.prefix = b""
            self.msg_type = 0


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Worker:
    """One process's clients in one epoll loop; talks to the parent through ``conn``."""

    def __init__(self, host: str, port: int, plan: Plan, specs, conn,
                 tls: ssl.SSLContext | None = None):
        self.addr = (host, port)
        self.tls = tls
        self.plan = plan
        self.conn = conn
        self.tally = verify.Tally(plan.size)
        self.clients = [Client(spec, self.tally) for spec in specs]
        self.senders = [c for c in self.clients if c.spec.sender]
        self.by_fd: dict = {}
        self.ep = select.epoll()
        self.ep.register(conn.fileno(), select.EPOLLIN)
        self.buf = bytearray(RECV_BYTES)
        self.view = memoryview(self.buf)
        self.text_bytes = max(plan.size, TEXT_HEADER_BYTES)
        self.errors = 0
        self.error_samples: list = []
        self.disconnects = 0
        self.failures = 0
        self.ready = 0
        self.connect_hist: dict = {}
        self.first_start_us = self.last_ready_us = 0
        self.phase = "setup"
        self.go_us = self.stop_us = 0
        self.last_rx_us = 0
        self.parent_msg = None
        self.chat_opened = 0
        self.cpu_at_go = 0.0
        self.pace_turn = 0

    # -- plumbing -----------------------------------------------------------------------------

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(what)

    def close(self, c: Client) -> None:
        if c.sock is not None:
            self.by_fd.pop(c.fd, None)
            try:
                self.ep.unregister(c.fd)
            except (OSError, ValueError):
                pass
            c.sock.close()
            c.sock = None

    def write(self, c: Client, data) -> None:
        if c.sock is None:
            return
        if c.out:
            c.out += data
            return
        try:
            n = c.sock.send(data)
        except _WOULD_BLOCK:
            n = 0
        except OSError as exc:
            self.lost_connection(c, exc)
            return
        if n < len(data):
            c.out += memoryview(data)[n:]
            if not c.writing:
                c.writing = True
                self.ep.modify(c.fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(self, c: Client) -> None:
        try:
            n = c.sock.send(c.out)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.lost_connection(c, exc)
            return
        del c.out[:n]
        if not c.out:
            c.writing = False
            self.ep.modify(c.fd, select.EPOLLIN)

    def lost_connection(self, c: Client, exc=None) -> None:
        if c.state in ("connecting", "tls", "handshake"):
            self.failures += 1
            self.error(f"{c.spec.name}: connect failed: {exc or 'closed by the server'}")
        elif self.phase != "closing":
            self.disconnects += 1
            self.error(f"{c.spec.name}: server closed the connection"
                       + (f" ({exc})" if exc else ""))
        c.state = "closed"
        self.close(c)

    # -- setup: connect, hello, join ---------------------------------------------------------

    def start_connect(self, c: Client) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock, c.fd, c.state = sock, sock.fileno(), "connecting"
        c.started_us = _now_us()
        self.by_fd[c.fd] = c
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            self.lost_connection(c, OSError(err, os.strerror(err)))
            return
        self.ep.register(c.fd, select.EPOLLOUT)

    def connected(self, c: Client) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.lost_connection(c, OSError(err, os.strerror(err)))
            return
        if self.tls is not None:
            c.sock = self.tls.wrap_socket(c.sock, server_hostname=self.addr[0],
                                          do_handshake_on_connect=False)
            c.state = "tls"
            self.tls_handshake(c)
            return
        self.say_hello(c)

    def tls_handshake(self, c: Client) -> None:
        try:
            c.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.ep.modify(c.fd, select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self.ep.modify(c.fd, select.EPOLLOUT)
            return
        except OSError as exc:               # ssl.SSLError included: a failed check, say
            self.lost_connection(c, exc)
            return
        self.say_hello(c)

    def say_hello(self, c: Client) -> None:
        c.state = "handshake"
        self.ep.modify(c.fd, select.EPOLLIN)
        hello = encode_event(ev.Hello(PROTOCOL_VERSION, c.spec.name, "chatcore-bench",
                                      request_id=_HELLO_ID))
        if c.spec.room is not None:       # pipelined: the server handles frames in order
            hello += encode_event(ev.JoinRoom(c.spec.room, request_id=_JOIN_ID))
        self.write(c, hello)

    def became_ready(self, c: Client, now_us: int) -> None:
        c.state = "ready"
        self.ready += 1
        b = bucket_of(now_us - c.started_us)
        self.connect_hist[b] = self.connect_hist.get(b, 0) + 1
        self.last_ready_us = max(self.last_ready_us, now_us)

    # -- frames -------------------------------------------------------------------------------

    def handle(self, c: Client, frames, now_us: int) -> None:
        for msg_type, request_id, payload in frames:
            if msg_type == _PING:
                self.write(c, encode_frame(_PONG, request_id, payload))
            elif msg_type == _WELCOME:
                if c.state == "handshake" and c.spec.room is None:
                    self.became_ready(c, now_us)
            elif msg_type == _OK:
                if c.state == "handshake" and request_id == _JOIN_ID:
                    self.became_ready(c, now_us)
            elif msg_type == _ERROR:
                code = int.from_bytes(payload[:2], "big")
                text = bytes(payload[3:]).decode("utf-8", "replace")
                self.error(f"{c.spec.name}: Error {code} ({text}) to request {request_id}")
                if c.state == "handshake":
                    self.failures += 1
                    c.state = "failed"
            elif msg_type == _CHAT_OPENED:
                self.chat_opened += 1
            # UserLeft, lists: counted by the tally, nothing to do

    def readable(self, c: Client) -> None:
        try:
            n = c.sock.recv_into(self.buf)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.lost_connection(c, exc)
            return
        if n == 0:
            self.lost_connection(c)
            return
        if self.tls is not None:
            n = self.more_records(c, n)
        now_us = _now_us()
        self.last_rx_us = now_us
        try:
            frames = c.stream.feed(self.view[:n], now_us)
        except ValueError as exc:
            self.error(f"{c.spec.name}: broken stream: {exc}")
            self.lost_connection(c)
            return
        if frames:
            self.handle(c, frames, now_us)
        acks = c.stream.acks
        if acks:
            c.stream.acks = 0
            c.acked += acks
            c.inflight -= acks
            if (not self.plan.rate and self.phase == "run" and
                    c.inflight <= self.plan.window // 2):
                self.send_messages(c, self.plan.window - c.inflight, now_us)

    def more_records(self, c: Client, n: int) -> int:
        """TLS hands out one record (16 KiB at most) per recv: take what else is in, as one
        plain recv would."""
        while n < RECV_BYTES:
            try:
                more = c.sock.recv_into(self.view[n:])
            except OSError:                  # would block (ssl.SSLWantReadError) or failed:
                break                        # an error shows again on the next recv
            if not more:
                break
            n += more
        return n

    # -- sending ------------------------------------------------------------------------------

    def send_messages(self, c: Client, count: int, now_us: int) -> None:
        if count <= 0 or c.sock is None:
            return
        prefix, size, sender = c.prefix, self.plan.size, c.spec.index
        length = 5 + len(prefix) + self.text_bytes
        pack, msg_type = _HEADER.pack, c.msg_type
        parts = []
        seq = c.seq
        for _ in range(count):
            parts.append(pack(length, msg_type, (seq + 1) & 0xFFFFFFFF))
            parts.append(prefix)
            parts.append(stamp(sender, seq, now_us, size))
            seq += 1
        c.seq = seq
        c.sent += count
        c.inflight += count
        self.write(c, b"".join(parts))

    def pace(self, now_us: int) -> None:
        """--rate: send what is due since go, round-robin over this process's senders."""
        rate = self.plan.rate * len(self.senders) / max(1, len(self.plan.recipients))
        due = int((now_us - self.go_us) * rate / 1e6) - sum(c.sent for c in self.senders)
        if due <= 0:
            return
        live = [c for c in self.senders if c.sock is not None]
        if not live:
            return
        each, extra = divmod(due, len(live))
        # rotate who gets the extra so no sender runs ahead
        start = self.pace_turn % len(live)
        for k in range(len(live)):
            c = live[(start + k) % len(live)]
            self.send_messages(c, each + (1 if k < extra else 0), now_us)
        self.pace_turn += extra

    # -- the loop -----------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for fd, mask in self.ep.poll(timeout):
            c = self.by_fd.get(fd)
            if c is None:
                if self.conn.poll():
                    self.parent_msg = self.conn.recv()
                continue
            if c.state == "connecting":
                self.connected(c)
                continue
            if c.state == "tls":
                self.tls_handshake(c)
                continue
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self.readable(c)
            if mask & select.EPOLLOUT and c.sock is not None and c.out:
                self.flush(c)

    def wait_parent(self) -> tuple:
        while self.parent_msg is None:
            self.poll(0.1)
        msg, self.parent_msg = self.parent_msg, None
        return msg

    def run(self) -> None:
        _raise_fd_limit()
        self.setup()
        msg = self.wait_parent()
        if msg[0] != "go":
            return self.finish(abort=True)
        self.go_us, self.stop_us = msg[1], msg[2]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_at_go = usage.ru_utime + usage.ru_stime
        self.pace_turn = 0
        while _now_us() < self.go_us:
            self.poll(max(0.0, (self.go_us - _now_us()) / 1e6))
        self.phase = "run"
        self.traffic()
        self.phase = "drain"
        self.drain()
        self.finish()

    def setup(self) -> None:
        pending = list(reversed(self.clients))
        self.first_start_us = _now_us()
        progress_at = time.monotonic() + PROGRESS_SECONDS
        started = 0
        while pending or self.ready + self.failures + self.disconnects < len(self.clients):
            in_progress = started - self.ready - self.failures - self.disconnects
            while pending and in_progress < CONNECT_WINDOW:
                self.start_connect(pending.pop())
                started += 1
                in_progress += 1
            self.poll(0.05)
            if self.parent_msg is not None and self.parent_msg[0] == "abort":
                return
            if time.monotonic() >= progress_at:
                progress_at += PROGRESS_SECONDS
                self.conn.send(("connecting", self.ready, self.failures + self.disconnects))
        self.conn.send(("ready", self.ready, self.failures + self.disconnects))

    def traffic(self) -> None:
        now_us = _now_us()
        rate = self.plan.rate
        if not rate:
            for c in self.senders:
                self.send_messages(c, self.plan.window, now_us)
        progress_us = now_us + int(PROGRESS_SECONDS * 1e6)
        timeout = 0.001 if rate else 0.05
        while now_us < self.stop_us:
            self.poll(min(timeout, (self.stop_us - now_us) / 1e6))
            now_us = _now_us()
            if rate and now_us < self.stop_us:
                self.pace(now_us)
            if now_us >= progress_us:
                progress_us += int(PROGRESS_SECONDS * 1e6)
                self.report_progress()
        self.at_stop = (sum(c.sent for c in self.senders), self.tally.messages)

    def report_progress(self) -> None:
        self.conn.send(("progress", sum(c.sent for c in self.senders), self.tally.messages,
                        self.errors + self.disconnects))

    def drain(self) -> None:
        deadline = _now_us() + int(max(5.0, self.plan.duration) * 1e6)
        progress_us = _now_us() + int(PROGRESS_SECONDS * 1e6)
        while True:
            now_us = _now_us()
            waiting = any(c.acked < c.sent and c.sock is not None for c in self.senders)
            if now_us >= deadline:
                break
            if not waiting and now_us - max(self.last_rx_us, self.stop_us) >= \
                    DRAIN_IDLE_SECONDS * 1e6:
                break
            self.poll(0.05)
            if now_us >= progress_us:
                progress_us += int(PROGRESS_SECONDS * 1e6)
                self.report_progress()

    def finish(self, abort: bool = False) -> None:
        end_us = _now_us()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        tally = self.tally.snapshot()
        # msgpack-free JSON-able: histogram keys are ints, fine for pickling
        result = {
            "clients": len(self.clients), "ready": self.ready, "failures": self.failures,
            "disconnects": self.disconnects, "errors": self.errors,
            "error_samples": self.error_samples,
            "connect_hist": self.connect_hist,
            "connect_first_us": self.first_start_us, "connect_last_us": self.last_ready_us,
            "sent": {c.spec.index: c.sent for c in self.senders},
            "acked": {c.spec.index: c.acked for c in self.senders},
            "sent_at_stop": getattr(self, "at_stop", (0, 0))[0],
            "delivered_at_stop": getattr(self, "at_stop", (0, 0))[1],
            "tally": tally, "chat_opened": self.chat_opened,
            "cpu_seconds": usage.ru_utime + usage.ru_stime - self.cpu_at_go,
            "end_us": end_us, "aborted": abort,
        }
        self.phase = "closing"
        self.conn.send(("result", result))
        for c in self.clients:
            self.close(c)


def _worker_main(host, port, plan, specs, conn, cpus, tls) -> None:
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    worker = Worker(host, port, plan, specs, conn, tls)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


# -- the server, seen from /proc --------------------------------------------------------------

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


# -- statistics -------------------------------------------------------------------------------

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def merge_hist(hists) -> dict:
    out: dict = {}
    for hist in hists:
        for bucket, n in hist.items():
            out[int(bucket)] = out.get(int(bucket), 0) + n
    return out


def hist_summary(hist: dict) -> dict:
    """Percentiles and max in milliseconds (bucket floors: under 0.1 % low above 2 ms)."""
    total = sum(hist.values())
    result = {"count": total}
    if not total:
        result.update({f"p{p:g}": None for p in PERCENTILES})
        result["max"] = None
        return result
    items = sorted(hist.items())
    targets = [(p, total * p / 100.0) for p in PERCENTILES]
    seen = 0
    ti = 0
    for bucket, n in items:
        seen += n
        while ti < len(targets) and seen >= targets[ti][1]:
            result[f"p{targets[ti][0]:g}"] = bucket_floor(bucket) / 1000.0
            ti += 1
    result["max"] = bucket_floor(items[-1][0]) / 1000.0
    return result


def cdf_points(hist: dict, points: int = 200) -> list:
    """(latency ms, cumulative fraction) pairs for plotting."""
    total = sum(hist.values())
    out, seen = [], 0
    for bucket, n in sorted(hist.items()):
        seen += n
        out.append((bucket_floor(bucket) / 1000.0, seen / total))
    if len(out) > points:
        step = len(out) / points
        out = [out[int(i * step)] for i in range(points)] + [out[-1]]
    return out


# -- the run ----------------------------------------------------------------------------------

def tls_context(args) -> ssl.SSLContext | None:
    """With ``--tls``: trust ``--tls-ca``, or check nothing (loopback benchmarks only)."""
    if not args.tls:
        return None
    context = ssl.create_default_context(cafile=args.tls_ca)
    if not args.tls_ca:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def run(args) -> dict:
    plan = make_plan(args)
    procs = args.procs or default_procs(args.server_pid)
    procs = max(1, min(procs, len(plan.clients) or 1))
    ctx = multiprocessing.get_context("fork")
    rss_idle = server_rss_bytes(args.server_pid)
    cpus = set(args.cpus) if args.cpus else None
    tls = tls_context(args)
    workers, pipes = [], []
    for k in range(procs):
        parent_end, child_end = ctx.Pipe()
        specs = [s for s in plan.clients if s.index % procs == k]
        p = ctx.Process(target=_worker_main, daemon=True,
                        args=(args.host, args.port, plan, specs, child_end, cpus, tls))
        p.start()
        child_end.close()
        workers.append(p)
        pipes.append(parent_end)
    progress = Progress(args.quiet, len(plan.clients))
    try:
        return _conduct(args, plan, procs, workers, pipes, rss_idle, progress)
    finally:
        progress.done()
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


class Progress:
    """The live line on stderr."""

    def __init__(self, quiet: bool, clients: int):
        self.enabled = not quiet and (sys.stderr.isatty()
                                      or bool(os.environ.get("CHATCORE_BENCH_PROGRESS")))
        self.clients = clients
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False


def _collect(pipes, kinds, state, on_progress, timeout: float) -> None:
    """Read worker messages until each pipe has sent one of ``kinds``; state[k] keeps the last."""
    deadline = time.monotonic() + timeout
    waiting = {k for k in range(len(pipes))}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(waiting)} load generator process(es) did not answer")
        ready = multiprocessing.connection.wait([pipes[k] for k in waiting], min(left, 0.25))
        for pipe in ready:
            k = pipes.index(pipe)
            try:
                msg = pipe.recv()
            except EOFError:
                raise RuntimeError(f"load generator process {k} died") from None
            state[k] = msg
            if msg[0] in kinds:
                waiting.discard(k)
        on_progress()


def _conduct(args, plan, procs, workers, pipes, rss_idle, progress) -> dict:
    n = len(plan.clients)
    state = [("connecting", 0, 0)] * procs
    t_setup = time.monotonic()

    def show_connect():
        ready = sum(s[1] for s in state if s[0] in ("connecting", "ready"))
        bad = sum(s[2] for s in state if s[0] in ("connecting", "ready"))
        progress.show(f"{plan.scenario}: connecting {ready}/{n}, failed {bad}, "
                      f"{time.monotonic() - t_setup:.1f}s")

    _collect(pipes, ("ready",), state, show_connect, args.setup_timeout)
    rss_connected = server_rss_bytes(args.server_pid)
    cpu0 = server_cpu_seconds(args.server_pid)
    go_us = _now_us() + 50_000
    stop_us = go_us + int(plan.duration * 1e6)
    for pipe in pipes:
        pipe.send(("go", go_us, stop_us))
    rss_peak = rss_connected or 0
    rss_samples = []
    last = [(0, 0, 0)] * procs
    results: list = [None] * procs
    hold_until = time.monotonic() + plan.duration + max(5.0, plan.duration) + 30.0
    prev = (time.monotonic(), 0, 0)

    def on_message():
        nonlocal rss_peak, prev
        rss = server_rss_bytes(args.server_pid)
        if rss:
            rss_peak = max(rss_peak, rss)
            if _now_us() < stop_us:
                rss_samples.append(rss)
        for k, msg in enumerate(state):
            if msg[0] == "progress":
                last[k] = msg[1:]
            elif msg[0] == "result":
                results[k] = msg[1]
        sent = sum(x[0] for x in last)
        delivered = sum(x[1] for x in last)
        errors = sum(x[2] for x in last)
        now = time.monotonic()
        if now - prev[0] >= PROGRESS_SECONDS:
            dt = now - prev[0]
            phase = "run" if _now_us() < stop_us else "drain"
            progress.show(f"{plan.scenario} {phase} {max(0.0, (_now_us() - go_us) / 1e6):5.1f}s: "
                          f"sent {(sent - prev[1]) / dt:,.0f}/s, delivered "
                          f"{(delivered - prev[2]) / dt:,.0f}/s, errors {errors}")
            prev = (now, sent, delivered)

    _collect(pipes, ("result",), state, on_message, hold_until - time.monotonic())
    cpu1 = server_cpu_seconds(args.server_pid)
    for k, msg in enumerate(state):
        results[k] = msg[1]
    return summarize(args, plan, procs, results, go_us, stop_us, cpu0, cpu1, rss_idle,
                     rss_connected, rss_peak, rss_samples)


def summarize(args, plan, procs, results, go_us, stop_us, cpu0, cpu1, rss_idle, rss_connected,
              rss_peak, rss_samples) -> dict:
    n = len(plan.clients)
    duration = (stop_us - go_us) / 1e6
    end_us = max(r["end_us"] for r in results)
    acked: dict = {}
    sent: dict = {}
    for r in results:
        acked.update(r["acked"])
        sent.update(r["sent"])
    expected = sum(acked[s] * plan.recipients[s] for s in acked)
    tallies = [r["tally"] for r in results]
    delivered = sum(t["messages"] for t in tallies)
    counts: dict = {}
    for t in tallies:
        for k, v in t["counts"].items():
            counts[int(k)] = counts.get(int(k), 0) + v
    check = {key: sum(t[key] for t in tallies)
             for key in ("duplicates", "reordered", "gaps", "malformed")}
    check["lost"] = max(0, expected - delivered)
    check["unexpected"] = max(0, delivered - expected)
    check["unacked"] = sum(sent.values()) - sum(acked.values())
    failures = sum(r["failures"] for r in results)
    disconnects = sum(r["disconnects"] for r in results)
    errors = sum(r["errors"] for r in results)
    samples = [s for r in results for s in r["error_samples"]][:ERROR_SAMPLES]
    connect_hist = merge_hist(r["connect_hist"] for r in results)
    connect_first = min(r["connect_first_us"] for r in results)
    connect_last = max(r["connect_last_us"] for r in results)
    sent_in_window = sum(r["sent_at_stop"] for r in results)
    delivered_in_window = sum(r["delivered_at_stop"] for r in results)
    gen_cpu = [r["cpu_seconds"] for r in results]
    wall = (end_us - go_us) / 1e6
    gen_busiest = max(gen_cpu) / max(wall, 1e-9) if gen_cpu else 0.0
    server = None
    if args.server_pid:
        server_cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        per_conn = None
        hold_rss = (sorted(rss_samples)[len(rss_samples) // 2] if rss_samples
                    else rss_connected)
        if rss_idle and hold_rss and n:
            per_conn = (hold_rss - rss_idle) / n
        server = {
            "pid": args.server_pid,
            "cpu_seconds": server_cpu,
            "cpu_utilization": server_cpu / wall if server_cpu is not None else None,
            "ns_per_delivery": (server_cpu * 1e9 / delivered
                                if server_cpu is not None and delivered else None),
            "rss_idle_bytes": rss_idle, "rss_connected_bytes": rss_connected,
            "rss_hold_bytes": hold_rss, "rss_peak_bytes": rss_peak,
            "rss_bytes_per_connection": per_conn,
        }
    problems = []
    if failures:
        problems.append(f"{failures} connection(s) failed")
    if disconnects:
        problems.append(f"{disconnects} connection(s) dropped by the server")
    if errors - failures - disconnects > 0:
        problems.append(f"{errors - failures - disconnects} error(s) from the server")
    for key, value in check.items():
        if value:
            problems.append(f"{value} {key}")
    return {
        "scenario": plan.scenario,
        "config": {"clients": n, "rooms": args.rooms if plan.scenario in ("fanout", "rooms",
                                                                        "latency") else 0,
                   "senders": len(plan.recipients), "rate": plan.rate, "size": plan.size,
                   "duration": duration, "window": plan.window, "procs": procs,
                   "host": args.host, "port": args.port, "tls": bool(args.tls),
                   "verifier": verify.IMPLEMENTATION},
        "sent": sum(sent.values()), "acked": sum(acked.values()),
        "delivered": delivered, "expected": expected,
        "sent_per_second": sent_in_window / duration if duration else 0.0,
        "delivered_per_second": delivered_in_window / duration if duration else 0.0,
        "latency_ms": hist_summary(merge_hist(t["hist"] for t in tallies)),
        "latency_cdf": cdf_points(merge_hist(t["hist"] for t in tallies)),
        "connect": {"clients": n, "ready": sum(r["ready"] for r in results),
                    "failures": failures,
                    "seconds": max(0, connect_last - connect_first) / 1e6,
                    "per_client_ms": hist_summary(connect_hist)},
        "frames": {f"0x{k:02x}": v for k, v in sorted(counts.items())},
        "check": check, "errors": errors, "disconnects": disconnects, "error_samples": samples,
        "generator": {"procs": procs, "cpu_seconds": sum(gen_cpu), "wall_seconds": wall,
                      "busiest_process_utilization": gen_busiest,
                      "saturated": gen_busiest >= SATURATED_CPU},
        "server": server,
        "ok": not problems, "problems": problems,
    }


# -- output -----------------------------------------------------------------------------------

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
    ]
    if r["sent"] or r["scenario"] != "connect":
        lines += [
            f"  sent            {r['sent_per_second']:>14,.0f} msgs/s   ({r['sent']:,} total)",
            f"  delivered       {r['delivered_per_second']:>14,.0f} msgs/s   "
            f"({r['delivered']:,} total, {r['expected']:,} expected)",
            f"  latency ms      p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  "
            f"p99 {_ms(lat['p99'])}  p99.9 {_ms(lat['p99.9'])}  max {_ms(lat['max'])}",
        ]
    lines.append(f"  generator       {gen['cpu_seconds']:.2f} CPU s over {gen['wall_seconds']:.2f}s"
                 f" on {gen['procs']} proc(s), busiest {gen['busiest_process_utilization']:.0%}"
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
    lines.append(f"  errors          {r['errors']}" +
                 "".join(f"\n    {s}" for s in r["error_samples"]))
    lines.append("  verification    " + ("OK" if r["ok"] else
                                        "FAILED: " + "; ".join(r["problems"])))
    return "\n".join(lines)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


CSV_FIELDS = ("scenario", "clients", "senders", "rooms", "size", "rate", "duration",
              "sent_per_second", "delivered_per_second", "p50_ms", "p90_ms", "p99_ms",
              "p99.9_ms", "max_ms", "connect_seconds", "connect_failures", "errors",
              "generator_cpu_seconds", "generator_saturated", "server_cpu_seconds",
              "server_ns_per_delivery", "server_rss_bytes_per_connection", "ok")


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
            "connect_failures": r["connect"]["failures"], "errors": r["errors"],
            "generator_cpu_seconds": round(r["generator"]["cpu_seconds"], 3),
            "generator_saturated": r["generator"]["saturated"],
            "server_cpu_seconds": srv.get("cpu_seconds"),
            "server_ns_per_delivery": (None if srv.get("ns_per_delivery") is None
                                       else round(srv["ns_per_delivery"], 1)),
            "server_rss_bytes_per_connection": (
                None if srv.get("rss_bytes_per_connection") is None
                else round(srv["rss_bytes_per_connection"])),
            "ok": r["ok"]}


def _emit(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)


# -- the command ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcore-bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="fanout", choices=sorted(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=7878)
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS (point -p at the server's tls_port)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="with --tls, verify the server against this CA (default: no check, "
                             "for loopback benchmarks)")
    parser.add_argument("-c", "--clients", type=int, help="clients (connections)")
    parser.add_argument("--rooms", type=int, help="rooms the clients are spread over")
    parser.add_argument("--senders", type=int, help="clients that send")
    parser.add_argument("--rate", type=float,
                        help="aggregate messages sent per second; 0 = as fast as the server "
                             "acknowledges them, WINDOW in flight per sender")
    parser.add_argument("--window", type=int, default=WINDOW_MESSAGES,
                        help="in-flight messages per sender when --rate is 0 (default %(default)s)")
    parser.add_argument("-d", "--size", type=int,
                        help=f"message text bytes (at least {TEXT_HEADER_BYTES}: the stamp)")
    parser.add_argument("--duration", type=float, help="seconds of traffic (connect: holding)")
    parser.add_argument("--procs", type=int, default=0,
                        help="generator processes (default: one per core the server is not on)")
    parser.add_argument("--cpus", type=int, nargs="+", help="pin the generator to these cores")
    parser.add_argument("--server-pid", type=int,
                        help="the server's pid, for its CPU and RSS from /proc")
    parser.add_argument("--setup-timeout", type=float, default=120.0,
                        help="seconds allowed to connect and join everyone")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write the result as JSON (to stdout without PATH)")
    parser.add_argument("--csv", nargs="?", const="-", metavar="PATH",
                        help="write the result as one CSV row with header")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line; one summary line")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    for key, value in SCENARIOS[args.scenario].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size < TEXT_HEADER_BYTES:
        args.size = TEXT_HEADER_BYTES
    if args.scenario in ("fanout", "latency") and args.rooms != 1:
        pass                              # allowed: several rooms of the same shape
    if args.scenario in ("fanout", "rooms", "latency"):
        args.rooms = max(1, min(args.rooms, args.clients))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _raise_fd_limit()
    try:
        result = run(args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"chatcore-bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        _emit(args.json, json.dumps(result, indent=2) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_FIELDS)
        writer.writeheader()
        writer.writerow(csv_row(result))
        _emit(args.csv, out.getvalue())
    if args.quiet:
        if args.json != "-" and args.csv != "-":
            lat = result["latency_ms"]
            print(f"{result['scenario']}: {result['delivered_per_second']:,.0f} delivered/s, "
                  f"p99 {_ms(lat['p99'])} ms, {'OK' if result['ok'] else 'FAILED'}")
    elif args.json != "-" and args.csv != "-":
        print(human_table(result))
    if not result["ok"]:
        print(f"chatcore-bench: VERIFICATION FAILED ({result['scenario']}): "
              + "; ".join(result["problems"]), file=sys.stderr)
        return 1
    if result["generator"]["saturated"]:
        print("chatcore-bench: note: the generator was the saturated side "
              f"(busiest process {result['generator']['busiest_process_utilization']:.0%} "
              "CPU); the server may take more", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
