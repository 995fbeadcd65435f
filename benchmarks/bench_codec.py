"""Microbenchmarks of the hot path, both implementations side by side (docs/hotpath.md).

Not collected by the test run; ask for it:

    python -m pytest benchmarks/bench_codec.py --benchmark-columns=median,iqr,rounds

``--benchmark-disable`` runs each once as a plain test, so they never rot. Groups: decode
(``next_frame`` per frame, and ``read_frames`` in bulk), encode, and fanout to 1/100/1000
buffers. ``extra_info`` names the implementation and the work per round, plus the derived
rate (frames per second for decode, seconds per message for fanout).
"""
from __future__ import annotations

import pytest

from chatcore.codec import codec_c, codec_py

IMPLEMENTATIONS = [
    pytest.param(codec_py, id="python"),
    pytest.param(codec_c, id="cython",
                 marks=pytest.mark.skipif(codec_c is None, reason="extension not built")),
]

PAYLOAD_BYTES = 100
FRAMES_PER_ROUND = 1000            # one decode round: a 109 KB read holding this many frames
APPENDS_PER_ROUND = 10_000         # one fanout round: about this many appends in total
FANOUT_ROUNDS = 300


def _name(impl):
    return "cython" if impl is codec_c else "python"


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


@pytest.mark.parametrize("method", ["next_frame", "read_frames"])
def test_decode(benchmark, impl, method):
    """receive_data of one read holding many small frames, then every frame out of it."""
    payload = bytes(range(PAYLOAD_BYTES))
    stream = b"".join(codec_py.encode_frame(0x22, i, payload) for i in range(FRAMES_PER_ROUND))
    decoder = impl.FrameDecoder()

    if method == "read_frames":
        def decode():
            decoder.receive_data(stream)
            return decoder.read_frames()
    else:
        def decode():
            decoder.receive_data(stream)
            next_frame = decoder.next_frame
            frames = []
            append = frames.append
            while (frame := next_frame()) is not None:
                append(frame)
            return frames

    benchmark.group = "decode"
    benchmark.extra_info.update(implementation=_name(impl), method=method,
                                frames_per_round=FRAMES_PER_ROUND,
                                payload_bytes=PAYLOAD_BYTES)
    frames = benchmark(decode)
    assert len(frames) == FRAMES_PER_ROUND
    assert frames[-1] == (0x22, FRAMES_PER_ROUND - 1, payload)
    assert decoder.buffered_bytes == 0
    if benchmark.stats:                            # None under --benchmark-disable
        benchmark.extra_info["frames_per_second"] = \
            FRAMES_PER_ROUND / benchmark.stats.stats.median


def test_encode(benchmark, impl):
    payload = bytes(PAYLOAD_BYTES)
    encode_frame = impl.encode_frame
    benchmark.group = "encode"
    benchmark.extra_info.update(implementation=_name(impl), payload_bytes=PAYLOAD_BYTES)
    frame = benchmark(encode_frame, 0x22, 123456, payload)
    assert frame == codec_py.encode_frame(0x22, 123456, payload)


@pytest.mark.parametrize("recipients", [1, 100, 1000])
def test_fanout(benchmark, impl, recipients):
    """Append-only: each round queues ``messages`` frames on fresh, empty buffers.

    Building the buffers happens in the untimed setup, so clearing costs nothing here; the
    first message of a round makes every buffer pending, the rest find them busy.
    """
    message = codec_py.encode_frame(0x22, 1, bytes(PAYLOAD_BYTES))
    messages = max(1, APPENDS_PER_ROUND // recipients)
    fanout = impl.fanout

    def setup():
        return ([impl.OutputBuffer(owner=i) for i in range(recipients)],), {}

    def run(buffers):
        became = fanout(message, buffers)
        for _ in range(messages - 1):
            fanout(message, buffers)
        return became, buffers

    benchmark.group = f"fanout to {recipients}"
    benchmark.extra_info.update(implementation=_name(impl), recipients=recipients,
                                messages_per_round=messages, message_bytes=len(message))
    became, buffers = benchmark.pedantic(run, setup=setup, rounds=FANOUT_ROUNDS,
                                         warmup_rounds=3)
    assert len(became) == recipients
    assert buffers[-1].pending_bytes == messages * len(message)
    if benchmark.stats:
        benchmark.extra_info["seconds_per_fanout"] = benchmark.stats.stats.median / messages


@pytest.mark.parametrize("text_bytes", [100, 8000])
@pytest.mark.parametrize("alphabet", ["ascii", "bmp"])
def test_find_forbidden(benchmark, impl, text_bytes, alphabet):
    """The text rule's scan of one clean chat text (every SendRoom/SendDirect pays it)."""
    unit = "x" * 59 + "\n" if alphabet == "ascii" else "\u4e2d" * 19 + "\n"   # 60 B a line
    text = (unit * (text_bytes // 60 + 1)).encode()[:text_bytes].decode("utf-8", "ignore")
    benchmark.group = f"text rule, {text_bytes} B {alphabet}"
    benchmark.extra_info.update(implementation=_name(impl), text_bytes=text_bytes,
                                alphabet=alphabet, characters=len(text))
    assert benchmark(impl.find_forbidden, text) == -1
