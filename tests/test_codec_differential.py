"""Differential tests: the compiled hot path must do exactly what the pure-Python one does.

``chatcore._codec_py`` is the specification. Hypothesis drives both implementations with the
same input and compares everything observable: frames, FrameError code and message, what
``read_frames`` and ``next_frame`` return at each step, ``buffered_bytes``, encoded bytes,
``append``/``write_to``/``fanout`` results, ``pending_bytes`` and the bytes that reach the fd.
"""
from __future__ import annotations

import fcntl
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.codec import codec_c, codec_py
from chatcore.errors import FrameError

if codec_c is None and not os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"):
    pytest.skip("chatcore._speedups is not built", allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _extension_built():
    """With CHATCORE_REQUIRE_EXTENSIONS set, a missing extension fails every test here."""
    if codec_c is None:
        pytest.fail("CHATCORE_REQUIRE_EXTENSIONS is set but chatcore._speedups is not built",
                    pytrace=False)

IMPLEMENTATIONS = (codec_py, codec_c)
SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])


def outcome(call, *args):
    """What a call did, comparable across implementations: ("ok", value) or the error."""
    try:
        return ("ok", call(*args))
    except FrameError as exc:
        return ("FrameError", exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - any other error must match by type and text
        return (type(exc).__name__, str(exc))


def both(run):
    """``run(impl)`` for each implementation; asserts the results are equal, returns one."""
    expected, actual = (run(impl) for impl in IMPLEMENTATIONS)
    assert actual == expected
    return expected

# ---------------------------------------------------------------------------- decode ----


frames_st = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1),
                               st.binary(max_size=300)), max_size=20)


