"""What the cluster costs a user: name-claim latency (Hello -> Welcome), direct-message
latency (sent -> received), whois and user-list latency (request -> reply) and resume
latency (Resume -> Welcome), on one server without Redis against two cluster nodes.

Starts its own redis-server (127.0.0.1, a free port, no persistence) and server processes on
the active hot path; one request in flight at a time, so the figures are latencies, not
throughput. Prints p50/p99/max in milliseconds per case.

    python -m benchmarks.bench_cluster [--count 1000]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.codec import IMPLEMENTATION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on \S+:(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port",
                             str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def start_server(*flags: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", "0",
                             "--log-level", "INFO", "--limit-exempt", "127.0.0.0/8",
                             *flags],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        match = LISTENING.search(line)
        if match:
            port = int(match.group(1))
        if port and ("connected to Redis" in line or "--redis" not in flags):
            break
    # Keep reading its log: a full pipe would block the server (a resume logs a line).
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, port


def claim_latencies(port: int, count: int) -> list[float]:
    samples = []
    for i in range(count):
        client = ChatClient("127.0.0.1", port, timeout=10)
        client.sock = socket.create_connection(("127.0.0.1", port), 10)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        client.hello(f"user{i}")
        samples.append(time.perf_counter() - started)
        client.quit()
    return samples


def direct_latencies(alice: ChatClient, bob: ChatClient, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        alice.send(ev.SendDirect(bob.name, f"message {i}"))
        message = bob.wait_for(ev.DirectMessage)
        samples.append(time.perf_counter() - started)
        assert message.text == f"message {i}", message
    return samples


def request_latencies(client: ChatClient, make_request, count: int) -> list[float]:
    """One request at a time (whois, a user-list page): sent -> its reply."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        client.call(make_request())
        samples.append(time.perf_counter() - started)
    return samples


def resume_latencies(first_port: int, other_port: int, count: int) -> list[float]:
    """A session resumed alternately on the other node and back: Resume -> Welcome."""
    client = ChatClient("127.0.0.1", first_port, timeout=10)
    client.connect("mover")
    samples = []
    ports = (other_port, first_port)
    for i in range(count):
        # The old connection stays open (its user moves before it noticed a drop): the
        # server that held the session closes it once the session is resumed.
        old, client = client, ChatClient("127.0.0.1", ports[i % 2], timeout=10)
        client._open_socket()
        started = time.perf_counter()
        client.resume(old.name, old.resume_token)
        samples.append(time.perf_counter() - started)
        old.wait_for(lambda e: type(e) is ev.Error)         # SESSION_RESUMED: let go
        old.close()
    client.quit()
    return samples


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.3f} ms  p99 {p99:.3f} ms  max {ms[-1]:.3f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="samples per case")
    args = parser.parse_args(argv)
    redis, url = start_redis()
    processes = [redis]
    try:
        alone, alone_port = start_server()
        alpha, alpha_port = start_server("--redis", url, "--server-name", "alpha")
        beta, beta_port = start_server("--redis", url, "--server-name", "beta")
        processes += [alone, alpha, beta]
        print(f"hot path {IMPLEMENTATION}, {args.count} samples per case, one in flight")
        print(f"name claim, one server          : {summary(claim_latencies(alone_port, args.count))}")
        print(f"name claim, cluster node (Redis): {summary(claim_latencies(alpha_port, args.count))}")
        for case, (label, a_port, b_port) in enumerate((
                ("one server", alone_port, alone_port),
                ("same cluster node", alpha_port, alpha_port),
                ("across two nodes", alpha_port, beta_port))):
            alice, bob = ChatClient("127.0.0.1", a_port), ChatClient("127.0.0.1", b_port)
            alice.connect(f"alice{case}")
            bob.connect(f"bob{case}")
            direct_latencies(alice, bob, 50)            # warm up
            samples = direct_latencies(alice, bob, args.count)
            print(f"direct message, {label:<17}: {summary(samples)}")
            samples = request_latencies(alice, lambda: ev.Whois(bob.name), args.count)
            print(f"whois, {label:<26}: {summary(samples)}")
            samples = request_latencies(alice, lambda: ev.ListUsersPage("", "", "", 50),
                                        args.count)
            print(f"user list page, {label:<17}: {summary(samples)}")
            alice.quit()
            bob.quit()
        samples = resume_latencies(alone_port, alone_port, args.count)
        print(f"resume, one server              : {summary(samples)}")
        samples = resume_latencies(alpha_port, beta_port, args.count)
        print(f"resume on the other node        : {summary(samples)}")
    finally:
        for proc in reversed(processes):
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
