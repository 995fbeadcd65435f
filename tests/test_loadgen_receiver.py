"""The generator's receive loop (``verify.Receiver``): one poll reads every ready socket into
one buffer and verifies its frames; the compiled loop and its pure twin agree on real sockets,
whatever the reads' sizes and wherever the bytes are split. And its send side
(``verify.encode_sends``): the same request bytes from both, which the server accepts."""
from __future__ import annotations

import select
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import _verify_py as verify_py
from benchmarks import verify
from chatcore import events as ev
from chatcore.protocol import encode_event, encode_room_message

IMPLEMENTATIONS = [verify_py] + ([verify.verify_c] if verify.verify_c is not None else [])
SIZE = 40


def room_frame(sender: int, seq: int, age: int = 100) -> bytes:
    return encode_room_message(b"lobby", b"user%d" % sender, seq + 1, 0,
                               verify.stamp(sender, seq, 1_000_000 - age, SIZE))


def irc_line(sender: int, seq: int) -> bytes:
    return b":u%d!u@h PRIVMSG #r :%s\r\n" % (sender, verify.stamp(sender, seq, 5, SIZE))


class Rig:
    """One receiver over socketpairs; ``send`` writes to one and polls until it is drained."""

    def __init__(self, impl, pairs: int = 1, buffer_bytes: int = verify_py.RECV_BYTES,
                 irc: bool = False, budget_bytes: int = verify_py.READ_BUDGET_BYTES):
        self.ep = select.epoll()
        self.tally = impl.Tally(SIZE)
        self.receiver = impl.Receiver(self.ep, buffer_bytes, budget_bytes)
        self.ours, self.theirs, self.streams = [], [], []
        for _ in range(pairs):
            a, b = socket.socketpair()
            a.setblocking(False)
            stream = (impl.IrcStream if irc else impl.Stream)(self.tally)
            self.ep.register(a.fileno(), select.EPOLLIN)
            self.receiver.add(a.fileno(), stream)
            self.ours.append(a)
            self.theirs.append(b)
            self.streams.append(stream)
        self.events: list = []               # (pair, mask, frames, problem) as reported
        self.acks = 0

    def close(self) -> None:
        for s in self.ours + self.theirs:
            s.close()
        self.ep.close()

    def pending(self, k: int) -> int:
        try:
            return len(self.ours[k].recv(1 << 20, socket.MSG_PEEK))
        except BlockingIOError:
            return 0

    def poll(self) -> list:
        got = self.receiver.poll(0)
        index = {s.fileno(): k for k, s in enumerate(self.ours)}
        for fd, mask, frames, problem, now_us in got:
            k = index[fd]
            assert now_us > 0
            self.events.append((k, mask, list(frames),
                                None if problem is None else (type(problem).__name__,
                                                              str(problem))))
            self.acks += self.streams[k].acks
            self.streams[k].acks = 0
        return got

    def send(self, k: int, data: bytes) -> None:
        self.theirs[k].sendall(data)
        while self.pending(k):
            self.poll()
            if self.events and self.events[-1][3] is not None:     # broken: the worker closes
                self.receiver.remove(self.ours[k].fileno())
                self.ep.unregister(self.ours[k].fileno())
                return

    def result(self) -> tuple:
        """What both loops must agree on; latencies only by count (they read the clock)."""
        snap = self.tally.snapshot()
        snap["hist"] = sum(snap["hist"].values())
        return snap, self.events, self.acks, [s.buffered_bytes for s in self.streams]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__)
def impl(request):
    return request.param


def test_only_sockets_with_something_to_act_on_are_reported(impl):
    rig = Rig(impl, pairs=3)
    try:
        rig.send(0, b"".join(room_frame(1, q) for q in range(20)))
        assert rig.events == [] and rig.tally.messages == 20
        rig.send(1, encode_event(ev.Ack(1, 2, request_id=3)) + room_frame(2, 0))
        assert rig.events == [(1, 0, [], None)] and rig.acks == 1
        rig.send(2, encode_event(ev.Ping(42, request_id=7)))
        assert rig.events[-1] == (2, 0, [(0x02, 7, (42).to_bytes(8, "big"))], None)
        assert rig.tally.snapshot()["counts"] == {0xA0: 21, 0x82: 1, 0x02: 1}
    finally:
        rig.close()


