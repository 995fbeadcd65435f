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
from chatcore.cluster.envelope import Envelopes, encode_room_batch
from chatcore.cluster.rooms import ClusterRooms, RoomLink
from chatcore.cluster.roomstate import STATE_SCRIPT
from chatcore.config import ServerConfig
from chatcore.hub.model import LocalBackplane, RoomSnapshot
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


class LoopbackBroker:
    """Redis as the cluster's rooms use it, on the server's reactor: every PUBLISH (and the
    publish of a state script) is recorded in ``published`` and handed back to the channel's
    subscriber in publishing order, as Redis hands a node's own messages back: at the end of
    the loop turn it was published in, after the room batches (``hand_back``, a before-sleep
    hook), so that what a client sends next never races the copies (the tests compare bytes
    across runs)."""

    up = True

    def __init__(self, reactor, remote_speakers: dict):
        self.reactor = reactor
        self.published: list = []           # (channel, data), in publishing order
        self.handlers: dict = {}
        self.remote_speakers = remote_speakers      # channel -> name
        self._remote_seq = 0
        self._on_the_way: list = []

    def publish(self, channel, data: bytes, callback=None) -> None:
        self.published.append((channel, data))
        self._on_the_way.append((channel, data, callback))
        speaker = self.remote_speakers.get(channel)
        if speaker is not None and data[:1] == b"\x02":
            # Another node's member says something right after each batch of ours.
            self._remote_seq += 1
            seq = self._remote_seq
            said = encode_event(ev.RoomMessage(channel.rpartition(":")[2], speaker,
                                               1 << 40 | seq, 1_600_000_000_000 + seq,
                                               f"from afar {seq}"))
            self._on_the_way.append((channel, encode_room_batch(
                "othernode", "othernode-1", seq, [said]), None))

    def hand_back(self) -> None:
        """Everything published so far, to its subscribers (what that publishes in turn
        too); then one more loop turn, without waiting, writes what they were told."""
        if not self._on_the_way:
            return
        while self._on_the_way:
            self._back(*self._on_the_way.pop(0))
        self.reactor.call_soon(_nothing)

    def _back(self, channel, data: bytes, callback) -> None:
        if callback is not None:
            callback(1)
        handler = self.handlers.get(channel) if channel is not None else None
        if handler is not None:
            handler(channel, data)

    def call(self, *command, callback=None) -> None:
        if command[:2] == ("EVAL", STATE_SCRIPT):       # KEYS: info; ARGV: channel, message
            self.publish(command[4], command[5], callback)
        elif callback is not None:
            self._on_the_way.append((None, None, callback))

    def subscribe(self, channel, handler, on_subscribed=None) -> None:
        self.handlers[channel] = handler
        if on_subscribed is not None:
            on_subscribed(True)

    def unsubscribe(self, channel) -> None:
        self.handlers.pop(channel, None)


class LoopbackRooms(Envelopes, ClusterRooms, LocalBackplane):
    """A cluster's room backplane (``chatcore.cluster.rooms``: its batching, sequence
    numbers, envelopes and hand-back) over a ``LoopbackBroker``, with members on another
    node ("othernode") in the rooms of ``remote_rooms`` (room key -> their names): those
    rooms are shared, their events published and delivered when back, and the first of those
    names says something after each of this node's batches. Joins and leaves are those of
    one node (no scripts); ``old_peer`` adds a peer that does not read room batches (a
    rolling upgrade: v1 JSON)."""

    def __init__(self, server, remote_rooms: dict, old_peer: bool = False):
        self.reactor, self.config, self.hub = server.reactor, server.config, server.hub
        self.node, self.instance = server.hub.node, "lanetest-1"
        self._prefix = "lanetest"
        self.broker = LoopbackBroker(server.reactor, {
            self.room_channel(key): names[0] for key, names in remote_rooms.items()})
        self.remote_rooms = remote_rooms
        self.peers = {"old": _OldPeer()} if old_peer else {}
        self.room_links: dict = {}
        self.room_gaps = self.room_batches_sent = 0
        self._batching: list = []
        self._unknown_room_kinds: set = set()
        self._unknown_versions: set = set()
        server.reactor.add_before_sleep(self._flush_batches)
        server.reactor.add_before_sleep(self.broker.hand_back)

    def open_room(self, room, done) -> None:
        link = self.room_links[room.key] = RoomLink(room, self.room_channel(room.key),
                                                    subscribed=True)
        self.broker.subscribe(link.channel, lambda channel, data: self._on_room_message(
            link, data))
        names = self.remote_rooms.get(room.key, ())
        done(RoomSnapshot({}, {name.casefold(): (name, "othernode") for name in names})
             if names else None)
        self._update_shared(link)

    def join_room(self, room, session, then) -> None:
        then()

    def _moderation_extras(self, link, message) -> None:
        """Joins and leaves here run no scripts, so they name no founder and no heir."""

    def leave_room(self, room, session, event, then) -> None:
        then()

    def rename_in_room(self, room, session, old_name: str) -> None:
        pass


def _nothing() -> None:
    pass


class _OldPeer:
    room_batches = False


@contextlib.contextmanager
def world(lane_impl, remote_rooms: dict | None = None, old_peer: bool = False, **config):
    """A started server whose connections use the lane of ``lane_impl`` (``chatcore._lane_py``
    or ``chatcore._lane``: its ``run`` for native connections, ``run_irc`` for IRC ones;
    None: the hub path for every request), its hub stamped by a deterministic wall clock;
    yields the Server. ``remote_rooms`` (room key -> names): a ``LoopbackRooms`` backplane
    with those rooms shared with another node (``server.hub.backplane.broker.published``:
    what it published). Fails if the server logged an error (a reactor callback that
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
    if remote_rooms is not None:
        server.hub.backplane = LoopbackRooms(server, remote_rooms, old_peer)
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
