"""Measuring the RTT to a server without joining it: a TCP connect (and TLS handshake), then
``PROBE_PINGS`` Pings before any handshake, then close. A server answers a Ping before Hello
with its Pong (docs/protocol.md, handshake rule 3), so a probe claims no name and shows in
no list; a server older than that rule answers with the fatal HANDSHAKE_REQUIRED, and that
answer's round trip is the one sample.

``probe`` blocks (the library client); ``probe_async`` is the same on asyncio (the CLI).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass

from . import events as ev
from .errors import ProtocolError
from .protocol import NEED_DATA, NativeProtocol, Role, encode_event

# Three pings, the fastest counts: the first may pay for the server's accept and a cold cache.
PROBE_PINGS = 3
# A server that takes longer than this to answer a probe is not one to pick.
PROBE_TIMEOUT_SECONDS = 2.0
READ_CHUNK_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ProbeResult:
    connect_seconds: float          # TCP connect, and the TLS handshake if any
    rtt_seconds: float              # the fastest Ping -> answer
    samples: tuple[float, ...]      # every Ping's round trip


class ProbeFailed(OSError):
    """The server did not answer the probe; ``str()`` says why."""


def _ping(number: int) -> bytes:
    return encode_event(ev.Ping(number, request_id=number))


def _answer(protocol: NativeProtocol, number: int):
    """The answer to Ping ``number`` if it is buffered (Pong, or the Error of an older
    server), else None; raises ProbeFailed on a broken stream."""
    while True:
        try:
            event = protocol.next_event()
        except ProtocolError as exc:
            if exc.fatal:
                raise ProbeFailed(f"not a chatcore server ({exc.message})") from None
            continue
        if event is NEED_DATA:
            return None
        if type(event) in (ev.Pong, ev.Error) and event.request_id == number:
            return event


def _result(connect_seconds: float, samples: list[float]) -> ProbeResult:
    return ProbeResult(connect_seconds, min(samples), tuple(samples))


def probe(host: str, port: int, *, pings: int = PROBE_PINGS,
          timeout: float = PROBE_TIMEOUT_SECONDS,
          tls: ssl.SSLContext | None = None) -> ProbeResult:
    """Measure ``host:port`` (blocking, at most ``timeout`` seconds); raises OSError."""
    started = time.monotonic()
    deadline = started + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        connect_seconds = time.monotonic() - started
        protocol = NativeProtocol(Role.CLIENT)
        samples = []
        for number in range(1, pings + 1):
            sent = time.monotonic()
            sock.sendall(_ping(number))
            while (event := _answer(protocol, number)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProbeFailed(f"no answer within {timeout:g}s")
                sock.settimeout(remaining)
                data = sock.recv(READ_CHUNK_BYTES)
                if not data:
                    raise ProbeFailed("the server closed the connection")
                protocol.receive_data(data)
            samples.append(time.monotonic() - sent)
            if type(event) is ev.Error:
                break               # an older server: it closes after this answer
        return _result(connect_seconds, samples)
    except TimeoutError:
        raise ProbeFailed(f"no answer within {timeout:g}s") from None
    finally:
        sock.close()


async def probe_async(host: str, port: int, *, pings: int = PROBE_PINGS,
                      timeout: float = PROBE_TIMEOUT_SECONDS,
                      tls: ssl.SSLContext | None = None) -> ProbeResult:
    """``probe`` on the running asyncio loop."""
    try:
        async with asyncio.timeout(timeout):
            return await _probe_async(host, port, pings, tls)
    except TimeoutError:
        raise ProbeFailed(f"no answer within {timeout:g}s") from None


async def _probe_async(host: str, port: int, pings: int,
                       tls: ssl.SSLContext | None) -> ProbeResult:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls is not None else None)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connect_seconds = time.monotonic() - started
        protocol = NativeProtocol(Role.CLIENT)
        samples = []
        for number in range(1, pings + 1):
            sent = time.monotonic()
            writer.write(_ping(number))
            while (event := _answer(protocol, number)) is None:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    raise ProbeFailed("the server closed the connection")
                protocol.receive_data(data)
            samples.append(time.monotonic() - sent)
            if type(event) is ev.Error:
                break
        return _result(connect_seconds, samples)
    finally:
        writer.close()
