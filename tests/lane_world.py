"""A server on a reactor thread with real client sockets, for the lane's differential tests:
the same requests through the hub path and through each lane, with deterministic stamps, so
what every client receives can be compared byte for byte."""
from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import struct
import threading
import time

from chatcore import _codec_py
from chatcore import events as ev
from chatcore import lane
from chatcore.config import ServerConfig
from chatcore.protocol import encode_event
from chatcore.reactor import Reactor
from chatcore.server import Server

_HEADER = struct.Struct(">IBI")
SYNC_TOKEN = 0x5EED


def frame(msg_type: int, request_id: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload) + 5, msg_type, request_id) + payload


def name_and_text(name: bytes, text: bytes) -> bytes:
    """A SendRoom/SendDirect payload from raw bytes (which may be invalid UTF-8)."""
    return struct.pack(">H", len(name)) + name + text


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list = []

    def emit(self, record) -> None:
        self.records.append(record)


def _receive(sock, deadline: float, name: str) -> bytes:
    """What the server sent by ``deadline`` (b"" if nothing yet); a close is a failure."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        data = sock.recv(1 << 16)
    except socket.timeout:
        return b""
    if not data:
        raise AssertionError(f"{name}: closed")
    return data


class NativePeer:
    """A raw native-protocol client: keeps every byte it receives."""

    def __init__(self, address, name: str):
        self.name = name
        self.sock = socket.create_connection(address, timeout=10)
        self.received = bytearray()
        self._decoder = _codec_py.FrameDecoder(1 << 20)
        self.frames: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, item in enumerate(self.frames):
                if predicate(item):
                    del self.frames[:i + 1]
                    return item
            self.frames.clear()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: nothing matched")
            data = _receive(self.sock, deadline, self.name)
            self.received += data
            self._decoder.receive_data(data)
            while (item := self._decoder.next_frame()) is not None:
                self.frames.append(item)

    def until_closed(self, timeout: float = 10.0) -> None:
        """Read until the server closes the connection."""
        self.sock.settimeout(timeout)
        while data := self.sock.recv(1 << 16):
            self.received += data

    def sync(self, token: int = SYNC_TOKEN) -> None:
        """Wait until the server answered everything sent before (a Ping's Pong)."""
        self.send(encode_event(ev.Ping(token, 0xFFFF)))
        self.wait_for(lambda f: f[0] == 0x03 and f[1] == 0xFFFF)

    def close(self) -> None:
        self.sock.close()


class IrcPeer:
    """A raw IRC client: keeps every byte it receives."""

    def __init__(self, address, nick: str):
        self.name = nick
        self.sock = socket.create_connection(address, timeout=10)
        self.received = bytearray()
        self._lines = bytearray()

    def send(self, *lines) -> None:
        """Each line (str, or bytes sent as they are: bad UTF-8) with a CRLF."""
        self.sock.sendall(b"".join((line if isinstance(line, bytes) else line.encode())
                                   + b"\r\n" for line in lines))

    def wait_for_line(self, needle: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self._lines:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {needle!r} in {bytes(self._lines)!r}")
            data = _receive(self.sock, deadline, self.name)
            self.received += data
            self._lines += data
        self._lines = self._lines[self._lines.index(needle) + len(needle):]

    def sync(self, token: str = "sync") -> None:
        self.send(f"PING {token}")
        self.wait_for_line(f"PONG".encode())
        self.wait_for_line(f"{token}\r\n".encode())

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def world(lane_impl, **config):
    """A started server whose connections use the lane of ``lane_impl`` (``chatcore._lane_py``
    or ``chatcore._lane``: its ``run`` for native connections, ``run_irc`` for IRC ones;
    None: the hub path for every request), its hub stamped by a deterministic wall clock;
    yields the Server. Fails if the server logged an error (a reactor callback that
    raised)."""
    saved = lane.run, lane.run_irc
    lane.run, lane.run_irc = (None, None) if lane_impl is None else (lane_impl.run,
                                                                     lane_impl.run_irc)
    errors = _Errors()
    logging.getLogger("chatcore").addHandler(errors)
    reactor = Reactor()
    settings = dict(port=0, server_name="lanetest", ping_interval_seconds=3600, idle_timeout_seconds=3600,
                    handshake_timeout_seconds=3600)
    settings.update(config)
    server = Server(ServerConfig(**settings), reactor)
    server.start()
    server.test_peers = []              # closed at the end
    seconds = itertools.count()
    server.hub._wallclock = lambda: 1_700_000_000.125 + next(seconds) * 0.001
    stopping = threading.Event()

    def watch() -> None:
        if stopping.is_set():
            reactor.stop()
        else:
            reactor.call_later(0.005, watch)

    reactor.call_later(0.005, watch)
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stopping.set()
        thread.join(10)
        for peer in server.test_peers:
            peer.close()
        lane.run, lane.run_irc = saved
        logging.getLogger("chatcore").removeHandler(errors)
        for connection in list(server.connections):
            connection.abort(ev.Reason.DISCONNECTED)
        server.listener.close()
        if server.irc is not None:
            for listener in server.irc.listeners:
                listener.close()
        reactor.close()
    assert not errors.records, [r.getMessage() for r in errors.records]


def native(server: Server, name: str) -> NativePeer:
    peer = NativePeer(server.address, name)
    server.test_peers.append(peer)
    peer.send(encode_event(ev.Hello(1, name, request_id=1)))
    peer.wait_for(lambda f: f[0] == 0x81)
    return peer


def irc(server: Server, nick: str, caps: tuple = ()) -> IrcPeer:
    """A registered IRC client, with the IRCv3 ``caps`` it asked for."""
    peer = IrcPeer(server.irc.address, nick)
    server.test_peers.append(peer)
    if caps:
        peer.send("CAP LS 302", f"CAP REQ :{' '.join(caps)}")
        peer.wait_for_line(b" ACK ")
    peer.send(f"NICK {nick}", "USER u 0 * :Real Name", *(["CAP END"] if caps else []))
    peer.wait_for_line(b" 001 ")
    peer.sync("registered")
    return peer
