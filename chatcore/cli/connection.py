"""One asyncio TCP connection feeding a sans-IO NativeProtocol. Knows bytes and events only.

It answers the server's pings itself (liveness is not chat) and numbers requests.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import logging
import os
import socket
import ssl
import struct

from .. import events as ev
from ..errors import ProtocolError
from ..protocol import NEED_DATA, PROTOCOL_VERSION, NativeProtocol, Role
from .formatting import safe_text
from ..tls import describe_error

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 65536
CLIENT_SOFTWARE = "chatcore-cli"
# What a peer that is not a chatcore server sent first is quoted in the error, up to this.
QUOTED_BYTES = 60
_NO_SUCH_HOST = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA")
                 if hasattr(socket, name)}


def describe(exc: OSError) -> str:
    """A short reason for a socket error: "Connection refused", "timed out"."""
    if isinstance(exc, ssl.SSLError):
        return describe_error(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def explain_connect_error(exc: BaseException, host: str, port: int, *, local_port: int = 0,
                          timeout: float | None = None) -> str:
    """One line a person understands for a failed connect to ``host:port``."""
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NO_SUCH_HOST:
            return f"no such host {host}"
        return f"cannot look up the host {host}: {exc.strerror}"
    if local_port and getattr(exc, "errno", None) in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return f"local port {local_port} is in use (choose another --local-port)"
    if isinstance(exc, TimeoutError):
        within = f" within {timeout:g}s" if timeout else ""
        return f"cannot connect to {host_port(host, port)}: no answer{within}"
    return f"cannot connect to {host_port(host, port)}: {describe(exc)}"


class CannotConnect(OSError):
    """The server cannot be reached; ``str()`` is the one-line explanation."""


class ConnectionLost(ConnectionError):
    """The connection ended; ``str()`` says how, ``error`` is the fatal Error sent first."""

    def __init__(self, message: str, error: ev.Error | None = None):
        super().__init__(message)
        self.error = error


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 address: str = "the server"):
        self.address = address
        self._reader = reader
        self._writer = writer
        self._protocol = NativeProtocol(Role.CLIENT)
        self._request_ids = itertools.count(1)
        self._fatal: ev.Error | None = None
        self._first_bytes = b""         # the start of what the peer sent, for "not chatcore"
        self._welcomed = False
        self.resume_token: ev.ResumeToken | None = None     # sent just before the Welcome
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, *, local_port: int = 0,
                   timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> Connection:
        """Connect (with TLS when ``tls`` is given); raises CannotConnect, saying why, when
        the server cannot be reached or its certificate is not trusted."""
        def cannot(exc: BaseException) -> CannotConnect:
            return CannotConnect(explain_connect_error(exc, host, port, local_port=local_port,
                                                       timeout=timeout))
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise cannot(exc) from None
        last_error: OSError = OSError(f"cannot resolve {host}")
        for family, type_, proto, _, address in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                if local_port:
                    # The same local port is reused on every reconnect; our side of the
                    # previous connection may still be in TIME_WAIT.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("", local_port) if family == socket.AF_INET
                              else ("::", local_port))
                await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            except BaseException:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is None:
                reader, writer = await asyncio.open_connection(sock=sock)
            else:
                try:
                    reader, writer = await asyncio.open_connection(
                        sock=sock, ssl=tls, server_hostname=host,
                        ssl_handshake_timeout=timeout)
                except OSError as exc:
                    sock.close()
                    raise cannot(exc) from None
                except BaseException:
                    sock.close()
                    raise
            return cls(reader, writer, host_port(host, port))
        raise cannot(last_error)

    def send(self, event) -> int:
        """Write ``event`` with a fresh request id (unless it has one); returns the id."""
        if getattr(event, "request_id", 0) == 0 and type(event) is not ev.Pong:
            event = dataclasses.replace(event, request_id=next(self._request_ids))
        if not self.closed:
            self._writer.write(self._protocol.send(event))
        return event.request_id

    async def next_event(self, silent_seconds: float | None = None):
        """The next event other than the server's Pings; raises ConnectionLost.

        ``silent_seconds``: how long the server may send nothing at all (not even a Ping)
        before it counts as gone.
        """
        while True:
            try:
                event = self._protocol.next_event()
            except ProtocolError as exc:
                if exc.fatal:
                    if not self._welcomed:
                        raise self._not_chatcore() from None
                    raise ConnectionLost(f"the server's stream broke: {exc.message}") from None
                log.debug("skipping a frame: %s", exc.message)
                continue
            if event is NEED_DATA:
                try:
                    async with asyncio.timeout(silent_seconds):
                        data = await self._reader.read(READ_CHUNK_BYTES)
                except TimeoutError:
                    raise ConnectionLost(f"no word from the server for {silent_seconds:g}s",
                                         ) from None
                except OSError as exc:
                    raise ConnectionLost(describe(exc)) from None
                if not data:
                    if self._fatal is not None:
                        raise ConnectionLost(self._fatal.message, self._fatal)
                    if not self._welcomed and self._first_bytes:
                        raise self._not_chatcore()
                    raise ConnectionLost("the server closed the connection")
                if len(self._first_bytes) < QUOTED_BYTES:
                    self._first_bytes += data[:QUOTED_BYTES - len(self._first_bytes)]
                self._protocol.receive_data(data)
                continue
            if type(event) is ev.Ping:
                self.send(ev.Pong(event.token, event.request_id))
                continue
            if type(event) is ev.Error and event.fatal:
                self._fatal = event
            return event

    def _not_chatcore(self) -> ConnectionLost:
        first_line = self._first_bytes.split(b"\n", 1)[0].rstrip(b"\r")
        quoted = first_line.decode("utf-8", "replace")
        return ConnectionLost(f"{self.address} is not a chatcore server (it sent "
                              f"`{safe_text(quoted, newlines=False)}`)")

    async def hello(self, name: str, timeout: float | None = None) -> ev.Welcome | ev.Error:
        """Say Hello; the Welcome, or the Error refusing ``name`` (the connection stays open).

        Raises ConnectionLost, saying why, when the peer is not a chatcore server: it closed,
        sent something else, or said nothing within ``timeout`` seconds.
        """
        return await self._handshake(ev.Hello(PROTOCOL_VERSION, name, CLIENT_SOFTWARE), timeout)

    async def resume(self, name: str, token: str,
                     timeout: float | None = None) -> ev.Welcome | ev.Error:
        """Ask for the session the server still holds for ``name`` (after a drop): the
        Welcome, or Error(RESUME_REFUSED), after which a Hello may follow on this connection."""
        return await self._handshake(ev.Resume(PROTOCOL_VERSION, name, token,
                                               CLIENT_SOFTWARE), timeout)

    async def _handshake(self, request, timeout: float | None) -> ev.Welcome | ev.Error:
        try:
            async with asyncio.timeout(timeout):
                return await self._greet(request)
        except TimeoutError:
            if self._first_bytes:
                raise self._not_chatcore() from None
            raise ConnectionLost(f"{self.address} accepted the connection but did not answer "
                                 f"the handshake within {timeout:g}s (is it a chatcore "
                                 f"server?)") from None

    async def _greet(self, request) -> ev.Welcome | ev.Error:
        request_id = self.send(request)
        while True:
            event = await self.next_event()
            if type(event) is ev.ResumeToken:
                self.resume_token = event
            elif type(event) is ev.Welcome and event.request_id == request_id:
                self._welcomed = True
                # The server may allow bigger frames than our default; its replies can use them.
                self._protocol.max_frame_bytes = max(event.max_frame_bytes,
                                                     self._protocol.max_frame_bytes)
                return event
            if type(event) is ev.Error and event.request_id in (request_id, 0):
                return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def abort(self) -> None:
        """Close with a reset, not an end of stream: the server takes it for a dropped line
        (and holds the session) rather than a goodbye."""
        if self.closed:
            return
        self.closed = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._writer.transport.abort()
