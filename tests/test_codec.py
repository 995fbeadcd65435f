"""The hot path, run against both implementations (the ``codec`` fixture in conftest.py).

Decoding follows h11's ``tests/test_io.py``: every input is fed whole, one byte at a time and
split at every point, and must give the same frames. Output buffers are tested over a real
``socketpair`` whose kernel buffer is made small so writes are partial.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

import pytest

import chatcore.codec
from chatcore.errors import ErrorCode, FrameError

# --------------------------------------------------------------------------- the chooser ----


def test_extension_loaded_when_required():
    """CI sets CHATCORE_REQUIRE_EXTENSIONS=1: a silently missing extension is a failure."""
    if not os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"):
        pytest.skip("CHATCORE_REQUIRE_EXTENSIONS is not set")
    if os.environ.get("CHATCORE_NO_EXTENSIONS"):
        assert chatcore.codec.IMPLEMENTATION == "python"
        return
    assert chatcore.codec.codec_c is not None, "chatcore._speedups was not built"
    assert chatcore.codec.IMPLEMENTATION == "cython"


def test_chooser_exports_the_chosen_implementation():
    impl = chatcore.codec.codec_c if chatcore.codec.IMPLEMENTATION == "cython" \
        else chatcore.codec.codec_py
    assert chatcore.codec.FrameDecoder is impl.FrameDecoder
    assert chatcore.codec.OutputBuffer is impl.OutputBuffer
    assert chatcore.codec.encode_frame is impl.encode_frame
    assert chatcore.codec.fanout is impl.fanout


def test_constants(codec):
    assert codec.HEADER_BYTES == 9
    assert codec.MIN_FRAME_LENGTH == 5
    assert codec.IOV_MAX == 1024

# ---------------------------------------------------------------------------- encode ----


def test_encode_layout(codec):
    assert codec.encode_frame(0x22, 0x01020304, b"hi") == \
        b"\x00\x00\x00\x07" b"\x22" b"\x01\x02\x03\x04" b"hi"
    assert codec.encode_frame(0x31, 7) == b"\x00\x00\x00\x05\x31\x00\x00\x00\x07"
    assert codec.encode_frame(msg_type=255, request_id=2**32 - 1, payload=b"") == \
        b"\x00\x00\x00\x05\xff\xff\xff\xff\xff"


def test_encode_accepts_bytes_likes(codec):
    expected = codec.encode_frame(1, 2, b"abc")
    assert codec.encode_frame(1, 2, bytearray(b"abc")) == expected
    assert codec.encode_frame(1, 2, memoryview(b"abc")) == expected
    assert codec.encode_frame(True, 2, b"abc") == codec.encode_frame(1, 2, b"abc")
    assert type(codec.encode_frame(1, 2, bytearray(b"abc"))) is bytes


@pytest.mark.parametrize("args, error", [
    ((256, 0, b""), struct.error),
    ((-1, 0, b""), struct.error),
    ((0, 2**32, b""), struct.error),
    ((0, -1, b""), struct.error),
    ((1.0, 0, b""), struct.error),
    ((0, 0, "text"), TypeError),
    ((0, 0, None), TypeError),
])
def test_encode_rejects(codec, args, error):
    with pytest.raises(error):
        codec.encode_frame(*args)

# ---------------------------------------------------------------------------- decode ----

FRAMES = [
    (0x01, 0, b""),
    (0x12, 1, b"x"),
    (0x22, 2**32 - 1, bytes(range(256)) * 3),
    (0xFF, 12345, b"\x00" * 9),
    (0x80, 7, b"tail"),
]
STREAM = b"".join(chatcore.codec.codec_py.encode_frame(*f) for f in FRAMES)


def drain(decoder, bulk, frames=None):
    """Every complete frame, appended to ``frames`` as it comes (kept if FrameError follows)."""
    frames = [] if frames is None else frames
    if bulk:
        frames += decoder.read_frames()
        return frames
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def feed(decoder, chunks, bulk=False):
    frames = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        frames += drain(decoder, bulk)
    return frames


@pytest.fixture(params=[False, True], ids=["next_frame", "read_frames"])
def bulk(request):
    return request.param


def test_round_trip_all_at_once(codec, bulk):
    decoder = codec.FrameDecoder()
    assert feed(decoder, [STREAM], bulk) == FRAMES
    assert decoder.buffered_bytes == 0
    assert decoder.next_frame() is None
    assert decoder.read_frames() == []


def test_round_trip_one_byte_at_a_time(codec, bulk):
    decoder = codec.FrameDecoder()
    chunks = [STREAM[i:i + 1] for i in range(len(STREAM))]
    assert feed(decoder, chunks, bulk) == FRAMES
    assert decoder.buffered_bytes == 0


def test_round_trip_split_at_every_point(codec, bulk):
    for cut in range(len(STREAM) + 1):
        decoder = codec.FrameDecoder()
        assert feed(decoder, [STREAM[:cut], STREAM[cut:]], bulk) == FRAMES, cut


def test_frame_types(codec):
    decoder = codec.FrameDecoder()
    decoder.receive_data(codec.encode_frame(3, 4, b"abc"))
    frame = decoder.next_frame()
    assert type(frame) is tuple
    assert [type(x) for x in frame] == [int, int, bytes]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_receive_data_takes_bytes_likes(codec, kind):
    decoder = codec.FrameDecoder()
    decoder.receive_data(kind(STREAM[:10]))
    decoder.receive_data(kind(b""))
    decoder.receive_data(kind(STREAM[10:]))
    assert drain(decoder, False) == FRAMES


def test_receive_data_rejects_str(codec):
    with pytest.raises(TypeError):
        codec.FrameDecoder().receive_data("text")


def test_buffered_bytes(codec):
    decoder = codec.FrameDecoder()
    frame = codec.encode_frame(1, 1, b"payload")
    decoder.receive_data(frame + frame[:3])
    assert decoder.buffered_bytes == len(frame) + 3
    assert decoder.next_frame() == (1, 1, b"payload")
    assert decoder.buffered_bytes == 3
    assert decoder.next_frame() is None
    decoder.receive_data(frame[3:])
    assert decoder.read_frames() == [(1, 1, b"payload")]
    assert decoder.buffered_bytes == 0


def test_slow_large_frame_is_linear(codec):
    """A 4 MiB frame arriving 4 KiB at a time: quadratic copying would take minutes."""
    payload = os.urandom(4 << 20)
    data = codec.encode_frame(9, 9, payload)
    decoder = codec.FrameDecoder(max_frame_bytes=8 << 20)
    for i in range(0, len(data) - 4096, 4096):
        decoder.receive_data(data[i:i + 4096])
        assert decoder.next_frame() is None
    decoder.receive_data(data[i + 4096:])
    assert decoder.next_frame() == (9, 9, payload)


def test_many_frames_buffered_before_reading_is_linear(codec):
    """50 000 small frames received one by one, none read yet: the buffer behind the first
    (finished) frame keeps doubling; an exact fit per append would copy ~20 GB."""
    frame = codec.encode_frame(1, 2, b"x" * 10)
    decoder = codec.FrameDecoder()
    for _ in range(50_000):
        decoder.receive_data(frame)
    assert decoder.read_frames() == [(1, 2, b"x" * 10)] * 50_000


def test_buffer_compaction_keeps_partial_frames(codec):
    """Many frames consumed ahead of a partial one, so the buffer moves the partial bytes."""
    frame = codec.encode_frame(1, 2, b"z" * 1000)
    decoder = codec.FrameDecoder()
    got = []
    for _ in range(300):
        decoder.receive_data(frame * 3 + frame[:500])
        got += decoder.read_frames()
        decoder.receive_data(frame[500:])
    got += decoder.read_frames()
    assert got == [(1, 2, b"z" * 1000)] * 1200
    assert decoder.buffered_bytes == 0

# ------------------------------------------------------------------------------ memory ----


def test_a_declared_length_reserves_nothing_up_front(codec):
    """A frame announcing 64 KiB costs what has arrived of it, not what it announces."""
    decoder = codec.FrameDecoder()
    decoder.receive_data(struct.pack(">IBI", 65536, 0x22, 1) + b"x" * 100)
    assert decoder.next_frame() is None
    assert 0 < decoder.capacity_bytes <= 1024


def test_a_slow_frame_costs_about_what_arrived(codec):
    """Growing with the bytes: never more than twice what is buffered while it waits."""
    data = codec.encode_frame(9, 9, os.urandom(200_000))
    decoder = codec.FrameDecoder(max_frame_bytes=1 << 20)
    for i in range(0, len(data) - 1000, 1000):
        decoder.receive_data(data[i:i + 1000])
        assert decoder.next_frame() is None
        assert decoder.capacity_bytes <= max(2 * decoder.buffered_bytes, 1024)
    decoder.receive_data(data[i + 1000:])
    assert decoder.next_frame()[2] == data[9:]
    assert decoder.capacity_bytes == 0


@pytest.mark.parametrize("bulk", [False, True])
def test_a_waiting_remnant_does_not_pin_a_large_buffer(codec, bulk):
    """Many frames handled in one read, a few bytes of the next left: the buffer that held
    them all is cut down to the remnant while it waits (64 KiB read, 10 bytes held)."""
    frame = codec.encode_frame(1, 2, b"z" * 1000)
    decoder = codec.FrameDecoder()
    decoder.receive_data(frame * 64 + frame[:10])
    if bulk:
        assert len(decoder.read_frames()) == 64
    else:
        for _ in range(64):
            assert decoder.next_frame() == (1, 2, b"z" * 1000)
        assert decoder.next_frame() is None
    assert decoder.buffered_bytes == 10
    assert decoder.capacity_bytes <= 1024
    decoder.receive_data(frame[10:])
    assert decoder.next_frame() == (1, 2, b"z" * 1000)
    assert decoder.capacity_bytes == 0


# ------------------------------------------------------------------------ bad lengths ----


def prefix(length):
    return length.to_bytes(4, "big")


@pytest.mark.parametrize("length", [0, 1, 4])
def test_undersize_length(codec, bulk, length):
    decoder = codec.FrameDecoder()
    decoder.receive_data(prefix(length))
    with pytest.raises(FrameError) as info:
        drain(decoder, bulk)
    assert info.value.code is ErrorCode.BAD_FRAME
    assert info.value.message == f"frame length {length} is below the minimum of 5"
    assert str(info.value) == info.value.message


@pytest.mark.parametrize("limit, length", [(5, 6), (100, 101), (65536, 2**32 - 1)])
def test_oversize_length_refused_from_the_prefix_alone(codec, bulk, limit, length):
    decoder = codec.FrameDecoder(max_frame_bytes=limit)
    decoder.receive_data(prefix(length))        # the body never needs to arrive
    with pytest.raises(FrameError) as info:
        drain(decoder, bulk)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert info.value.message == \
        f"frame length {length} exceeds the limit of {limit} bytes"


def test_length_at_the_limit_is_accepted(codec):
    decoder = codec.FrameDecoder(max_frame_bytes=105)
    decoder.receive_data(codec.encode_frame(1, 1, b"a" * 100))
    assert decoder.next_frame() == (1, 1, b"a" * 100)
    decoder.receive_data(codec.encode_frame(1, 1, b"a" * 101))
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_incomplete_prefix_is_not_judged(codec):
    decoder = codec.FrameDecoder()
    decoder.receive_data(b"\xff\xff\xff")
    assert decoder.next_frame() is None
    assert decoder.read_frames() == []


def test_error_is_sticky_and_good_frames_come_first(codec):
    good = codec.encode_frame(1, 1, b"a") + codec.encode_frame(2, 2, b"b")
    decoder = codec.FrameDecoder(max_frame_bytes=10)
    decoder.receive_data(good + prefix(11) + codec.encode_frame(3, 3))
    assert decoder.next_frame() == (1, 1, b"a")
    assert decoder.next_frame() == (2, 2, b"b")
    errors = []
    for call in [decoder.next_frame, decoder.next_frame, decoder.read_frames]:
        with pytest.raises(FrameError) as info:
            call()
        errors.append(info.value)
    assert {(e.code, e.message) for e in errors} == \
        {(ErrorCode.FRAME_TOO_LARGE, "frame length 11 exceeds the limit of 10 bytes")}
    decoder.receive_data(codec.encode_frame(4, 4))    # still buffered, still broken
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_read_frames_returns_good_frames_then_raises(codec):
    decoder = codec.FrameDecoder()
    decoder.receive_data(codec.encode_frame(1, 1) + codec.encode_frame(2, 2) + prefix(3))
    assert decoder.read_frames() == [(1, 1, b""), (2, 2, b"")]
    assert decoder.buffered_bytes == 4
    with pytest.raises(FrameError) as info:
        decoder.read_frames()
    assert info.value.code is ErrorCode.BAD_FRAME
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_bad_header_split_at_every_point(codec, bulk):
    stream = STREAM + prefix(70000) + b"junk"
    for cut in range(len(stream) + 1):
        decoder = codec.FrameDecoder()
        frames = []
        with pytest.raises(FrameError) as info:
            for chunk in [stream[:cut], stream[cut:], b""]:
                decoder.receive_data(chunk)
                drain(decoder, bulk, frames)
        assert frames == FRAMES, cut
        assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_max_frame_bytes(codec):
    decoder = codec.FrameDecoder()
    assert decoder.max_frame_bytes == 65536
    decoder.max_frame_bytes = 5
    assert decoder.max_frame_bytes == 5
    for bad in [4, 0, -1]:
        with pytest.raises(ValueError):
            codec.FrameDecoder(bad)
        with pytest.raises(ValueError):
            decoder.max_frame_bytes = bad
    with pytest.raises(TypeError):
        codec.FrameDecoder(100.0)
    assert decoder.max_frame_bytes == 5
    huge = codec.FrameDecoder(2**70)            # no limit below the u32 length
    huge.receive_data(prefix(2**32 - 1))
    assert huge.next_frame() is None

# ----------------------------------------------------------------------- output buffer ----


@pytest.fixture
def pair():
    """A connected socketpair; [0] is non-blocking with small kernel buffers."""
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield a, b
    a.close()
    b.close()


def read_available(sock):
    sock.setblocking(False)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def test_append_accounting(codec):
    out = codec.OutputBuffer(owner="conn")
    assert out.owner == "conn"
    assert (len(out), out.pending_bytes, out.closed) == (0, 0, False)
    assert out.append(b"") is False
    assert out.append(b"abc") is True
    assert out.append(b"de") is False
    assert (len(out), out.pending_bytes) == (5, 5)
    out.owner = None
    assert out.owner is None


def test_append_copies_mutable_data(codec, pair):
    out = codec.OutputBuffer()
    data = bytearray(b"hello")
    out.append(data)
    data[:] = b"HELLO, WORLD"
    out.append(memoryview(b"!!"))
    assert out.pending_bytes == 7
    assert out.write_to(pair[0].fileno()) == 7
    assert pair[1].recv(100) == b"hello!!"


def test_append_rejects_non_bytes(codec):
    out = codec.OutputBuffer()
    for bad in ["text", None, 5]:
        with pytest.raises(TypeError):
            out.append(bad)
    assert out.pending_bytes == 0


def test_peek_leaves_bytes_queued_until_advance(codec, pair):
    out = codec.OutputBuffer()
    for piece in (b"hello ", b"big ", b"world"):
        out.append(piece)
    assert out.peek(8) == b"hello bi"
    assert out.peek(100) == b"hello big world"
    assert out.peek(0) == b""
    assert out.pending_bytes == 15               # peeking takes nothing
    out.advance(8)
    assert (out.pending_bytes, out.peek(100)) == (7, b"g world")
    assert out.write_to(pair[0].fileno()) == 7   # writes resume where advance stopped
    assert pair[1].recv(100) == b"g world"
    with pytest.raises(ValueError, match="cannot advance 1 bytes: 0 are queued"):
        out.advance(1)
    with pytest.raises(ValueError):
        out.peek(-1)


def test_write_to_with_nothing_pending(codec):
    assert codec.OutputBuffer().write_to(-1) == 0      # no syscall, so no EBADF


def test_partial_writes_keep_order_and_count(codec, pair):
    a, b = pair
    rng = __import__("random").Random(3)
    chunks = [os.urandom(rng.randrange(1, 3000)) for _ in range(400)]
    expected = b"".join(chunks)
    out = codec.OutputBuffer()
    for chunk in chunks:
        out.append(chunk)
    assert out.pending_bytes == len(expected)
    received = bytearray()
    sent = 0
    partial = eagain = False
    while out.pending_bytes:
        before = out.pending_bytes
        written = out.write_to(a.fileno())
        assert 0 <= written <= before
        assert out.pending_bytes == before - written == len(expected) - sent - written
        sent += written
        partial |= 0 < written < before
        if written == 0:
            eagain = True
            received += read_available(b)
    received += read_available(b)
    assert partial and eagain
    assert sent == len(expected)
    assert bytes(received) == expected
    assert out.write_to(a.fileno()) == 0


def test_eagain_returns_zero_and_keeps_everything(codec, pair):
    a, b = pair
    out = codec.OutputBuffer()
    out.append(b"x" * (1 << 20))
    first = out.write_to(a.fileno())
    assert 0 < first < 1 << 20
    assert out.write_to(a.fileno()) == 0
    assert out.pending_bytes == (1 << 20) - first


def test_more_chunks_than_iov_max(codec, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    chunks = [i.to_bytes(2, "big") + b"." for i in range(3 * codec.IOV_MAX + 5)]
    out = codec.OutputBuffer()
    for chunk in chunks:
        out.append(chunk)
    first = out.write_to(a.fileno())
    assert first == 3 * len(chunks)             # small chunks are copied into one iovec
    received = read_available(b)
    while out.pending_bytes:
        assert out.write_to(a.fileno()) > 0
        received += read_available(b)
    assert received == b"".join(chunks)


def test_offset_into_a_chunk_shared_with_other_buffers(codec, pair):
    a, b = pair
    shared = os.urandom(100_000)
    first, second = codec.OutputBuffer(), codec.OutputBuffer()
    assert codec.fanout(shared, [first, second]) == [first, second]
    written = first.write_to(a.fileno())
    assert 0 < written < len(shared)
    got = read_available(b)
    while first.pending_bytes:
        first.write_to(a.fileno())
        got += read_available(b)
    assert got == shared
    assert second.pending_bytes == len(shared)     # untouched by first's partial writes


def test_write_to_a_tcp_socket_and_a_pipe(codec):
    """The compiled build sends to a socket with sendmsg and falls back to writev for
    anything else: both carry the same bytes, and a pipe with no reader is EPIPE."""
    frames = [bytes([i]) * (50 + i) for i in range(40)] + [b"x" * 9000]
    expected = b"".join(frames)
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    read_end, write_end = os.pipe()
    try:
        for fd, reader in ((peer.fileno(), client), (write_end, None)):
            out = codec.OutputBuffer()
            for frame in frames:
                out.append(frame)
            written = out.write_to(fd)
            assert written == len(expected) and out.pending_bytes == 0
            got = bytearray()
            while len(got) < len(expected):
                got += reader.recv(65536) if reader else os.read(read_end, 65536)
            assert bytes(got) == expected
        os.close(read_end)
        read_end = -1
        out = codec.OutputBuffer()
        out.append(b"lost")
        with pytest.raises(BrokenPipeError):
            out.write_to(write_end)
        assert out.pending_bytes == 4
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        client.close()
        peer.close()


def test_write_to_closed_peer_raises(codec, pair):
    a, b = pair
    out = codec.OutputBuffer()
    out.append(b"hello")
    b.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        out.write_to(a.fileno())
    assert out.pending_bytes == 5


def test_write_to_bad_fd_raises_oserror(codec):
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    out = codec.OutputBuffer()
    out.append(b"data")
    out.append(b"more")
    with pytest.raises(OSError) as info:
        out.write_to(write_end)
    assert info.value.errno == errno.EBADF
    assert type(info.value) is OSError


def test_close(codec, pair):
    out = codec.OutputBuffer()
    out.append(b"abc")
    out.close()
    assert (out.closed, out.pending_bytes, len(out)) == (True, 0, 0)
    assert out.append(b"more") is False
    assert out.pending_bytes == 0
    assert out.write_to(pair[0].fileno()) == 0


def test_fanout(codec):
    idle, busy, closed = codec.OutputBuffer(), codec.OutputBuffer(), codec.OutputBuffer()
    busy.append(b"earlier")
    closed.close()
    assert codec.fanout(b"msg", [idle, busy, closed, idle]) == [idle]
    assert idle.pending_bytes == 6
    assert busy.pending_bytes == 10
    assert closed.pending_bytes == 0
    assert codec.fanout(b"", [codec.OutputBuffer()]) == []
    assert codec.fanout(b"x", []) == []
    fresh = [codec.OutputBuffer() for _ in range(5)]
    assert codec.fanout(bytearray(b"hi"), (buf for buf in fresh)) == fresh
    assert [buf.pending_bytes for buf in fresh] == [2] * 5


def test_fanout_to_many_then_write(codec, pair):
    a, b = pair
    buffers = [codec.OutputBuffer(owner=i) for i in range(1000)]
    for i in range(20):
        became = codec.fanout(codec.encode_frame(1, i, b"m"), buffers[i % 2::2])
        assert len(became) == (500 if i < 2 else 0)
    assert all(buf.pending_bytes == 10 * 10 for buf in buffers)
    buffers[3].write_to(a.fileno())
    assert read_available(b) == b"".join(
        codec.encode_frame(1, i, b"m") for i in range(1, 20, 2))


def test_crossing_the_limit_reports_the_buffer_again(codec):
    buf = codec.OutputBuffer("owner", limit=250)
    assert buf.limit == 250
    assert buf.append(b"x" * 100) is True           # empty before
    assert buf.append(b"x" * 100) is False          # 200: under the limit
    assert buf.append(b"x" * 100) is True           # 300: crossed it
    assert buf.append(b"x" * 100) is False          # already past: reported once
    other = codec.OutputBuffer("other", limit=250)
    other.append(b"y" * 200)
    assert codec.fanout(b"z" * 100, [buf, other]) == [other]
    assert codec.fanout(b"z" * 100, [other]) == []
    no_limit = codec.OutputBuffer()
    no_limit.append(b"x")
    assert no_limit.append(b"x" * 10_000_000) is False


def test_more_large_chunks_than_iov_max_and_mixed_sizes(codec, pair):
    a, b = pair
    a.setblocking(False)
    large = codec.COALESCE_MAX_CHUNK_BYTES + 1
    chunks = [bytes([i % 251]) * (large if i % 3 else 7) for i in range(codec.IOV_MAX + 40)]
    out = codec.OutputBuffer()
    for chunk in chunks:
        out.append(chunk)
    received = b""
    while out.pending_bytes:
        out.write_to(a.fileno())
        received += read_available(b)
    received += read_available(b)
    assert received == b"".join(chunks)


def test_coalescing_stops_at_the_scratch_size(codec, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    chunk = b"s" * codec.COALESCE_MAX_CHUNK_BYTES
    count = codec.SCRATCH_BYTES // len(chunk) + 3       # three past the scratch buffer
    out = codec.OutputBuffer()
    for _ in range(count):
        out.append(chunk)
    assert 0 < out.write_to(a.fileno()) <= count * len(chunk)
    received = read_available(b)
    while out.pending_bytes:
        out.write_to(a.fileno())
        received += read_available(b)
    assert received == chunk * count
