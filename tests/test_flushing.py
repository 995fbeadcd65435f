"""The bounded per-turn write flush (chatcore.connection.flushing), with fake buffers and a
fake reactor: which buffers are written in which turn, and when a paused sender goes on."""
from __future__ import annotations

from chatcore.connection.flushing import Flusher, _write_more
from tests.flush_fakes import Buffer, FakeOutlet, FakeReactor


def make(writes_per_turn: int):
    outlet, reactor = FakeOutlet(), FakeReactor()
    return outlet, reactor, Flusher(outlet, reactor, writes_per_turn), []


def test_everything_is_written_in_one_turn_under_the_budget():
    outlet, reactor, flusher, log = make(10)
    outlet.pending = [Buffer(f"b{i}", log) for i in range(10)]
    flusher.flush()
    assert log == [f"b{i}" for i in range(10)]
    assert not flusher.waiting and not outlet.pending
    assert reactor.soon == []                   # nothing left: the loop may sleep


def test_past_the_budget_the_rest_waits_and_the_loop_keeps_turning():
    outlet, reactor, flusher, log = make(4)
    buffers = [Buffer(f"b{i}", log) for i in range(10)]
    outlet.pending = list(buffers)
    flusher.flush()
    assert log == ["b0", "b1", "b2", "b3"]
    assert list(flusher.buffers()) == buffers[4:]
    assert reactor.soon == [_write_more]        # the loop must not sleep with writes left
    reactor.run_soon()
    flusher.flush()
    flusher.flush()
    assert log == [f"b{i}" for i in range(10)]
    assert not flusher.waiting


def test_new_output_goes_first_but_waiting_output_gets_half_the_budget():
    outlet, reactor, flusher, log = make(4)
    outlet.pending = [Buffer(f"fan{i}", log) for i in range(12)]
    flusher.flush()                             # fan0-3 written, fan4-11 wait
    log.clear()
    outlet.pending = [Buffer("bystander", log)]
    flusher.flush()
    # Half the budget to what waits, then what is new, then the rest to what waits.
    assert log == ["fan4", "fan5", "bystander", "fan6"]
    log.clear()
    outlet.pending = [Buffer(f"new{i}", log) for i in range(6)]
    flusher.flush()
    # New output never starves what waits: two of it go every turn.
    assert log == ["fan7", "fan8", "new0", "new1"]
    assert [b.name for b in flusher.buffers()] == ["fan9", "fan10", "fan11", "new2", "new3",
                                                     "new4", "new5"]


def test_a_paused_sender_goes_on_once_the_output_before_it_is_written():
    outlet, reactor, flusher, log = make(4)
    went_on = []
    outlet.pending = [Buffer(f"b{i}", log) for i in range(10)]
    flusher.after_output(lambda: went_on.append(("first", len(log))))
    flusher.flush()                             # b0-b3 written, b4-b9 wait
    assert reactor.run_soon() == [] and went_on == []
    outlet.pending = [Buffer("later", log)]
    flusher.after_output(lambda: went_on.append(("second", len(log))))
    flusher.flush()                             # b4, b5, later, b6
    assert log[4:] == ["b4", "b5", "later", "b6"]
    assert reactor.run_soon() == [] and went_on == []
    flusher.flush()                             # b7-b9: everything before both pauses
    assert log[8:] == ["b7", "b8", "b9"]
    assert not flusher.waiting
    reactor.run_soon()
    assert went_on == [("first", 11), ("second", 11)]


def test_a_paused_sender_goes_on_next_turn_when_nothing_waits():
    outlet, reactor, flusher, log = make(4)
    went_on = []
    outlet.pending = [Buffer("b0", log)]
    flusher.after_output(lambda: went_on.append(True))
    flusher.flush()
    assert went_on == []                        # not inside the flush: on the next turn
    reactor.run_soon()
    assert went_on == [True]


def test_output_caused_by_a_write_is_written_in_the_same_turn():
    outlet, reactor, flusher, log = make(4)
    notice = Buffer("notice", log)
    dropped = Buffer("dropped", log, on_flush=lambda: outlet.pending.append(notice))
    outlet.pending = [dropped, Buffer("b1", log)]
    flusher.flush()
    assert log == ["dropped", "b1", "notice"]
    assert not outlet.pending and not flusher.waiting
