"""A raw IRC test client over a real socket: send lines, await lines, no library reading."""
from __future__ import annotations

import re
import socket
import ssl
import time

from chatcore.irc.message import Message, parse
from tests.serverproc import ServerProcess

_IRC_LISTENING = re.compile(r"irc front end on \S+:(\d+)")
_IRC_TLS_LISTENING = re.compile(r"irc front end \(TLS\) on \S+:(\d+)")


def irc_port(server: ServerProcess) -> int:
    return int(_IRC_LISTENING.search(server.wait_for_log("irc front end on")).group(1))


def irc_tls_port(server: ServerProcess) -> int:
    log = server.wait_for_log("irc front end (TLS) on")
    return int(_IRC_TLS_LISTENING.search(log).group(1))


class RawIrc:
    """One IRC connection; ``expect`` waits for a matching line and keeps the others."""

    def __init__(self, port: int, timeout: float = 10.0, tls=None):
        """``tls``: an ssl.SSLContext to speak TLS with (the irc_tls_port)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.timeout = timeout
        self.buffer = b""
        self.seen: list[Message] = []       # lines received, not yet taken by expect
        self.closed = False

    def send(self, *lines: str | bytes) -> None:
        data = b"".join(line if isinstance(line, bytes) else line.encode() + b"\r\n"
                        for line in lines)
        self.sock.sendall(data)

    def _read(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        self.seen.extend(parse(line) for line in lines if line)
        return True

    def expect(self, command: str, *params: str, timeout: float | None = None) -> Message:
        """The first line with ``command`` whose params start with ``params`` (skipping the
        target nick for numerics); earlier lines stay in ``seen``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, message in enumerate(self.seen):
                if message.command == command and _starts(message, params):
                    del self.seen[i]
                    return message
            if self.closed or time.monotonic() > deadline:
                got = "\n".join(f"{m.source} {m.command} {m.params}" for m in self.seen)
                raise AssertionError(f"no {command} {params} (closed={self.closed}); got:\n{got}")
            self._read(deadline)

    def expect_any(self, *commands: str, timeout: float | None = None) -> Message:
        """The first line whose command is one of ``commands``; earlier lines stay."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, message in enumerate(self.seen):
                if message.command in commands:
                    del self.seen[i]
                    return message
            if self.closed or time.monotonic() > deadline:
                got = "\n".join(f"{m.source} {m.command} {m.params}" for m in self.seen)
                raise AssertionError(f"none of {commands} (closed={self.closed}); got:\n{got}")
            self._read(deadline)

    def expect_closed(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("connection still open")
            self._read(deadline)

    def drain(self, wait: float = 0.0) -> list[Message]:
        """Every line received so far (reading for ``wait`` seconds more)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self._read(deadline):
            pass
        seen, self.seen = self.seen, []
        return seen

    def register(self, nick: str, caps: str = "") -> Message:
        if caps:
            self.send("CAP LS 302", f"NICK {nick}", "USER u 0 * :Real Name",
                      f"CAP REQ :{caps}", "CAP END")
            self.expect("CAP", "*", "ACK")
        else:
            self.send(f"NICK {nick}", "USER u 0 * :Real Name")
        welcome = self.expect("001")
        self.expect("422")
        self.seen.clear()           # the rest of the welcome burst
        return welcome

    def sync(self, token: str = "sync") -> None:
        """Wait until the server has answered everything sent before."""
        self.send(f"PING {token}")
        deadline = time.monotonic() + self.timeout
        while True:
            for i, message in enumerate(self.seen):
                if message.command == "PONG" and message.params[-1] == token:
                    del self.seen[i]
                    return
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"no PONG {token}")
            self._read(deadline)

    def close(self) -> None:
        self.sock.close()


def _starts(message: Message, params: tuple) -> bool:
    got = message.params[1:] if message.command.isdigit() else message.params
    return all(p is None or (i < len(got) and got[i] == p) for i, p in enumerate(params))
