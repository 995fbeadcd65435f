"""The per-turn flush's compiled loop (``write_all``) and the connections that use it.

A plain connection's output buffer carries its socket in ``direct_fd`` while a completed
write needs nothing more of ``Connection.flush``; ``write_all`` writes such buffers itself and
hands every other one (no ``direct_fd``, a partial write, an error) to its owner. Both builds,
over real TCP sockets on 127.0.0.1, and a server on an in-process reactor.
"""
from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore import events as ev
from chatcore.codec import codec_c, codec_py
from chatcore.config import ServerConfig
from chatcore.connection import State
from chatcore.protocol import NEED_DATA, NativeProtocol, Role, encode_event
from tests.flush_fakes import tcp_pairs
from tests.inprocess import running_server


def read_exactly(reader, size: int) -> bytes:
    reader.settimeout(10)
    data = bytearray()
    while len(data) < size:
        chunk = reader.recv(1 << 20)
        assert chunk, "closed early"
        data += chunk
    return bytes(data)


@pytest.fixture
def pairs():
    made = []

    def make(sndbuf: int = 0):
        made.append(tcp_pairs(1, sndbuf)[0])
        return made[-1]
    yield make
    for writer, reader in made:
        writer.close()
        reader.close()


def test_buffers_with_a_direct_fd_are_written_the_rest_handed_back(codec, pairs):
    frames = [bytes([65 + i]) * (100 + i) for i in range(20)]
    expected = b"".join(frames)
    (w1, r1), (w2, r2), (w3, r3) = pairs(), pairs(), pairs()
    direct, also_direct, plain = (codec.OutputBuffer(n) for n in range(3))
    for frame in frames:
        codec.fanout(frame, [direct, also_direct, plain])
    direct.direct_fd, also_direct.direct_fd = w1.fileno(), w2.fileno()
    empty = codec.OutputBuffer(3)
    empty.direct_fd = w3.fileno()
    sent, left = codec.write_all([direct, plain, empty, also_direct])
    assert sent == 2 * len(expected)
    assert left == [plain] and plain.pending_bytes == len(expected)
    assert direct.pending_bytes == also_direct.pending_bytes == 0
    assert read_exactly(r1, len(expected)) == expected
    assert read_exactly(r2, len(expected)) == expected
    assert codec.write_all([]) == (0, [])


def test_a_partial_write_is_counted_and_handed_back(codec, pairs):
    writer, reader = pairs(sndbuf=4096)
    out = codec.OutputBuffer()
    out.direct_fd = writer.fileno()
    data = [bytes([i % 251]) * 1000 for i in range(2000)]      # ~2 MB: more than it takes
    for chunk in data:
        out.append(chunk)
    sent, left = codec.write_all([out])
    assert 0 < sent < 2_000_000 and left == [out]
    assert out.pending_bytes == 2_000_000 - sent
    received = read_exactly(reader, sent)
    assert received == b"".join(data)[:sent]


def test_an_error_consumes_nothing_and_hands_the_buffer_back(codec, pairs):
    writer, reader = pairs()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    reader.close()                      # a reset: the next write fails
    out = codec.OutputBuffer()
    out.direct_fd = writer.fileno()
    out.append(b"hello")
    deadline = time.monotonic() + 5
    while True:
        sent, left = codec.write_all([out])
        assert sent == 0 and left == [out] and out.pending_bytes == 5
        try:
            out.write_to(writer.fileno())       # what the owner's flush() then meets
        except (ConnectionResetError, BrokenPipeError):
            break
        assert time.monotonic() < deadline
    assert out.pending_bytes == 5


def test_close_clears_direct_fd_and_arguments_are_checked(codec):
    out = codec.OutputBuffer()
    assert out.direct_fd == -1
    out.direct_fd = 7
    out.close()
    assert out.direct_fd == -1
    with pytest.raises(TypeError):
        codec.write_all((out,))
    with pytest.raises(TypeError):
        codec.write_all([out, b"not a buffer"])


# ------------------------------------------------------------------- through a server ----


@pytest.fixture
def running():
    """A server on an in-process reactor and a helper that turns the loop until a condition
    holds."""
    with running_server(ServerConfig(port=0, ping_interval_seconds=60,
                                      idle_timeout_seconds=120, limit_exempt="127.0.0.0/8"), timeout=10.0) as running:
        yield running


