"""Output buffers that share chunks, written one after another, over real sockets.

The compiled ``write_to`` copies small chunks into one scratch buffer and, when the next buffer
written starts with the same chunks (the members of a room), leaves the copies there instead
of making them again. Whatever the order of appends, fan-outs, partial writes and frees, every
receiver must get exactly the bytes queued for it, on both builds.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.flush_fakes import tcp_pairs

RECEIVERS = 4


def drain(reader) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = reader.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def write_all(buffers, pairs, received, lengths) -> None:
    """Write every buffer until empty, then read each receiver up to its expected length."""
    for index, out in enumerate(buffers):
        writer, reader = pairs[index]
        while out.pending_bytes:
            out.write_to(writer.fileno())
            received[index] += drain(reader)
    for index in range(len(buffers)):
        reader = pairs[index][1]
        reader.settimeout(10)
        while len(received[index]) < lengths[index]:
            chunk = reader.recv(1 << 20)
            assert chunk, "closed early"
            received[index] += chunk
        reader.setblocking(False)
        received[index] += drain(reader)       # nothing more than expected


@pytest.fixture
def pairs():
    made = tcp_pairs(RECEIVERS, sndbuf=8192)
    yield made
    for writer, reader in made:
        writer.close()
        reader.close()


def test_room_members_written_in_turn_each_get_every_frame(codec, pairs):
    buffers = [codec.OutputBuffer(index) for index in range(RECEIVERS)]
    frames = [bytes([65 + i % 26]) * (100 + i) for i in range(300)]
    for frame in frames:
        codec.fanout(frame, buffers)
    received = [bytearray() for _ in buffers]
    write_all(buffers, pairs, received, [sum(map(len, frames))] * RECEIVERS)
    assert all(bytes(got) == b"".join(frames) for got in received)


def test_a_member_with_one_more_frame_first_gets_its_own_bytes(codec, pairs):
    buffers = [codec.OutputBuffer(index) for index in range(RECEIVERS)]
    frames = [bytes([97 + i % 26]) * 150 for i in range(50)]
    buffers[2].append(b"ack!" * 3)          # the sender's own Ack, ahead of the room's frames
    for frame in frames:
        codec.fanout(frame, buffers)
    received = [bytearray() for _ in buffers]
    lengths = [150 * 50 + (12 if index == 2 else 0) for index in range(RECEIVERS)]
    write_all(buffers, pairs, received, lengths)
    for index, got in enumerate(received):
        head = b"ack!" * 3 if index == 2 else b""
        assert bytes(got) == head + b"".join(frames)


@pytest.mark.parametrize("advanced_first", [True, False])
def test_a_member_part_way_into_the_first_frame_gets_the_rest_of_it(codec, pairs,
                                                                    advanced_first):
    """The same first chunk, from another offset, is not the copy already in scratch."""
    buffers = [codec.OutputBuffer(index) for index in range(2)]
    frames = [bytes(range(200)), b"y" * 150, b"z" * 150]
    for frame in frames:
        codec.fanout(frame, buffers)
    buffers[0].advance(50)                  # as a partial write of 50 bytes would
    order = buffers if advanced_first else buffers[::-1]
    received = [bytearray(), bytearray()]
    write_all(order, pairs, received, [450, 500] if advanced_first else [500, 450])
    if not advanced_first:
        received.reverse()
    assert bytes(received[0]) == b"".join(frames)[50:]
    assert bytes(received[1]) == b"".join(frames)


def test_new_chunks_at_a_freed_chunks_address_are_sent_as_they_are(codec, pairs):
    """What the scratch buffer remembers is the chunk itself, not just where it lay."""
    writer, reader = pairs[0]
    for round_number in range(40):
        out = codec.OutputBuffer()
        # Fresh objects of the same size each round: the allocator reuses the addresses of
        # the last round's, which are gone once written and dropped.
        chunks = [bytes([round_number % 256]) * 120 for _ in range(8)]
        for chunk in chunks:
            out.append(chunk)
        del chunks                          # bytes are freed here: no cycles to collect
        expected = bytes([round_number % 256]) * 960
        got = bytearray()
        while out.pending_bytes:
            out.write_to(writer.fileno())
            got += drain(reader)
        reader.settimeout(10)
        while len(got) < len(expected):
            got += reader.recv(1 << 16)
        reader.setblocking(False)
        assert bytes(got) == expected


SMALL = st.integers(1, 300)
LARGE = st.integers(4090, 9000)       # around COALESCE_MAX_CHUNK_BYTES: copied or not
OPERATION = st.one_of(
    st.tuples(st.just("fanout"), st.one_of(SMALL, LARGE), st.sets(st.integers(0, RECEIVERS - 1),
                                                                   min_size=1)),
    st.tuples(st.just("append"), st.one_of(SMALL, LARGE), st.integers(0, RECEIVERS - 1)),
    st.tuples(st.just("write"), st.integers(0, RECEIVERS - 1), st.booleans()),
    st.tuples(st.just("advance"), st.integers(0, RECEIVERS - 1), st.integers(1, 400)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATION, max_size=80))
def test_any_mix_of_shared_and_own_chunks_and_partial_writes(codec, pairs, operations):
    buffers = [codec.OutputBuffer(index) for index in range(RECEIVERS)]
    expected = [bytearray() for _ in buffers]
    received = [bytearray() for _ in buffers]
    sent = [0] * RECEIVERS
    for number, operation in enumerate(operations):
        kind = operation[0]
        if kind == "write":
            _, index, read_after = operation
            sent[index] += buffers[index].write_to(pairs[index][0].fileno())
            if read_after:
                received[index] += drain(pairs[index][1])
            continue
        if kind == "advance":               # what a partial write leaves, without the write
            _, index, count = operation
            count = min(count, buffers[index].pending_bytes)
            buffers[index].advance(count)
            del expected[index][sent[index]:sent[index] + count]
            continue
        _, size, who = operation
        chunk = bytes([number % 256]) * size
        if kind == "fanout":
            members = [buffers[index] for index in sorted(who)]
            codec.fanout(chunk, members)
            for index in who:
                expected[index] += chunk
        else:
            buffers[who].append(chunk)
            expected[who] += chunk
    write_all(buffers, pairs, received, [len(want) for want in expected])
    assert [bytes(got) for got in received] == [bytes(want) for want in expected]
