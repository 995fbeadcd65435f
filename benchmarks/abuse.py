"""One attacker against a real chatcore server while a bystander chats: the bystander's gaps.

    python -m benchmarks.abuse                       # every attack, fair turns on and off
    python -m benchmarks.abuse --attacks room-burst --repetitions 5
    python -m benchmarks.abuse --attacks held-input  # server memory per parked partial frame
    python -m benchmarks.abuse --attacks tls-held-input tls-handshakes --repetitions 1

Attacks (issue 8): ``room-burst`` 3 000 room messages in one write into a room of 1 001;
``user-lists`` 200 ListUsers in one write with 1 000 users online; ``flood`` 100 000 room
messages from one connection (flood control on); ``held-input`` 1 000 connections each
parking a 64 KiB partial frame (server RSS growth per connection); ``tls-held-input``
1 000 TLS clients each parking an unfinished 16 KiB record; ``tls-handshakes`` 1 000 TLS
handshakes stuck after half a ClientHello (server RSS per one).

Each run starts a fresh server; ``on`` and ``off`` (``--max-turn-work-units 1000000000``)
alternate within one run. The bystander (from 127.0.0.2, exempt), in a process of its own,
round-trips a message through its own room and reports its worst, 99th-percentile and median
gap. With two or more CPUs the server is pinned to the first and this process (attacker,
crowd, bystander) to the others (``--no-pin`` turns that off).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ErrorCode
from chatcore.protocol import PROTOCOL_VERSION, encode_event

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXEMPT = ["--limit-exempt", "127.0.0.0/8"]
BYSTANDER_ADDRESS = "127.0.0.2"        # exempt from flood control where the attacker is not
MODES = {"on": [], "off": ["--max-turn-work-units", "1000000000"]}


def start_server(flags: list[str], workdir: pathlib.Path, env: dict,
                 cpus: set[int] | None = None) -> tuple:
    """A fresh server process (pinned to ``cpus`` if given); returns (process, port)."""
    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "server.py", "--port", "0", "--port-file",
                             str(port_file), "--log-level", "WARNING", *flags],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    deadline = time.monotonic() + 15
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class ServerClock:
    """The server's CPU time and its time waiting for a CPU (``/proc/PID/schedstat``) since
    it was made: a gap the server spent waiting on the run queue was the machine's, not the
    server's."""

    def __init__(self, pid: int):
        self._path = f"/proc/{pid}/schedstat"
        self._start = self._read()

    def _read(self) -> tuple[int, int]:
        try:
            with open(self._path) as f:
                on_cpu, waiting, _ = f.read().split()
            return int(on_cpu), int(waiting)
        except (OSError, ValueError):
            return 0, 0

    def since(self) -> dict:
        on_cpu, waiting = self._read()
        return {"server_cpu_ms": (on_cpu - self._start[0]) / 1e6,
                "server_runq_wait_ms": (waiting - self._start[1]) / 1e6}


def _probe(port: int, source: str, ready, stopping, results) -> None:
    """The bystander, in its own process: round-trips a message through its own room until
    ``stopping`` is set, then sends its gaps (seconds) down ``results``."""
    client = ChatClient("127.0.0.1", port, timeout=30)
    client.sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                           source_address=(source, 0))
    # As ChatClient's own socket does: without it, a reply that waits for a delayed ACK
    # (Nagle) shows up as a 40 ms gap the server did not cause.
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.hello("bystander")
    client.join("calm")
    ready.set()
    gaps = []
    while not stopping.is_set():
        started = time.monotonic()
        ack = client.send_room("calm", "still here")
        client.wait_for(lambda e: type(e) is ev.RoomMessage and e.msg_id == ack.msg_id)
        gaps.append(time.monotonic() - started)
    client.close()
    results.send(gaps)


