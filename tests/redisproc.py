"""A real redis-server in a subprocess on 127.0.0.1 and a free port, without persistence."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    """``start()``, ``stop()`` and ``start()`` again on the same port (a Redis restart)."""

    def __init__(self, *extra_args: str):
        self.port = 0
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start (again, on the same port, after ``stop``)."""
        restart = bool(self.port)
        for _ in range(5):          # a free port can be taken between the probe and the bind
            if not restart:
                self.port = _free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--loglevel", "warning", *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(timeout):
                return self
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)        # polling a process we do not own: no event to await
        return False

    def command(self, *args: str | bytes) -> bytes:
        """One command over a fresh blocking connection; the raw RESP reply."""
        import hiredis
        reader = hiredis.Reader()
        with socket.create_connection(("127.0.0.1", self.port), 5) as sock:
            sock.sendall(hiredis.pack_command(args))
            while (reply := reader.gets()) is False:
                reader.feed(sock.recv(65536))
        return reply

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
