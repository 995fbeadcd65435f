"""Write coalescing (coalesce_writes_seconds): a busy server holds its next flush for the
rest of the window so that messages share writes; a quiet one writes at once.

First the Flusher with fake buffers and a fake reactor (which flush is held, when it is
released), then a real server on an in-process reactor over real sockets: a lone message is
not held, and a busy room's messages, coalesced, all arrive in order within the window.
"""
from __future__ import annotations

import socket
import time

import pytest

from chatcore import events as ev
from chatcore.config import ServerConfig
from chatcore.connection.flushing import Flusher
from chatcore.protocol import NEED_DATA, NativeProtocol, Role, encode_event
from chatcore.reactor import Reactor
from chatcore.server import Server
from tests.flush_fakes import Buffer, FakeOutlet, FakeReactor

WINDOW = 0.05


class Work:
    work_done = 0


def make(min_frames: int = 4):
    outlet, reactor, work = FakeOutlet(), FakeReactor(), Work()
    flusher = Flusher(outlet, reactor, 100, WINDOW, min_frames, work)
    return outlet, reactor, work, flusher, []


def queue(outlet, work, log, names, frames_each: int) -> None:
    outlet.pending.extend(Buffer(name, log) for name in names)
    work.work_done += frames_each * len(names)


def test_a_quiet_server_writes_every_flush_at_once():
    outlet, reactor, work, flusher, log = make()
    for turn in range(5):
        queue(outlet, work, log, [f"t{turn}a", f"t{turn}b"], frames_each=1)
        flusher.flush()
        assert log[-2:] == [f"t{turn}a", f"t{turn}b"]
    assert reactor.wake_at == [] and flusher.held_flushes == 0


def test_after_a_busy_flush_the_next_waits_for_the_window_then_writes_everything():
    outlet, reactor, work, flusher, log = make()
    began = time.monotonic()
    queue(outlet, work, log, ["a", "b"], frames_each=4)
    flusher.flush()                         # busy: 4 deliveries per connection written
    assert log == ["a", "b"]
    queue(outlet, work, log, ["a"], frames_each=1)
    flusher.after_output(lambda: log.append("paused sender goes on"))
    flusher.flush()                         # within the window: held
    assert log == ["a", "b"] and flusher.held_flushes == 1
    (due,) = reactor.wake_at
    assert began <= due - WINDOW <= time.monotonic()
    queue(outlet, work, log, ["b"], frames_each=1)
    flusher.flush()                         # still held; both wait together
    assert log == ["a", "b"]
    time.sleep(max(0.0, due - time.monotonic()))
    flusher.flush()                         # the window is over: written in queue order
    assert log == ["a", "b", "a", "b"]
    for callback in reactor.soon:
        callback()
    assert log[-1] == "paused sender goes on"
    # That flush carried one delivery per connection: the next one is not held.
    queue(outlet, work, log, ["c"], frames_each=1)
    flusher.flush()
    assert log[-1] == "c"


def test_a_flush_past_the_turn_budget_is_never_held():
    outlet, reactor, work, flusher, log = make()
    flusher.writes_per_turn = 2
    queue(outlet, work, log, ["a", "b", "c", "d"], frames_each=8)
    flusher.flush()
    assert log == ["a", "b"] and flusher.waiting
    flusher.flush()                         # writes waiting from the last turn: go on
    assert log == ["a", "b", "c", "d"]


def test_while_held_the_writes_left_from_the_last_flush_go_on_and_new_output_waits():
    outlet, reactor, work, flusher, log = make()
    flusher.writes_per_turn = 2
    queue(outlet, work, log, ["a", "b", "c", "d", "e"], frames_each=4)
    flusher.flush()                         # busy, and past the turn's budget
    assert log == ["a", "b"]
    queue(outlet, work, log, ["a"], frames_each=1)
    flusher.flush()                         # held: only what the last flush left
    assert log == ["a", "b", "c", "d"] and reactor.soon and not reactor.wake_at
    flusher.flush()
    assert log == ["a", "b", "c", "d", "e"] and len(reactor.wake_at) == 1
    time.sleep(max(0.0, reactor.wake_at[0] - time.monotonic()))
    flusher.flush()
    assert log[-1] == "a"


def test_coalescing_off_without_a_work_counter():
    outlet, reactor = FakeOutlet(), FakeReactor()
    flusher, log, work = Flusher(outlet, reactor, 100), [], Work()
    for turn in range(3):
        queue(outlet, work, log, [f"t{turn}"], frames_each=50)
        flusher.flush()
    assert log == ["t0", "t1", "t2"] and reactor.wake_at == []


# -- a real server on an in-process reactor ------------------------------------------------


