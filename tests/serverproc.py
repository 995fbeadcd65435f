"""A real chatcore server in a subprocess, on 127.0.0.1 and an ephemeral port."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_PY = os.path.join(ROOT, "server.py")
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
_TLS_LISTENING = re.compile(r"(\S+):(\d+) \(TLS")


class ServerProcess:
    """``python server.py`` (or another ``command``) with extra flags; its log lines can be
    awaited."""

    def __init__(self, *flags: str, port: int = 0, env: dict | None = None,
                 preexec_fn=None, command: list[str] | None = None):
        self.command = command or [SERVER_PY]     # another server: its argv after python
        self.flags = list(flags)
        self.port = port
        self.tls_port: int | None = None          # the TLS listener's, once started with one
        self.env = {**os.environ, **(env or {})}
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self.lines = []
        command = [sys.executable, *self.command, "--host", "127.0.0.1", "--port",
                   str(self.port), *self.flags]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=self.env, cwd=ROOT,
                                     preexec_fn=self.preexec_fn)
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()
        line = self.wait_for_log("listening on", timeout)
        self.port = int(_LISTENING.search(line).group(2))
        tls = _TLS_LISTENING.search(line)
        self.tls_port = int(tls.group(2)) if tls else None
        return self

    def _read_log(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first log line from index ``start`` on containing ``text``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                if not self._reader.is_alive():
                    raise AssertionError(f"server exited ({self.proc.returncode}) before "
                                         f"logging {text!r}:\n{self.log}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"server did not log {text!r}:\n{self.log}")
                self._changed.wait(min(remaining, 0.5))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after ``timeout``)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self.proc.stderr.close()
        return self.proc.returncode