def test_a_socket_it_does_not_read_comes_back_as_epoll_gave_it(impl):
    rig = Rig(impl)
    other_a, other_b = socket.socketpair()
    try:
        rig.ep.register(other_a.fileno(), select.EPOLLIN | select.EPOLLOUT)
        other_b.sendall(b"x")
        got = [e for e in rig.receiver.poll(0) if e[0] == other_a.fileno()]
        assert got == [(other_a.fileno(), select.EPOLLIN | select.EPOLLOUT, None, None, 0)]
        assert other_a.recv(10) == b"x"                      # left for the caller to read
        rig.ep.modify(rig.ours[0].fileno(), select.EPOLLIN | select.EPOLLOUT)
        got = {fd: (mask, frames, problem) for fd, mask, frames, problem, _ in
               rig.receiver.poll(0)}
        assert got == {rig.ours[0].fileno(): (select.EPOLLOUT, None, None),   # nothing to read
                       other_a.fileno(): (select.EPOLLOUT, None, None)}
        rig.theirs[0].sendall(room_frame(1, 0))
        got = {fd: (mask, frames, problem) for fd, mask, frames, problem, _ in
               rig.receiver.poll(0)}
        assert got[rig.ours[0].fileno()] == (select.EPOLLOUT, [], None)   # read, and writable
        assert rig.tally.messages == 1
    finally:
        other_a.close()
        other_b.close()
        rig.close()


def test_the_peer_closing_and_a_broken_stream_are_problems(impl):
    rig = Rig(impl, pairs=2)
    try:
        rig.send(0, b"\x00\x00\x00\x01" + b"\x00" * 8)
        assert rig.events[-1][0] == 0 and rig.events[-1][3][0] == "ValueError"
        assert rig.events[-1][2] == []
        rig.theirs[1].close()
        rig.poll()
        assert rig.events[-1][0] == 1 and rig.events[-1][3][0] == "EOFError"
        assert rig.receiver.last_rx_us > 0
    finally:
        rig.close()


def test_a_frame_larger_than_half_the_buffer_is_carried_over_reads(impl):
    rig = Rig(impl, buffer_bytes=64)
    try:
        frames = b"".join(room_frame(s, q) for q in range(10) for s in range(3))
        rig.send(0, frames + encode_event(ev.Ok(request_id=9)) + frames[:50])
        assert rig.tally.messages == 30 and rig.events == [(0, 0, [(0x80, 9, b"")], None)]
        assert rig.streams[0].buffered_bytes == 50
    finally:
        rig.close()


def test_irc_lines_go_through_the_same_loop(impl):
    rig = Rig(impl, irc=True, buffer_bytes=64)
    try:
        rig.send(0, b"".join(irc_line(1, q) for q in range(5)) + b":s PONG s :16\r\n"
                 + b":s 001 me :hi\r\n" + b"x" * 10)
        assert rig.tally.messages == 5 and rig.acks == 16
        assert rig.events[-1][2] == [b":s 001 me :hi"]
        assert rig.streams[0].buffered_bytes == 10
    finally:
        rig.close()


def test_an_endless_irc_line_breaks_the_stream_in_the_loop(impl):
    rig = Rig(impl, irc=True)
    try:
        rig.send(0, b":x PRIVMSG #r :" + b"a" * 70_000)
        assert rig.events[-1][3][0] == "ValueError"
    finally:
        rig.close()


def _native(items) -> bytes:
    parts = []
    for sender, seq, age, kind in items:
        if kind == "room":
            parts.append(room_frame(sender, seq, age))
        elif kind == "ack":
            parts.append(encode_event(ev.Ack(seq, age, request_id=sender)))
        elif kind == "ping":
            parts.append(encode_event(ev.Ping(age, request_id=seq)))
        elif kind == "joined":
            parts.append(encode_event(ev.UserJoined("r", "n%d" % seq)))
        else:                                # damaged: a wrong stamp
            parts.append(encode_room_message(b"r", b"u", 1, 0, b"Z" * SIZE))
    return b"".join(parts)


def _run(impl, data: bytes, cuts, buffer_bytes: int, irc: bool = False,
         budget_bytes: int = verify_py.READ_BUDGET_BYTES) -> tuple:
    rig = Rig(impl, buffer_bytes=buffer_bytes, irc=irc, budget_bytes=budget_bytes)
    try:
        last = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            if cut > last:
                rig.send(0, data[last:cut])
                last = cut
            if rig.events and rig.events[-1][3] is not None:
                break
        return rig.result()
    finally:
        rig.close()


_item = st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(0, 4000),
                  st.sampled_from(["room", "room", "room", "ack", "ping", "joined", "bad"]))
