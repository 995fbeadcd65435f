"""One load-generator process: its clients in one epoll loop, speaking the native protocol.

The parent (``benchmarks.loadgen``) forks one ``Worker`` per generator core and talks to it over
a pipe: ``ready`` after setup, then ``go``/``stop`` times, ``progress`` while running and one
``result`` (plain data) at the end. Every received byte goes through ``verify.Stream``.

Receiving is ``verify.Receiver``'s (compiled): one call per epoll batch reads every ready plain
socket into one preallocated buffer and verifies its frames; Python hears only of sockets that
brought something to act on (Acks, Welcome, Ping, errors). TLS sockets are read here in Python
(``readable``), one record at a time, then fed to the same stream.
"""
from __future__ import annotations

import errno
import os
import resource
import select
import socket
import ssl
import struct
import time

from chatcore import events as ev
from chatcore.codec import encode_frame
from chatcore.protocol import PROTOCOL_VERSION, encode_event

from . import verify
from .scenarios import ClientSpec, Plan
from .verify import bucket_of, encode_sends

RECV_BYTES = 256 * 1024               # a TLS socket's reads (verify.Receiver has its own buffer)
WINDOW_MESSAGES = 64                  # in-flight messages per sender when --rate is 0
PROGRESS_SECONDS = 0.5
IDLE_POLL_US = 50_000                 # without --rate, Acks drive the sends: wake for progress
DRAIN_IDLE_SECONDS = 0.3              # after the last Ack, quiet this long = nothing in flight
ERROR_SAMPLES = 5

_U16 = struct.Struct(">H")
_SEND_ROOM, _SEND_DIRECT = 0x22, 0x12
_PING, _PONG, _OK, _WELCOME, _ERROR, _CHAT_OPENED = 0x02, 0x03, 0x80, 0x81, 0x83, 0x91
_HELLO_ID, _JOIN_ID = 1, 2
# A non-blocking socket that cannot go on yet (TLS adds its own two).
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Client:
    __slots__ = ("spec", "sock", "fd", "stream", "state", "started_us", "hello_us", "out",
                 "writing", "prefix", "seq", "inflight", "sent", "acked", "msg_type")

    stream_class = verify.Stream

    def __init__(self, spec: ClientSpec, tally):
        self.spec = spec
        self.sock = None
        self.fd = -1
        self.stream = self.stream_class(tally)
        self.state = "new"
        self.started_us = 0
        self.hello_us = 0                # when Hello went out (Hello -> Welcome: the name claim)
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


