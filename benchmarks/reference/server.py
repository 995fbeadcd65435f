"""The asyncio reference server: chatcore's protocol subset, written the way a skilled engineer
would write it on asyncio, so the benchmarks compare chatcore against a fair baseline.

What makes it fair: a room message is encoded once per fan-out and the same bytes are queued
for every member; each connection's queued frames are joined into one ``transport.write`` per
loop turn (a flush scheduled with ``call_soon`` runs after every read of that turn); Nagle is off.
It speaks the handshake, join/leave, SendRoom (fan-out including the sender), SendDirect
(ChatOpened once, then DirectMessage), Ping/Pong and Quit; list requests get a non-fatal
UNKNOWN_TYPE error. One process, one core.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import socket
import time

from chatcore import events as ev
from chatcore.codec import FrameDecoder
from chatcore.errors import ErrorCode, FrameError, ProtocolError
from chatcore.protocol import (DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, Role, decode_frame,
                               encode_event, encode_room_message)

log = logging.getLogger(__name__)

SERVER_NAME = "reference"
PING_INTERVAL_SECONDS = 5.0          # as chatcore's default: a few seconds
MAX_TEXT_BYTES = 4096
MAX_NAME_CHARS = 32
# Same default as chatcore: a client whose queued output passes this is too slow and is cut.
MAX_OUTPUT_BYTES = 1 << 20


class Hub:
    """Users, rooms and conversations, plus the per-turn write batching."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_output_bytes: int):
        self.loop = loop
        self.max_output_bytes = max_output_bytes
        self.users: dict[str, Connection] = {}
        self.rooms: dict[str, dict[Connection, None]] = {}   # insertion-ordered member sets
        self.msg_ids = itertools.count(1)
        self.anonymous = itertools.count(1)
        self.dirty: list[Connection] = []
        self.flush_scheduled = False

    def mark_dirty(self, conn: "Connection") -> None:
        self.dirty.append(conn)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Once per loop turn: one write per connection with output."""
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()

    def broadcast(self, members, frame: bytes) -> None:
        for conn in members:
            conn.queue(frame)


class Connection(asyncio.Protocol):
    __slots__ = ("hub", "transport", "decoder", "out", "dirty", "name", "rooms", "chats",
                 "closed")

    def __init__(self, hub: Hub):
        self.hub = hub
        self.transport = None
        self.decoder = FrameDecoder(DEFAULT_MAX_FRAME_BYTES)
        self.out: list[bytes] = []
        self.dirty = False
        self.name = ""
        self.rooms: set[str] = set()
        self.chats: set[Connection] = set()     # open conversations
        self.closed = False

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        decoder = self.decoder
        decoder.receive_data(data)
        while not self.closed:
            try:
                frame = decoder.next_frame()
            except FrameError as exc:
                self.fail(exc.code, exc.message, 0)
                return
            if frame is None:
                return
            msg_type, request_id, payload = frame
            try:
                if not self.name and msg_type != 0x01:
                    raise ProtocolError(ErrorCode.HANDSHAKE_REQUIRED, "expected Hello first",
                                        fatal=True, request_id=request_id)
                event = decode_frame(msg_type, request_id, payload, role=Role.SERVER)
                self.handle(event)
            except ProtocolError as exc:
                if exc.fatal:
                    self.fail(exc.code, exc.message, exc.request_id)
                    return
                self.send(ev.Error(exc.code, False, exc.message, request_id=exc.request_id))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.depart(ev.Reason.DISCONNECTED)

    # -- output ------------------------------------------------------------------------------

    def queue(self, frame: bytes) -> None:
        if self.closed:
            return
        self.out.append(frame)
        if not self.dirty:
            self.dirty = True
            self.hub.mark_dirty(self)

    def send(self, event) -> None:
        self.queue(encode_event(event))

    def flush(self) -> None:
        self.dirty = False
        if self.closed or not self.out:
            self.out.clear()
            return
        out = self.out
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        if self.transport.get_write_buffer_size() > self.hub.max_output_bytes:
            log.info("%s is too slow: output queue over %d bytes", self.name,
                     self.hub.max_output_bytes)
            self.closed = True
            self.transport.abort()
            self.depart(ev.Reason.TOO_SLOW)

    def fail(self, code, message: str, request_id: int) -> None:
        """Send a fatal error and close after it is written."""
        self.send(ev.Error(code, True, message, request_id=request_id))
        self.flush()
        self.closed = True
        self.transport.close()
        self.depart(ev.Reason.DISCONNECTED)

    # -- requests ----------------------------------------------------------------------------

    def handle(self, event) -> None:
        kind = type(event)
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE,
                                f"{kind.__name__} is not supported by the reference server",
                                request_id=event.request_id)
        handler(self, event)

    def on_hello(self, hello: ev.Hello) -> None:
        if self.name:
            raise ProtocolError(ErrorCode.ALREADY_GREETED, "Hello was already accepted",
                                request_id=hello.request_id)
        if hello.version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                                f"protocol version {hello.version} is not supported",
                                fatal=True, request_id=hello.request_id)
        hub = self.hub
        name = hello.name
        if not name:
            name = f"guest{next(hub.anonymous)}"
            while name in hub.users:
                name = f"guest{next(hub.anonymous)}"
        elif len(name) > MAX_NAME_CHARS or not name.isprintable() or " " in name:
            raise ProtocolError(ErrorCode.NAME_INVALID, "invalid name",
                                request_id=hello.request_id)
        elif name in hub.users:
            raise ProtocolError(ErrorCode.NAME_TAKEN, f"{name} is taken",
                                request_id=hello.request_id)
        self.name = name
        hub.users[name] = self
        self.send(ev.Welcome(PROTOCOL_VERSION, name, SERVER_NAME,
                             int(PING_INTERVAL_SECONDS * 1000), DEFAULT_MAX_FRAME_BYTES,
                             MAX_TEXT_BYTES, MAX_NAME_CHARS, request_id=hello.request_id))

    def on_join(self, join: ev.JoinRoom) -> None:
        room = join.room
        if not room or len(room) > MAX_NAME_CHARS:
            raise ProtocolError(ErrorCode.ROOM_INVALID, "invalid room name",
                                request_id=join.request_id)
        self.send(ev.Ok(request_id=join.request_id))
        if room in self.rooms:
            return
        members = self.hub.rooms.setdefault(room, {})
        members[self] = None
        self.rooms.add(room)
        self.hub.broadcast(members, encode_event(ev.UserJoined(room, self.name)))

    def on_leave(self, leave: ev.LeaveRoom) -> None:
        if leave.room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"not in {leave.room}",
                                request_id=leave.request_id)
        self.send(ev.Ok(request_id=leave.request_id))
        self.queue(self.leave_room(leave.room, ev.Reason.CLOSED))

    def leave_room(self, room: str, reason: int) -> bytes:
        """Remove self from ``room``, tell the rest; returns the UserLeft frame."""
        self.rooms.discard(room)
        members = self.hub.rooms.get(room)
        frame = encode_event(ev.UserLeft(room, self.name, reason))
        if members is not None:
            members.pop(self, None)
            if members:
                self.hub.broadcast(members, frame)
            else:
                del self.hub.rooms[room]
        return frame

    def on_send_room(self, msg: ev.SendRoom) -> None:
        room = msg.room
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"not in {room}",
                                request_id=msg.request_id)
        text = msg.text.encode("utf-8")
        if len(text) > MAX_TEXT_BYTES:
            raise ProtocolError(ErrorCode.TEXT_INVALID, "text too long",
                                request_id=msg.request_id)
        msg_id = next(self.hub.msg_ids)
        now_ms = int(time.time() * 1000)
        frame = encode_room_message(room.encode("utf-8"), self.name.encode("utf-8"), msg_id,
                                    now_ms, text)
        self.hub.broadcast(self.hub.rooms[room], frame)
        self.send(ev.Ack(msg_id, now_ms, request_id=msg.request_id))

    def on_send_direct(self, msg: ev.SendDirect) -> None:
        peer = self.hub.users.get(msg.peer)
        if peer is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {msg.peer}",
                                request_id=msg.request_id)
        if peer is self:
            raise ProtocolError(ErrorCode.CANNOT_CHAT_SELF, "cannot chat with yourself",
                                request_id=msg.request_id)
        if peer not in self.chats:
            self.chats.add(peer)
            peer.chats.add(self)
            peer.send(ev.ChatOpened(self.name))
        msg_id = next(self.hub.msg_ids)
        now_ms = int(time.time() * 1000)
        peer.send(ev.DirectMessage(self.name, msg_id, now_ms, msg.text))
        self.send(ev.Ack(msg_id, now_ms, request_id=msg.request_id))

    def on_ping(self, ping: ev.Ping) -> None:
        self.send(ev.Pong(ping.token, request_id=ping.request_id))

    def on_pong(self, pong: ev.Pong) -> None:
        pass

    def on_quit(self, quit_: ev.Quit) -> None:
        self.flush()
        self.closed = True
        self.transport.close()
        self.depart(ev.Reason.QUIT)

    # -- leaving -----------------------------------------------------------------------------

    def depart(self, reason: int) -> None:
        if not self.name:
            return
        for room in list(self.rooms):
            self.leave_room(room, reason)
        hub = self.hub
        if hub.users.get(self.name) is self:
            del hub.users[self.name]
        for peer in self.chats:
            peer.chats.discard(self)
        self.chats.clear()
        self.name = ""


_HANDLERS = {
    ev.Hello: Connection.on_hello,
    ev.JoinRoom: Connection.on_join,
    ev.LeaveRoom: Connection.on_leave,
    ev.SendRoom: Connection.on_send_room,
    ev.SendDirect: Connection.on_send_direct,
    ev.Ping: Connection.on_ping,
    ev.Pong: Connection.on_pong,
    ev.Quit: Connection.on_quit,
}


async def _pinger(hub: Hub) -> None:
    tokens = itertools.count(1)
    while True:
        await asyncio.sleep(PING_INTERVAL_SECONDS)
        frame = encode_event(ev.Ping(next(tokens)))
        hub.broadcast(list(hub.users.values()), frame)


async def serve(host: str, port: int, port_file: str | None, max_output_bytes: int) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(loop, max_output_bytes)
    server = await loop.create_server(lambda: Connection(hub), host, port, backlog=4096,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if port_file:
        tmp = f"{port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, port_file)
    log.info("reference server listening on %s:%d (%s)", host, bound, type(loop).__module__)
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    pinger = loop.create_task(_pinger(hub))
    try:
        await stop
    finally:
        pinger.cancel()
        server.close()
        for conn in list(hub.users.values()):
            conn.transport.abort()
        await server.wait_closed()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--max-output-bytes", type=int, default=MAX_OUTPUT_BYTES)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = asyncio.run
    if args.uvloop:
        import uvloop
        runner = uvloop.run
    runner(serve(args.host, args.port, args.port_file, args.max_output_bytes))
    return 0