def split(data, cuts):
    """``data`` cut at the given positions (each taken modulo len + 1)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def decode_trace(impl, chunks, limit, modes, calls_after=2):
    """Feed chunks one by one, draining after each with next_frame or read_frames."""
    decoder = impl.FrameDecoder(limit)
    trace = []
    broken = False
    for i, chunk in enumerate(chunks):
        decoder.receive_data(chunk)
        if modes[i % len(modes)]:
            result = outcome(decoder.read_frames)
            trace.append(result)
        else:
            while True:
                result = outcome(decoder.next_frame)
                trace.append(result)
                if result[0] != "ok" or result[1] is None:
                    break
        broken |= result[0] == "FrameError"
        trace.append(("buffered", decoder.buffered_bytes))
        # Memory differs in detail (a bytearray against a malloc'd buffer); its bounds do
        # not: nothing held once drained, at most 4x the bytes (or 1 KiB) while waiting.
        trace.append(("holds memory", decoder.capacity_bytes > 0))
        if result == ("ok", None) or result == ("ok", []):
            assert decoder.capacity_bytes <= max(4 * decoder.buffered_bytes, 1024)
    for _ in range(calls_after):                       # sticky errors, or quiet None / []
        trace.append(outcome(decoder.next_frame))
        trace.append(outcome(decoder.read_frames))
    return trace


@SETTINGS
@given(frames=frames_st, cuts=st.lists(st.integers(0, 10**6), max_size=30),
       modes=st.lists(st.booleans(), min_size=1, max_size=5),
       limit=st.one_of(st.just(65536), st.integers(5, 400)))
def test_frames_split_anywhere(frames, cuts, modes, limit):
    stream = b"".join(codec_py.encode_frame(*f) for f in frames)
    trace = both(lambda impl: decode_trace(impl, split(stream, cuts), limit, modes))
    if limit == 65536:
        got = []
        for kind, value in trace:
            if kind == "ok" and value:
                got += value if isinstance(value, list) else [value]
        assert got == frames


garbage_piece = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda t, r, p: codec_py.encode_frame(t, r, p),
              st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=60)),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.integers(0, 12).map(lambda n: n.to_bytes(4, "big")),
)


@SETTINGS
@given(pieces=st.lists(garbage_piece, max_size=15),
       cuts=st.lists(st.integers(0, 10**6), max_size=20),
       modes=st.lists(st.booleans(), min_size=1, max_size=4),
       limit=st.integers(5, 120))
def test_garbage_gives_identical_frames_and_errors(pieces, cuts, modes, limit):
    stream = b"".join(pieces)
    both(lambda impl: decode_trace(impl, split(stream, cuts), limit, modes))


@SETTINGS
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
       step=st.integers(1, 9000))
def test_large_frames_slowly(sizes, step):
    """Frames of a few KiB fed in arbitrary steps, so the compiled buffer grows and compacts."""
    stream = b"".join(codec_py.encode_frame(1, n, bytes([n % 251]) * n) for n in sizes)
    chunks = [stream[i:i + step] for i in range(0, len(stream), step)]
    both(lambda impl: decode_trace(impl, chunks, 65536, [False, True]))


@SETTINGS
@given(limit=st.one_of(st.integers(-3, 10), st.integers(2**31, 2**70),
                       st.floats(allow_nan=False), st.none(), st.booleans()))
def test_max_frame_bytes_validation(limit):
    def run(impl):
        made = outcome(impl.FrameDecoder, limit)
        if made[0] != "ok":
            return made
        return made[1].max_frame_bytes
    both(run)

# ---------------------------------------------------------------------------- encode ----


payload_st = st.one_of(st.binary(max_size=100), st.binary(max_size=100).map(bytearray),
                       st.binary(max_size=100).map(memoryview), st.text(max_size=5),
                       st.none())
int_st = st.one_of(st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(),
                   st.booleans(), st.floats(allow_nan=False))


@SETTINGS
@given(msg_type=int_st, request_id=int_st, payload=payload_st)
def test_encode_frame_identical(msg_type, request_id, payload):
    both(lambda impl: outcome(impl.encode_frame, msg_type, request_id, payload))


@SETTINGS
@given(msg_type=st.integers(0, 255), request_id=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=2000))
def test_encode_frame_valid(msg_type, request_id, payload):
    data = both(lambda impl: impl.encode_frame(msg_type, request_id, payload))
    assert type(data) is bytes
    assert len(data) == 9 + len(payload)

# ----------------------------------------------------------------------- output buffer ----

PIPE_BYTES = 4096          # a small pipe, so writes are often partial or refused

# Sizes up to twice the pipe: hypothesis favours small data, so some come as runs of a byte.
data_st = st.one_of(st.binary(max_size=100), st.binary(max_size=50).map(bytearray),
                    st.builds(lambda size, byte: bytes([byte]) * size,
                              st.integers(0, 2 * PIPE_BYTES), st.integers(0, 255)))
op_st = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 2), data_st),
    st.tuples(st.just("fanout"), st.lists(st.integers(0, 2), max_size=4), data_st),
    st.tuples(st.just("write"), st.integers(0, 2), st.none()),
    st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 9000)),
    st.tuples(st.just("close"), st.integers(0, 2), st.none()),
    # What a TLS writer does: peek, write elsewhere, advance (by all, part, or too much).
    st.tuples(st.just("peek"), st.integers(0, 2),
              st.one_of(st.integers(-2, 9000), st.integers(2**62, 2**70), st.floats(0, 9))),
    st.tuples(st.just("advance"), st.integers(0, 2), st.integers(-2, 9000)),
    st.tuples(st.just("take"), st.integers(0, 2), st.integers(0, 9000)),
)


def output_trace(impl, ops, chunk_count):
    """Run ops on three buffers, each writing to its own non-blocking pipe."""
    pipes = []
    try:
        for _ in range(3):
            read_fd, write_fd = os.pipe()
            pipes.append((read_fd, write_fd))
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            os.set_blocking(write_fd, False)
            os.set_blocking(read_fd, False)
        buffers = [impl.OutputBuffer(owner=i) for i in range(3)]
        received = [bytearray() for _ in range(3)]
        trace = []
        for i in range(chunk_count):               # many tiny chunks: more than IOV_MAX
            buffers[0].append(i.to_bytes(2, "big"))
        for op, target, arg in ops:
            if op == "append":
                trace.append(outcome(buffers[target].append, arg))
            elif op == "fanout":
                result = outcome(impl.fanout, arg, [buffers[t] for t in target])
                if result[0] == "ok":
                    result = ("ok", [buf.owner for buf in result[1]])
                trace.append(result)
            elif op == "write":
                trace.append(outcome(buffers[target].write_to, pipes[target][1]))
            elif op in ("peek", "advance"):
                trace.append(outcome(getattr(buffers[target], op), arg))
            elif op == "take":
                taken = buffers[target].peek(arg)
                buffers[target].advance(len(taken))
                received[target] += taken
                trace.append(len(taken))
            elif op == "read":
                try:
                    received[target] += os.read(pipes[target][0], arg)
                except BlockingIOError:
                    pass
            else:
                buffers[target].close()
            trace.append([(b.pending_bytes, len(b), b.closed) for b in buffers])
        for target in range(3):                    # flush what is left
            for _ in range(10_000):                # bounded: a bug must not hang the test
                if buffers[target].closed or not buffers[target].pending_bytes:
                    break
                trace.append(outcome(buffers[target].write_to, pipes[target][1]))
                if trace[-1][0] != "ok":
                    break
                try:
                    received[target] += os.read(pipes[target][0], 1 << 16)
                except BlockingIOError:
                    pass
            try:
                received[target] += os.read(pipes[target][0], 1 << 16)
            except BlockingIOError:
                pass
        return trace, [bytes(r) for r in received]
    finally:
        for read_fd, write_fd in pipes:
            os.close(read_fd)
            os.close(write_fd)


@SETTINGS
@given(ops=st.lists(op_st, max_size=40), chunk_count=st.sampled_from([0, 0, 5, 1500]))
def test_output_buffers_identical(ops, chunk_count):
    both(lambda impl: output_trace(impl, ops, chunk_count))


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=5000), max_size=30))
def test_write_everything_in_order(chunks):
    """Through a pipe with a reader keeping up: the bytes out are exactly the bytes in."""
    ops = [("append", 0, c) for c in chunks] + [("write", 0, None), ("read", 0, 9000)] * 40
    trace, received = both(lambda impl: output_trace(impl, ops, 0))
    assert received[0] == b"".join(chunks)


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=5000), max_size=30),
       takes=st.lists(st.integers(1, 7000), min_size=1, max_size=8))
def test_peek_and_advance_take_everything_in_order(chunks, takes):
    """Writes and TLS-style takes interleaved: the bytes out are exactly the bytes in."""
    ops = [("append", 0, c) for c in chunks]
    for i in range(40):
        ops += [("take", 0, takes[i % len(takes)]), ("write", 0, None), ("read", 0, 9000)]
    trace, received = both(lambda impl: output_trace(impl, ops, 0))
    assert received[0] == b"".join(chunks)