_buffers = st.sampled_from([64, 100, 257, 4096, verify_py.RECV_BYTES, 256 * 1024])
_budgets = st.sampled_from([1, 100, 1000, verify_py.READ_BUDGET_BYTES])


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=100, deadline=None)
@given(st.lists(_item, max_size=40), st.lists(st.integers(0, 5000), max_size=6), _buffers,
       _budgets)
def test_the_compiled_loop_agrees_with_its_twin(items, cuts, buffer_bytes, budget_bytes):
    data = _native(items)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert _run(verify_py, data, cuts, buffer_bytes, budget_bytes=budget_bytes) == \
        _run(verify.verify_c, data, cuts, buffer_bytes, budget_bytes=budget_bytes)


def test_a_socket_is_read_until_drained_in_one_poll(impl):
    rig = Rig(impl, buffer_bytes=100)
    try:
        rig.theirs[0].sendall(b"".join(room_frame(s, q) for q in range(20) for s in range(2)))
        rig.poll()
        assert rig.tally.messages == 40 and rig.pending(0) == 0 and rig.events == []
    finally:
        rig.close()


def test_a_poll_reads_a_socket_up_to_its_budget(impl):
    rig = Rig(impl, pairs=2, buffer_bytes=100, budget_bytes=1000)
    try:
        data = b"".join(room_frame(1, q) for q in range(60))
        for k in range(2):
            rig.theirs[k].sendall(data)
        rig.poll()                                   # each socket: reads of <= 100 bytes
        taken = [len(data) - rig.pending(k) for k in range(2)]   # until one reaches 1000
        assert all(1000 <= t < 1100 for t in taken)
        assert rig.tally.messages == sum(t // len(room_frame(1, 0)) for t in taken)
        while rig.pending(0) or rig.pending(1):
            rig.poll()
        assert rig.tally.messages == 120 and rig.tally.gaps == 0
    finally:
        rig.close()


def test_frames_read_before_the_peer_closed_come_with_the_eof(impl):
    ok = encode_event(ev.Ok(request_id=5))                       # 9 bytes
    rig = Rig(impl, buffer_bytes=8 * len(ok))                    # each read ends on a frame
    try:
        rig.theirs[0].sendall(ok * 16)
        rig.theirs[0].close()
        rig.poll()                                   # two full reads, then the end
        assert rig.events == [(0, 0, [(0x80, 5, b"")] * 16, ("EOFError", ""))]
    finally:
        rig.ours[0].close()
        rig.ep.close()


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@pytest.mark.parametrize("budget_bytes", [1, 150, verify_py.READ_BUDGET_BYTES])
def test_a_frame_larger_than_buffer_and_budget_is_carried_whole(budget_bytes):
    big = encode_event(ev.Error(7, False, "x" * 3000, request_id=4))
    data = room_frame(0, 0) + big + room_frame(0, 1) + big[:500]
    for cut in range(0, len(data) + 1, 37):
        got = [_run(m, data, [cut], 64, budget_bytes=budget_bytes)
               for m in (verify_py, verify.verify_c)]
        assert got[0] == got[1], cut
        snap, events, _, held = got[1]
        assert snap["messages"] == 2 and held == [500], cut
        assert [f for e in events for f in e[2]] == [(0x83, 4, big[9:])], cut


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@pytest.mark.parametrize("buffer_bytes", [64, 100, verify_py.RECV_BYTES])
def test_the_loops_agree_with_the_bytes_split_at_every_point(buffer_bytes):
    items = [(s, q, 10 * q, "room") for q in range(3) for s in range(2)]
    items[2] = (1, 0, 5, "room")                                        # a duplicate
    items += [(0, 9, 1, "room"), (0, 4, 1, "room"), (2, 2, 2, "ack"), (1, 3, 3, "ping"),
              (0, 0, 0, "bad"), (1, 9, 7, "joined")]                    # a gap, a reorder
    data = _native(items)
    expected = _run(verify_py, data, [], buffer_bytes)
    assert expected[0]["gaps"] and expected[0]["duplicates"] and expected[0]["reordered"]
    assert expected[0]["malformed"] == 1
    for cut in range(len(data) + 1):
        got_py = _run(verify_py, data, [cut], buffer_bytes)
        got_c = _run(verify.verify_c, data, [cut], buffer_bytes)
        assert got_py[0] == got_c[0] == expected[0], cut                # same counts
        assert got_py == got_c, cut                                     # same reports
        assert got_c[2] == expected[2]                                  # same Acks


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30),
                          st.sampled_from(["msg", "pong", "other"])), max_size=30),
       st.lists(st.integers(0, 3000), max_size=5), _buffers)