class Bystander:
    """A user chatting with itself throughout an attack; reports its worst and median gap.

    It runs in a process of its own: as a thread beside the attacker's client, it waited for
    the GIL while the attacker decoded thousands of replies in Python (up to the 5 ms switch
    interval per wake-up), which the server was then blamed for.
    """

    def __init__(self, port: int, source: str = BYSTANDER_ADDRESS):
        context = multiprocessing.get_context("spawn")
        ready, self._stopping = context.Event(), context.Event()
        self._results, child_end = context.Pipe(duplex=False)
        self._process = context.Process(target=_probe, daemon=True,
                                        args=(port, source, ready, self._stopping, child_end))
        self._process.start()
        if not ready.wait(60):
            self._process.kill()
            raise RuntimeError("the bystander did not get in")

    def stop(self) -> dict:
        self._stopping.set()
        gaps = self._results.recv() if self._results.poll(60) else []
        self._process.join(30)
        gaps = sorted(gaps) or [float("nan")]
        return {"worst_ms": gaps[-1] * 1000,
                "p99_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1000,
                "median_ms": statistics.median(gaps) * 1000, "round_trips": len(gaps)}


def crowd(port: int, count: int, room: str = "") -> list[socket.socket]:
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        data = encode_event(ev.Hello(PROTOCOL_VERSION, f"m{i}", "crowd", request_id=1))
        if room:
            data += encode_event(ev.JoinRoom(room, request_id=2))
        sock.sendall(data)
        socks.append(sock)
    return socks


def attack_room_burst(port: int, pid: int) -> dict:
    attacker = ChatClient("127.0.0.1", port, timeout=60)
    attacker.connect("attacker")
    attacker.join("big")
    socks = crowd(port, 1000, "big")
    for _ in range(1000):
        attacker.wait_for(ev.UserJoined)
    burst = b"".join(encode_event(ev.SendRoom("big", f"spam {i}", request_id=i + 1))
                     for i in range(3000))
    bystander = Bystander(port)
    clock = ServerClock(pid)
    started = time.monotonic()
    attacker.send_raw(burst)
    attacker.wait_for(lambda e: type(e) is ev.Ack and e.request_id == 3000)
    result = {"attack_s": time.monotonic() - started, **bystander.stop(), **clock.since()}
    attacker.close()
    for sock in socks:
        sock.close()
    return result


def attack_user_lists(port: int, pid: int) -> dict:
    attacker = ChatClient("127.0.0.1", port, timeout=60)
    attacker.connect("attacker")
    socks = crowd(port, 1000)
    while attacker.list_users().total < 1001:
        pass
    burst = b"".join(encode_event(ev.ListUsers("", request_id=i + 1)) for i in range(200))
    bystander = Bystander(port)
    clock = ServerClock(pid)
    started = time.monotonic()
    attacker.send_raw(burst)
    attacker.wait_for(lambda e: type(e) is ev.UserList and e.request_id == 200)
    result = {"attack_s": time.monotonic() - started, **bystander.stop(), **clock.since()}
    attacker.close()
    for sock in socks:
        sock.close()
    return result


def attack_flood(port: int, pid: int) -> dict:
    flooder = ChatClient("127.0.0.1", port, timeout=60)
    flooder.connect("flooder")
    flooder.join("lobby")
    flood = b"".join(encode_event(ev.SendRoom("lobby", f"flood {i}", request_id=i + 10))
                     for i in range(100_000))
    bystander = Bystander(port)

    def write() -> None:
        try:
            flooder.sock.sendall(flood)
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    writer.start()
    acks = 0
    try:
        while True:
            event = flooder.next_event(timeout=60)
            acks += type(event) is ev.Ack
    except ConnectionClosed:
        pass
    result = {"attack_s": time.monotonic() - started, "acks": acks, **bystander.stop()}
    flooder.close()
    return result