class Client:
    """A blocking-free raw client driven by the test's loop turns."""

    def __init__(self, address, name: str):
        self.sock = socket.create_connection(address)
        self.sock.setblocking(False)
        self.protocol = NativeProtocol(Role.CLIENT)
        self.events: list = []
        self.arrived: list = []             # monotonic time each event was read
        self.send(ev.Hello(1, name, request_id=1))

    def send(self, event) -> None:
        self.sock.sendall(encode_event(event))

    def read(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        now = time.monotonic()
        self.protocol.receive_data(data)
        while (event := self.protocol.next_event()) is not NEED_DATA:
            self.events.append(event)
            self.arrived.append(now)

    def of(self, kind) -> list:
        return [event for event in self.events if isinstance(event, kind)]


# Each server test runs twice: the loop sleeping when idle, and polling first
# (idle_poll_seconds: the same messages, order and holds, whether it sleeps or polls).
@pytest.fixture(params=[0.0, 0.002], ids=["sleeps", "idle-poll"])
def running(request):
    reactor = Reactor()
    server = Server(ServerConfig(port=0, limit_exempt="127.0.0.1", coalesce_writes_seconds=WINDOW,
                                 coalesce_writes_min_frames=2,
                                 idle_poll_seconds=request.param), reactor)
    server.start()
    clients: list[Client] = []

    def turn_until(condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout

        def check() -> None:
            for client in clients:
                client.read()
            if condition() or time.monotonic() > deadline:
                reactor.stop()
        reactor.add_before_sleep(check)
        # The clients' sockets are not the reactor's: turn at least every millisecond.
        ticker = [None]

        def tick() -> None:
            ticker[0] = reactor.call_later(0.001, tick)
        tick()
        reactor.run()
        ticker[0].cancel()
        reactor._before_sleep.remove(check)
        assert condition(), "condition not reached"

    def connect(name: str) -> Client:
        client = Client(server.address, name)
        clients.append(client)
        turn_until(lambda: client.of(ev.Welcome))
        client.send(ev.JoinRoom("lobby", request_id=2))
        turn_until(lambda: client.of(ev.RoomJoined))
        return client

    yield server, turn_until, connect
    for client in clients:
        client.sock.close()
    for connection in list(server.connections):
        connection.abort(ev.Reason.DISCONNECTED)
    server.listener.close()
    reactor.close()


def test_a_lone_message_is_written_at_once(running):
    server, turn_until, connect = running
    alice, bob = connect("alice"), connect("bob")
    time.sleep(WINDOW)                      # quiet for a whole window
    held = server.flusher.held_flushes
    sent_at = time.monotonic()
    alice.send(ev.SendRoom("lobby", "hello", request_id=3))
    turn_until(lambda: bob.of(ev.RoomMessage))
    assert bob.arrived[-1] - sent_at < WINDOW
    assert server.flusher.held_flushes == held


def test_a_busy_rooms_messages_share_writes_and_arrive_in_order(running):
    server, turn_until, connect = running
    senders = [connect(f"s{k}") for k in range(2)]
    readers = [connect(f"r{k}") for k in range(3)]
    count = 40
    for k in range(count):
        for who, sender in enumerate(senders):
            sender.send(ev.SendRoom("lobby", f"{who}:{k}", request_id=10 + k))
        if k % 4 == 3:
            turn_until(lambda: True)        # a burst's flush, then more input
    everyone = senders + readers
    turn_until(lambda: all(len(c.of(ev.RoomMessage)) >= 2 * count for c in everyone))
    assert server.flusher.held_flushes > 0, "nothing was coalesced: the test proves nothing"
    for client in everyone:
        texts = [m.text for m in client.of(ev.RoomMessage)]
        assert len(texts) == 2 * count
        for who in range(2):
            assert [t for t in texts if t.startswith(f"{who}:")] == [
                f"{who}:{k}" for k in range(count)]
    for sender in senders:
        assert [a.request_id for a in sender.of(ev.Ack)] == [10 + k for k in range(count)]


def test_a_held_message_is_late_by_at_most_the_window(running):
    server, turn_until, connect = running
    alice, bob = connect("alice"), connect("bob")
    for k in range(10):
        alice.send(ev.SendRoom("lobby", f"burst {k}", request_id=10 + k))
    turn_until(lambda: len(bob.of(ev.RoomMessage)) == 10)
    held = server.flusher.held_flushes
    sent_at = time.monotonic()
    alice.send(ev.SendRoom("lobby", "right after", request_id=30))
    turn_until(lambda: len(bob.of(ev.RoomMessage)) == 11)
    # Scheduling on a loaded machine adds to it; the window is what the server adds.
    assert bob.arrived[-1] - sent_at < WINDOW + 0.5
    assert bob.of(ev.RoomMessage)[-1].text == "right after"
    assert server.flusher.held_flushes > held, "not held: the test proves nothing"


def test_the_window_is_bounded_and_the_threshold_positive():
    with pytest.raises(ValueError, match="coalesce_writes_seconds"):
        ServerConfig(coalesce_writes_seconds=1.0).validate()
    with pytest.raises(ValueError, match="coalesce_writes_min_frames"):
        ServerConfig(coalesce_writes_min_frames=0).validate()
    ServerConfig(coalesce_writes_seconds=0).validate()      # off is fine


def test_the_idle_poll_is_bounded():
    with pytest.raises(ValueError, match="idle_poll_seconds"):
        ServerConfig(idle_poll_seconds=0.5).validate()
    with pytest.raises(ValueError, match="idle_poll_max_share"):
        ServerConfig(idle_poll_max_share=2).validate()
    ServerConfig(idle_poll_seconds=0.0005, idle_poll_max_share=0.25).validate()