class Client:
    def __init__(self, server, name: str, rcvbuf: int = 0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(server.address)
        self.sock.setblocking(False)
        self.protocol = NativeProtocol(Role.CLIENT)
        self.events: list = []
        self.bytes = 0
        self.sock.sendall(encode_event(ev.Hello(1, name, request_id=1)) +
                          encode_event(ev.JoinRoom("lobby", request_id=2)))

    def read(self) -> list:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            self.bytes += len(data)
            self.protocol.receive_data(data)
        while (event := self.protocol.next_event()) is not NEED_DATA:
            self.events.append(event)
        return self.events

    def messages(self) -> list:
        return [e.text for e in self.events if type(e) is ev.RoomMessage]


def connection_of(server, name):
    return next(c for c in server.connections if c.session and c.session.name == name)


def test_a_lagging_reader_leaves_the_fast_path_and_returns_to_it(running):
    server, turn_until = running
    sender, lagging = Client(server, "sender"), Client(server, "lagging", rcvbuf=4096)
    turn_until(lambda: sum(type(e) is ev.RoomJoined for c in (sender, lagging)
                           for e in c.read()) >= 2)
    slow = connection_of(server, "lagging")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert slow.outbuf.direct_fd == slow.fd
    texts = [f"{i:05d} " + "x" * 900 for i in range(400)]     # ~370 KB: more than it takes
    sender.sock.setblocking(True)
    sender.sock.sendall(b"".join(encode_event(ev.SendRoom("lobby", text, request_id=10 + i))
                                 for i, text in enumerate(texts)))
    sender.sock.setblocking(False)
    turn_until(lambda: slow._writing)
    assert slow.outbuf.direct_fd == -1          # its writes are flush()'s while backlogged

    def caught_up() -> bool:
        sender.read()
        lagging.read()
        return len(lagging.messages()) == len(texts) and not slow._writing
    turn_until(caught_up)
    assert lagging.messages() == texts and sender.messages() == texts
    assert slow.outbuf.direct_fd == slow.fd     # back on the compiled loop
    assert server.stats.bytes_sent == sender.bytes + lagging.bytes

    lagging.sock.sendall(encode_event(ev.Quit("bye")))
    turn_until(lambda: slow.state is not State.OPEN)
    assert slow.outbuf.direct_fd == -1
    sender.sock.close()
    lagging.sock.close()


# ------------------------------------------------------------------- both builds alike ----

BUFFERS = 4
# (which buffers get a fan-out of a frame of this size, or get a direct_fd, or a write_all)
STEP = st.one_of(
    st.tuples(st.just("fanout"), st.sets(st.integers(0, BUFFERS - 1), min_size=1),
              st.integers(1, 6000)),
    st.tuples(st.just("direct"), st.integers(0, BUFFERS - 1), st.booleans()),
    st.tuples(st.just("write_all"), st.lists(st.integers(0, BUFFERS - 1), max_size=6,
                                             unique=True)),
)


def run_steps(codec, steps) -> tuple:
    """Run ``steps`` on fresh buffers over small-buffered TCP pairs, checking each
    write_all's result; returns the bytes each wrote and every byte each reader got."""
    pairs = tcp_pairs(BUFFERS, sndbuf=4096)
    try:
        buffers = [codec.OutputBuffer(index) for index in range(BUFFERS)]
        results = []
        counter = 0
        for step in steps:
            if step[0] == "fanout":
                counter += 1
                codec.fanout(bytes([counter % 256]) * step[2],
                             [buffers[i] for i in sorted(step[1])])
            elif step[0] == "direct":
                buffers[step[1]].direct_fd = pairs[step[1]][0].fileno() if step[2] else -1
            else:
                batch = [buffers[i] for i in step[1]]
                before = {out.owner: out.pending_bytes for out in batch}
                sent, left = codec.write_all(batch)
                # Left: exactly those without a direct_fd or with bytes still queued, in
                # order; sent: what the direct ones' queues lost.
                assert left == [out for out in batch
                                if out.direct_fd < 0 or out.pending_bytes]
                assert sent == sum(before[out.owner] - out.pending_bytes for out in batch)
                assert all(out.pending_bytes == before[out.owner] for out in batch
                           if out.direct_fd < 0)
                results.append(sent)
        received = []
        for out, (writer, reader) in zip(buffers, pairs):
            data = bytearray()
            reader.setblocking(False)
            while out.pending_bytes:        # the owner's flush(), until everything is out
                out.write_to(writer.fileno())
                try:
                    data += reader.recv(1 << 20)
                except BlockingIOError:
                    pass
            writer.close()
            reader.settimeout(10)
            while chunk := reader.recv(1 << 20):
                data += chunk
            received.append(bytes(data))
        return results, received
    finally:
        for writer, reader in pairs:
            writer.close()
            reader.close()


@pytest.mark.skipif(codec_c is None, reason="chatcore._speedups is not built")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=30))
def test_write_all_is_the_same_in_both_builds(steps):
    """In both builds write_all leaves exactly the buffers its owners must flush, counts
    what it wrote, and every receiver gets every byte queued for it, in order."""
    py_results, py_received = run_steps(codec_py, steps)
    c_results, c_received = run_steps(codec_c, steps)
    assert py_received == c_received
    assert len(py_results) == len(c_results)