def _runnable_seconds() -> float | None:
    """This process's time on a CPU plus waiting for one (Linux schedstat), or None: near the
    wall time, it always wanted to run, however busy the machine kept it from running."""
    try:
        with open("/proc/self/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return (int(on_cpu) + int(waiting)) / 1e9


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Worker:
    """One process's clients in one epoll loop; talks to the parent through ``conn``."""

    client_class = Client
    tally_class = verify.Tally

    def __init__(self, addrs: list, plan: Plan, specs, conn, tls: ssl.SSLContext | None = None):
        self.addrs = [tuple(a) for a in addrs]       # (host, port) per server; spec.server indexes
        self.tls = tls
        self.plan = plan
        self.conn = conn
        self.tally = self.tally_class(plan.size)
        self.clients = [self.client_class(spec, self.tally) for spec in specs]
        self.senders = [c for c in self.clients if c.spec.sender]
        self.by_fd: dict = {}
        self.ep = select.epoll()
        self.ep.register(conn.fileno(), select.EPOLLIN)
        self.receiver = verify.Receiver(self.ep)
        self.buf = bytearray(RECV_BYTES)
        self.view = memoryview(self.buf)
        self.errors = 0
        self.error_samples: list = []
        self.disconnects = 0
        self.failures = 0
        self.ready = 0
        self.connect_hist: dict = {}
        self.claim_hist: dict = {}                   # Hello sent -> Welcome received, us
        self.first_start_us = self.last_ready_us = 0
        self.phase = "setup"
        self.go_us = self.stop_us = 0
        self.last_rx_us = 0
        self.parent_msg = None
        self.chat_opened = 0
        self.cpu_at_go = 0.0
        self.runnable_at_go = None
        self.pace_turn = 0
        self.pace_late_hist: dict = {}               # --rate: send time - due time, us

    # -- plumbing -----------------------------------------------------------------------------

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(what)

    def close(self, c: Client) -> None:
        if c.sock is not None:
            self.by_fd.pop(c.fd, None)
            self.receiver.remove(c.fd)
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
        err = sock.connect_ex(self.addrs[c.spec.server])
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
            c.sock = self.tls.wrap_socket(c.sock, server_hostname=self.addrs[c.spec.server][0],
                                          do_handshake_on_connect=False)
            c.state = "tls"
            self.tls_handshake(c)
            return
        self.receiver.add(c.fd, c.stream)
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
        c.hello_us = _now_us()
        self.write(c, hello)

    def welcomed(self, c: Client, now_us: int) -> None:
        """The server accepted the name (on a cluster node: after claiming it in Redis)."""
        b = bucket_of(now_us - c.hello_us)
        self.claim_hist[b] = self.claim_hist.get(b, 0) + 1

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
                if c.state == "handshake":
                    self.welcomed(c, now_us)
                    if c.spec.room is None:
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

    def received(self, c: Client, frames, problem, now_us: int) -> None:
        """What the receiver read from ``c``: frames to handle, and Acks counted by its stream.
        Frames read before the peer closed (or a read failed) are handled first."""
        if frames and problem is not None and not isinstance(problem, ValueError):
            self.handle(c, frames, now_us)
        if problem is not None:
            if isinstance(problem, ValueError):
                self.error(f"{c.spec.name}: broken stream: {problem}")
                self.lost_connection(c)
            else:
                self.lost_connection(c, None if isinstance(problem, EOFError) else problem)
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

    def readable(self, c: Client) -> None:
        """A TLS socket (the receiver reads the plain ones)."""
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
            self.received(c, None, exc, now_us)
            return
        self.received(c, frames, None, now_us)

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
        data = encode_sends(c.msg_type, c.prefix, c.spec.index, c.seq, count, now_us,
                            self.plan.size)
        c.seq += count
        c.sent += count
        c.inflight += count
        self.write(c, data)

    def pace(self, now_us: int) -> int:
        """--rate: send what is due since go, round-robin over this process's senders; returns
        when the next message is due. Message ``k`` of this process is due at ``go + k /
        rate``, so sends are evenly spaced when the loop wakes on time; how late each went
        out is kept in ``pace_late_hist`` (its stamp is the time it really went)."""
        rate = self.plan.rate * len(self.senders) / max(1, len(self.plan.recipients))
        if not rate:                     # no senders in this process
            return now_us + IDLE_POLL_US
        paced = sum(c.sent for c in self.senders)
        due = int((now_us - self.go_us) * rate / 1e6) + 1 - paced
        live = [c for c in self.senders if c.sock is not None]
        if due > 0 and live:
            hist = self.pace_late_hist
            for k in range(paced, paced + due):
                b = bucket_of(now_us - self.go_us - int(k * 1e6 / rate))
                hist[b] = hist.get(b, 0) + 1
            each, extra = divmod(due, len(live))
            # rotate who gets the extra so no sender runs ahead
            start = self.pace_turn % len(live)
            for k in range(len(live)):
                c = live[(start + k) % len(live)]
                self.send_messages(c, each + (1 if k < extra else 0), now_us)
            self.pace_turn += extra
            paced += due
        return self.go_us + int(paced * 1e6 / rate)

    # -- the loop -----------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for fd, mask, frames, problem, now_us in self.receiver.poll(timeout):
            c = self.by_fd.get(fd)
            if c is None:                # the parent's pipe (or a client closed meanwhile)
                if frames is None and fd == self.conn.fileno() and self.conn.poll():
                    self.parent_msg = self.conn.recv()
                continue
            if frames is not None:       # read and verified by the receiver
                self.received(c, frames, problem, now_us)
            elif c.state == "connecting":
                self.connected(c)
                continue
            elif c.state == "tls":
                self.tls_handshake(c)
                continue
            elif mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
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
        self.runnable_at_go = _runnable_seconds()
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
            while pending and in_progress < self.plan.connect_window:
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
        next_us = self.pace(now_us) if rate else now_us + IDLE_POLL_US
        while now_us < self.stop_us:
            # Wake for the next paced send (the compiled receiver's wait is to the
            # microsecond; a wait in whole milliseconds would send in bursts).
            self.poll(max(0, min(next_us, self.stop_us, progress_us) - now_us) / 1e6)
            now_us = _now_us()
            if rate and now_us < self.stop_us:
                next_us = self.pace(now_us)
            elif not rate:
                next_us = now_us + IDLE_POLL_US
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
            last_rx_us = max(self.last_rx_us, self.receiver.last_rx_us, self.stop_us)
            if not waiting and now_us - last_rx_us >= DRAIN_IDLE_SECONDS * 1e6:
                break
            self.poll(0.05)
            if now_us >= progress_us:
                progress_us += int(PROGRESS_SECONDS * 1e6)
                self.report_progress()

    def finish(self, abort: bool = False) -> None:
        end_us = _now_us()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        runnable = _runnable_seconds()
        tally = self.tally.snapshot()
        # msgpack-free JSON-able: histogram keys are ints, fine for pickling
        result = {
            "clients": len(self.clients), "ready": self.ready, "failures": self.failures,
            "disconnects": self.disconnects, "errors": self.errors,
            "error_samples": self.error_samples,
            "connect_hist": self.connect_hist, "claim_hist": self.claim_hist,
            "connect_first_us": self.first_start_us, "connect_last_us": self.last_ready_us,
            "sent": {c.spec.index: c.sent for c in self.senders},
            "acked": {c.spec.index: c.acked for c in self.senders},
            "sent_at_stop": getattr(self, "at_stop", (0, 0))[0],
            "delivered_at_stop": getattr(self, "at_stop", (0, 0))[1],
            "tally": tally, "chat_opened": self.chat_opened,
            "pace_late_hist": self.pace_late_hist,
            "cpu_seconds": usage.ru_utime + usage.ru_stime - self.cpu_at_go,
            "runnable_seconds": (None if runnable is None or self.runnable_at_go is None
                                 else runnable - self.runnable_at_go),
            "end_us": end_us, "aborted": abort,
        }
        self.phase = "closing"
        self.conn.send(("result", result))
        for c in self.clients:
            self.close(c)


def _tight_timer_slack() -> None:
    """Let this process's timed waits end on time: Linux lets them run up to 50 us late by
    default (the timer slack) to merge wake-ups; a paced sender wants its own. Best effort."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_TIMERSLACK = 29


def _worker_main(worker_class, addrs, plan, specs, conn, cpus, tls) -> None:
    _tight_timer_slack()
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    worker = worker_class(addrs, plan, specs, conn, tls)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