def test_the_irc_loops_agree(items, cuts, buffer_bytes):
    parts = []
    for sender, seq, kind in items:
        parts.append(irc_line(sender, seq) if kind == "msg" else
                     b":s PONG s :%d\r\n" % (seq * 3) if kind == "pong" else
                     b":s NOTICE me :%d\n" % seq)
    data = b"".join(parts)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert _run(verify_py, data, cuts, buffer_bytes, irc=True) == \
        _run(verify.verify_c, data, cuts, buffer_bytes, irc=True)


# -- the send side ------------------------------------------------------------------------------

@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0x22, 0x12]), st.binary(max_size=20), st.integers(0, 2**36),
       st.integers(0, 2**36), st.integers(0, 6), st.integers(0, 2**60), st.integers(0, 90))
def test_both_encoders_make_the_same_requests(msg_type, prefix, sender, seq, count, now_us,
                                              size):
    args = (msg_type, prefix, sender, seq, count, now_us, size)
    assert verify.verify_c.encode_sends(*args) == verify_py.encode_sends(*args)


def test_encoded_sends_are_requests_whose_texts_verify(impl):
    from chatcore.codec import FrameDecoder
    from chatcore.protocol import Role, decode_frame
    prefix = b"\x00\x05lobby"
    data = impl.encode_sends(0x22, prefix, 7, 41, 3, 1_000_000, SIZE)
    decoder = FrameDecoder()
    decoder.receive_data(data)
    sends = []
    while (frame := decoder.next_frame()) is not None:
        sends.append(decode_frame(*frame, role=Role.SERVER))
    assert [(e.room, e.request_id) for e in sends] == [("lobby", 42), ("lobby", 43),
                                                      ("lobby", 44)]
    assert [e.text for e in sends] == [verify.stamp(7, q, 1_000_000, SIZE).decode()
                                       for q in (41, 42, 43)]


# -- the compiled stream's per-sender caches ----------------------------------------------------
# It keeps, per sender, the digits of the sequence number it expects next and of the last send
# time, and parses only a field that differs: these texts walk the edges of those caches
# (carries in the last digit, the last sequence number there is, repeated and changing times,
# digits that are almost hex) and both loops must count them alike.

_SEQS = [0, 1, 8, 9, 10, 14, 15, 16, 0x19, 0x1A, 0xFF, 0x100, 0xFFFFFFFE, 0xFFFFFFFF]
_DAMAGE = [None, None, None, "upper", "g", "pad", "short"]


def _text(sender: int, seq: int, sent_us: int, damage) -> bytes:
    text = bytearray(verify.stamp(sender, seq, sent_us, SIZE))
    if damage == "upper":                    # an uppercase digit is not ours
        k = next((i for i, b in enumerate(text[:32]) if b in b"abcdef"), None)
        if k is None:
            text[7] = ord("A")
        else:
            text[k] = text[k] - 32
    elif damage == "g":
        text[15] = ord("g")
    elif damage == "pad":
        text[-1] = ord(",")
    elif damage == "short":
        del text[-1]
    return bytes(text)


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 0xA, 0xFFFFFFFF]), st.sampled_from(_SEQS),
                          st.sampled_from([1, 2, 0xF, 0xFFFFFFFFFFFF]),
                          st.sampled_from(_DAMAGE)), max_size=40),
       st.lists(st.integers(0, 8000), max_size=3))
def test_the_loops_agree_on_texts_at_the_caches_edges(items, cuts):
    data = b"".join(encode_room_message(b"r", b"u", 1, 0, _text(*item)) for item in items)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert _run(verify_py, data, cuts, 4096) == _run(verify.verify_c, data, cuts, 4096)


def test_a_sender_counts_on_through_carries_to_its_last_number(impl):
    rig = Rig(impl)
    try:
        seqs = list(range(0, 0x120)) + list(range(0xFFFFFFF0, 0x100000000)) + [0xFFFFFFFF, 3]
        rig.send(0, b"".join(encode_room_message(b"r", b"u", 1, 0, _text(5, q, q // 7, None))
                             for q in seqs))
        snap = rig.tally.snapshot()
        assert snap["messages"] == 0x120 + 16
        assert snap["gaps"] == 0xFFFFFFF0 - 0x120
        assert (snap["duplicates"], snap["reordered"], snap["malformed"]) == (1, 1, 0)
    finally:
        rig.close()