def attack_held_input(port: int, pid: int, count: int = 1000) -> dict:
    before = rss_bytes(pid)
    socks = []
    header = struct.pack(">IBI", 65536, 0x22, 7)
    payload = header + b"\0" * (65536 - len(header))       # 4 bytes short of the frame
    dropped = 0
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, f"p{i}", "park", request_id=1)))
        client = ChatClient("127.0.0.1", port, auto_pong=False)    # a Pong would split it
        client.sock = sock
        client.wait_for(ev.Welcome)
        sock.sendall(payload)
        socks.append((sock, client))
    ping = ChatClient("127.0.0.1", port, timeout=60)
    ping.connect("probe")
    ping.ping()                             # every parked byte has been read by now
    after = rss_bytes(pid)
    for sock, client in socks:
        try:
            client.drain()
        except ConnectionClosed as exc:
            dropped += exc.error is not None and exc.error.code == ErrorCode.INPUT_BUDGET
        sock.close()
    ping.close()
    return {"connections": count, "dropped": dropped,
            "rss_growth_mib": (after - before) / 2**20,
            "per_connection_kib": (after - before) / count / 1024}


class TlsPipe:
    """A TLS client over a plain socket and memory BIOs, so it can send half a record."""

    def __init__(self, port: int, context: ssl.SSLContext):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    self.sock.sendall(self.outgoing.read())
                self.incoming.write(self.sock.recv(65536))
        self.sock.sendall(self.outgoing.read())

    def record(self, plaintext: bytes) -> bytes:
        self.tls.write(plaintext)
        return self.outgoing.read()

    def wait_for_plaintext(self) -> None:
        """Until the server sent something (its Welcome) over the session."""
        while True:
            self.incoming.write(self.sock.recv(65536))
            try:
                if self.tls.read(65536):
                    return
            except ssl.SSLWantReadError:
                pass


def attack_tls_held_input(port: int, pid: int, count: int = 1000) -> dict:
    """``count`` TLS clients, greeted, then each parks an unfinished 16 KiB record (all of it
    but 5 bytes): the server's RSS per idle TLS connection and per parked record."""
    context = ssl.create_default_context(cafile=TLS_FILES["ca"])
    before = rss_bytes(pid)
    pipes = []
    for i in range(count):
        pipe = TlsPipe(port, context)
        pipe.sock.sendall(pipe.record(encode_event(
            ev.Hello(PROTOCOL_VERSION, f"t{i}", "park", request_id=1))))
        pipe.wait_for_plaintext()
        pipes.append(pipe)
    idle = rss_bytes(pid)
    frame = encode_event(ev.SendRoom("nowhere", "x" * 8000, request_id=7))
    for pipe in pipes:
        record = pipe.record(frame + frame[:16384 - len(frame)])   # one full-size record
        pipe.sock.sendall(record[:-5])
    probe = ChatClient("127.0.0.1", PLAIN_PORT[0], timeout=60)
    probe.connect("probe")
    probe.ping()                                          # every parked byte has been read
    after = rss_bytes(pid)
    dropped = 0
    for pipe in pipes:                                    # dropped: the server closed it
        pipe.sock.settimeout(0)
        try:
            while pipe.sock.recv(65536):
                pass
            dropped += 1
        except BlockingIOError:
            pass
        except ConnectionError:
            dropped += 1
        pipe.sock.close()
    probe.close()
    return {"connections": count, "dropped": dropped,
            "idle_tls_kib": (idle - before) / count / 1024,
            "parked_record_kib": (after - idle) / count / 1024,
            "rss_growth_mib": (after - before) / 2**20}


