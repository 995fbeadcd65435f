"""Where Redis is (``redis://`` or ``unix://`` URLs) and the blocking calls a node makes at
start-up, before its reactor runs; the reactor's link to Redis is :mod:`chatcore.broker`."""
from __future__ import annotations

import socket
import urllib.parse
from dataclasses import dataclass

import hiredis

DEFAULT_PORT = 6379

@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, parsed from ``redis://[[user]:password@]host[:port][/db]`` or, for a
    Redis on the same machine, ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``
    (a Unix socket: no TCP on either side, cheaper per byte than loopback TCP)."""
    url: str
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    unix_path: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "unix":
            return cls._parse_unix(url, parts)
        if parts.scheme != "redis":
            raise ValueError(f"redis URL {url!r} must start with redis:// or unix://")
        if not parts.hostname:
            raise ValueError(f"redis URL {url!r} names no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"redis URL {url!r}: the path must be a database number")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"redis URL {url!r} has a bad port") from None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        username = urllib.parse.unquote(parts.username) if parts.username else None
        return cls(_redacted(parts), parts.hostname, port, int(path or 0), username, password)

    @classmethod
    def _parse_unix(cls, url: str, parts: urllib.parse.SplitResult) -> RedisAddress:
        if not parts.path.startswith("/") or parts.path == "/":
            raise ValueError(f"redis URL {url!r} must name the socket's absolute path")
        query = urllib.parse.parse_qs(parts.query)
        db = query.get("db", ["0"])[-1]
        if not db.isdigit():
            raise ValueError(f"redis URL {url!r}: db must be a database number")
        password = urllib.parse.unquote(parts.password) if parts.password else None
        username = urllib.parse.unquote(parts.username) if parts.username else None
        return cls(_redacted(parts), "", 0, int(db), username, password,
                   unix_path=parts.path)

    def resolve(self) -> tuple:
        """(family, type, proto, sockaddr) to connect to: resolved once, at start, so the
        loop never blocks on DNS later."""
        if self.unix_path is not None:
            return socket.AF_UNIX, socket.SOCK_STREAM, 0, self.unix_path
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM)[0]
        return family, kind, proto, sockaddr

    def connect_blocking(self, timeout_seconds: float) -> socket.socket:
        if self.unix_path is None:
            return socket.create_connection((self.host, self.port), timeout_seconds)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_seconds)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        return sock

    def setup_commands(self, subscriber: bool) -> list[tuple]:
        """What a fresh connection sends first: AUTH, and SELECT (commands only)."""
        commands = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username
                            else ("AUTH", self.password))
        if self.db and not subscriber:
            commands.append(("SELECT", self.db))
        return commands


def _redacted(parts: urllib.parse.SplitResult) -> str:
    """The URL as logs may show it: without its password."""
    if parts.password is None:
        return parts.geturl()
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    user = parts.username or ""
    return urllib.parse.urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path,
                                     parts.query, ""))


def run_blocking(address: RedisAddress, commands: list[tuple],
                 timeout_seconds: float) -> list:
    """Send ``commands`` (after AUTH/SELECT) on a blocking connection and return their
    replies: for start-up, before the loop runs. Raises OSError saying what failed."""
    reader = hiredis.Reader()
    setup = address.setup_commands(subscriber=False)
    everything = setup + list(commands)
    with address.connect_blocking(timeout_seconds) as sock:
        sock.sendall(b"".join(hiredis.pack_command(c) for c in everything))
        replies = []
        while len(replies) < len(everything):
            data = sock.recv(65536)
            if not data:
                raise OSError("Redis closed the connection")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    for reply in replies[:len(setup)]:
        if isinstance(reply, hiredis.ReplyError):
            raise OSError(f"Redis refused: {reply}")
    return replies[len(setup):]


def check_reachable(address: RedisAddress, timeout_seconds: float) -> None:
    """Blocking PING for start-up: raises OSError saying what failed."""
    reply = run_blocking(address, [("PING",)], timeout_seconds)[0]
    if isinstance(reply, hiredis.ReplyError):
        raise OSError(f"Redis refused: {reply}")
