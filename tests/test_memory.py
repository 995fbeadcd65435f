"""Memory the server gives back: parked partial frames, their budget, and the heap trim.

The figures (KiB per idle connection, per parked frame, what is kept after a mass close) are
printed by ``benchmarks/bench_memory.py``; these tests assert what a client or an operator
notices: closed connections' input leaves the held-input budget, the server trims its heap
after a large drop (it says so in its debug log), and it keeps serving throughout.
"""
from __future__ import annotations

import struct

import pytest

from chatcore import events as ev
from chatcore import memory
from chatcore.client import ChatClient
from chatcore.errors import ErrorCode

FRAME_LENGTH = 65000
PARKED_BYTES = 60_000
TRIMMED = "gave free memory back"


def _park(port: int, name: str) -> ChatClient:
    """A greeted client that sends most of a large frame and stops there."""
    client = ChatClient("127.0.0.1", port, auto_pong=False, timeout=10)  # a Pong would split it
    client.connect(name)
    header = struct.pack(">IBI", FRAME_LENGTH, 0x22, 7)         # SendRoom, request 7
    client.send_raw(header + b"\0" * (PARKED_BYTES - len(header)))
    return client


def _finish(client: ChatClient) -> None:
    """The rest of the parked frame: the server answers it (room "" is no room of ours), which
    proves the partial frame was held, not dropped."""
    client.send_raw(b"\0" * (FRAME_LENGTH + 4 - PARKED_BYTES))
    reply = client.wait_for(lambda e: type(e) is ev.Error)
    assert (ErrorCode(reply.code), reply.request_id) == (ErrorCode.NOT_IN_ROOM, 7), reply


def _chat_works(port: int) -> None:
    alice = ChatClient("127.0.0.1", port, timeout=10)
    bob = ChatClient("127.0.0.1", port, timeout=10)
    try:
        alice.connect("alice")
        bob.connect("bob")
        alice.join("lobby")
        bob.join("lobby")
        alice.send_room("lobby", "still here")
        message = bob.wait_for(lambda e: type(e) is ev.RoomMessage)
        assert (message.sender, message.text) == ("alice", "still here")
    finally:
        alice.close()
        bob.close()


@pytest.mark.skipif(not memory.release_free_memory(), reason="no malloc_trim (not glibc)")
def test_closed_partial_frames_free_their_budget_and_the_heap_is_trimmed(start_server):
    server = start_server("--max-held-input-bytes", "200000",
                          "--trim-memory-after-bytes", "150000")
    parked = [_park(server.port, f"p{i}") for i in range(3)]    # 180 000 bytes held
    probe = ChatClient("127.0.0.1", server.port, timeout=10)
    probe.connect("probe")
    probe.ping()                                # every parked byte has been read by now
    lines = len(server.lines)
    for client in parked:
        client.close()
    server.wait_for_log(TRIMMED, timeout=10, start=lines)
    # The closed ones' 180 000 bytes left the budget: three may park as much again.
    again = [_park(server.port, f"q{i}") for i in range(3)]
    probe.ping()
    for client in again:
        _finish(client)
        client.close()
    _chat_works(server.port)
    probe.close()


def test_no_trim_below_the_threshold_or_when_off(start_server):
    """A drop smaller than --trim-memory-after-bytes, or a threshold of 0, trims nothing."""
    server = start_server("--trim-memory-after-bytes", "0")
    parked = [_park(server.port, f"p{i}") for i in range(2)]
    probe = ChatClient("127.0.0.1", server.port, timeout=10)
    probe.connect("probe")
    probe.ping()
    for client in parked:
        client.close()
    _chat_works(server.port)
    probe.ping()
    assert TRIMMED not in server.log
    probe.close()


def test_trimmer_decides_on_the_drop_since_the_peak():
    trimmer = memory.MemoryTrimmer(1000)
    assert not trimmer.tick(5000, 4500)          # fell by 500 only
    assert trimmer.tick(5000, 3999) is memory.release_free_memory()
    assert not memory.MemoryTrimmer(0).tick(10**9, 0)