def attack_tls_handshakes(port: int, pid: int, count: int = 1000) -> dict:
    """``count`` TLS handshakes stuck after half a ClientHello: the server's RSS per one."""
    context = ssl.create_default_context(cafile=TLS_FILES["ca"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1").do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    before = rss_bytes(pid)
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(hello[:len(hello) // 2])
        socks.append(sock)
    probe = ChatClient("127.0.0.1", PLAIN_PORT[0], timeout=60)
    probe.connect("probe")
    probe.ping()
    after = rss_bytes(pid)
    for sock in socks:
        sock.close()
    probe.close()
    return {"handshakes": count, "per_handshake_kib": (after - before) / count / 1024,
            "rss_growth_mib": (after - before) / 2**20}


ATTACKS = {"room-burst": attack_room_burst, "user-lists": attack_user_lists,
           "flood": attack_flood, "held-input": attack_held_input,
           "tls-held-input": attack_tls_held_input, "tls-handshakes": attack_tls_handshakes}
TLS_ATTACKS = ("tls-held-input", "tls-handshakes")
TLS_FILES: dict = {}                    # ca, cert, key: written once per run
PLAIN_PORT = [0]                        # the TLS attacks' server's plain port, for the probe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--fallback", action="store_true", help="CHATCORE_NO_EXTENSIONS=1")
    parser.add_argument("--turn-work-units", type=int,
                        help="fair-turns=on: this --max-turn-work-units instead of the default")
    parser.add_argument("--held-input-budget", type=int,
                        help="held-input: --max-held-input-bytes for the server")
    parser.add_argument("--server-flags", default="",
                        help="more server flags for every run, e.g. \"--max-turn-writes 128\"")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction,
                        default=len(os.sched_getaffinity(0)) >= 2,
                        help="server on the first CPU, this process and its clients on the "
                             "others, so the attacker's and bystander's Python does not take "
                             "the server's core (default: on with 2 or more CPUs)")
    args = parser.parse_args(argv)
    server_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        server_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))
    env = dict(os.environ)
    if args.fallback:
        env["CHATCORE_NO_EXTENSIONS"] = "1"
    build = "fallback" if args.fallback else "compiled"
    with tempfile.TemporaryDirectory(prefix="chatcore-abuse-") as tmp:
        for attack in args.attacks:
            modes = ["on"] if attack in ("flood", "held-input", *TLS_ATTACKS) else args.modes
            for repetition in range(args.repetitions):
                for mode in modes:
                    flags = list(MODES[mode])
                    if mode == "on" and args.turn_work_units:
                        flags += ["--max-turn-work-units", str(args.turn_work_units)]
                    if attack == "flood":
                        flags += ["--limit-exempt", BYSTANDER_ADDRESS,
                                  "--max-flood-lag-seconds", "5"]
                    else:
                        flags += EXEMPT
                    if attack == "user-lists":      # 8 MB of replies, decoded in Python here
                        flags += ["--max-output-bytes", str(32 * 1024 * 1024)]
                    tls_port = None
                    if attack in TLS_ATTACKS:
                        if not TLS_FILES:
                            from .tls_certs import write_certificates
                            TLS_FILES.update(write_certificates(os.path.join(tmp, "tls")))
                        tls_port = free_port()
                        flags += ["--tls-port", str(tls_port), "--tls-cert", TLS_FILES["cert"],
                                  "--tls-key", TLS_FILES["key"]]
                    if attack in ("held-input", *TLS_ATTACKS):
                        # Parked clients answer no pings: not dropped as idle meanwhile.
                        flags += ["--idle-timeout-seconds", "600"]
                    if attack in ("held-input", *TLS_ATTACKS) and args.held_input_budget:
                        flags += ["--max-held-input-bytes", str(args.held_input_budget)]
                    flags += args.server_flags.split()
                    proc, port = start_server(flags, pathlib.Path(tmp), env, server_cpus)
                    try:
                        PLAIN_PORT[0] = port
                        result = ATTACKS[attack](tls_port or port, proc.pid)
                    finally:
                        stop_server(proc)
                    shown = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in result.items())
                    load = os.getloadavg()[0]
                    print(f"{attack} {build} fair-turns={mode} #{repetition + 1}: {shown} "
                          f"load={load:.1f}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
