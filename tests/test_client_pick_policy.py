"""The server choice's rules (chatcore.serverchoice) on a fake clock: the lowest RTT first,
a move only below 2/3 of the current RTT for the sustained period, no flapping on noise,
failover order, what a server list teaches."""
from __future__ import annotations

import random

import pytest

from chatcore import events as ev
from chatcore.serverchoice import ChoicePolicy, ServerChoice, parse_server

MS = 0.001
POLICY = ChoicePolicy(probe_interval_seconds=10, move_sustain_seconds=60,
                      move_min_samples=3, move_min_gain_seconds=5 * MS)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def choice_of(clock, *rtts_ms, policy=POLICY):
    """A choice over servers a, b, c ... with one measurement each, on the first."""
    choice = ServerChoice(policy, clock=clock)
    servers = [choice.add("127.0.0.1", 7000 + i, name) for i, name in
               enumerate("abcde"[:len(rtts_ms)])]
    for server, rtt in zip(servers, rtts_ms):
        choice.observe(server, rtt * MS)
    choice.set_current(choice.ranked()[0])
    return choice, servers


def measure_for(choice, clock, seconds, rtts_ms, step=10.0, noise=None):
    """Every ``step`` seconds for ``seconds``, one measurement of each server (ms, or a
    callable giving ms); returns the first move target seen, or None."""
    elapsed = 0.0
    while elapsed < seconds:
        clock.now += step
        elapsed += step
        for server, rtt in zip(choice.servers, rtts_ms):
            value = rtt() if callable(rtt) else rtt
            choice.observe(server, value * MS)
        target = choice.move_target()
        if target is not None:
            return target, elapsed
    return None, elapsed


def test_the_lowest_rtt_is_ranked_first_unmeasured_then_failed_last(clock):
    choice = ServerChoice(POLICY, clock=clock)
    a, b, c, d = (choice.add("h", port) for port in (1, 2, 3, 4))
    choice.observe(a, 0.050)
    choice.observe(b, 0.010)
    choice.failed(d)
    assert choice.ranked() == [b, a, c, d]
    choice.observe(d, 0.001)                    # it answers again: back by its RTT
    assert choice.ranked()[0] is d


def test_rtt_is_the_median_of_the_kept_samples(clock):
    choice = ServerChoice(POLICY, clock=clock)
    a = choice.add("h", 1)
    for rtt in (0.010, 0.500, 0.011, 0.012, 0.013):
        choice.observe(a, rtt)
    assert a.rtt == pytest.approx(0.012)        # the spike counts for nothing
    choice.observe(a, 0.014)
    assert len(a.samples) == 5                  # the oldest (10 ms) is forgotten
    assert a.rtt == pytest.approx(0.013)


def test_it_moves_only_after_the_sustained_period(clock):
    choice, (a, b) = choice_of(clock, 100, 150)
    assert choice.current is a
    # b becomes clearly better (60 < 2/3 * 100): the median follows after 3 samples...
    target, elapsed = measure_for(choice, clock, 300, (100, 60))
    assert target is b
    # ... and the move waits the sustained period on top of that.
    assert elapsed >= POLICY.move_sustain_seconds
    assert elapsed <= POLICY.move_sustain_seconds + 5 * 10


def test_better_but_not_below_two_thirds_never_moves(clock):
    choice, (a, b) = choice_of(clock, 100, 150)
    target, _ = measure_for(choice, clock, 1000, (100, 70))     # 0.7 > 2/3
    assert target is None


def test_a_gain_below_the_floor_never_moves(clock):
    choice, (a, b) = choice_of(clock, 3, 5)
    target, _ = measure_for(choice, clock, 1000, (3, 1))      # 1/3 of it, but 2 ms only
    assert target is None


def test_a_break_in_the_better_streak_restarts_the_sustained_period(clock):
    choice, (a, b) = choice_of(clock, 100, 150)
    target, _ = measure_for(choice, clock, 50, (100, 20))
    assert target is None                       # better, but not for 60 s yet
    assert b.better_since is not None
    # The current one recovers for a while: its median drops below b's * 3/2.
    measure_for(choice, clock, 30, (20, 20))
    assert b.better_since is None
    target, elapsed = measure_for(choice, clock, 200, (100, 20))
    assert target is b and elapsed >= 60


def test_noise_does_not_flap(clock):
    """Two servers of the same RTT with heavy jitter and occasional spikes: in a simulated
    day of measurements every 10 s, not one move."""
    rng = random.Random(7)

    def noisy() -> float:
        base = 40 + rng.uniform(-15, 15)
        return base * 4 if rng.random() < 0.05 else base

    choice, _ = choice_of(clock, 40, 40)
    target, _ = measure_for(choice, clock, 24 * 3600, (noisy, noisy))
    assert target is None


def test_failover_order_puts_the_lost_server_last(clock):
    choice, (a, b, c) = choice_of(clock, 10, 30, 20)
    assert choice.current is a
    choice.failed(a)
    assert choice.failover_order() == [c, b, a]


def test_a_failed_server_is_never_a_move_target(clock):
    choice, (a, b) = choice_of(clock, 100, 150)
    measure_for(choice, clock, 40, (100, 20))
    choice.failed(b)
    clock.now += 100
    assert choice.move_target() is None


def test_no_probe_interval_means_no_moves(clock):
    choice, (a, b) = choice_of(clock, 100, 150,
                               policy=ChoicePolicy(probe_interval_seconds=0))
    target, _ = measure_for(choice, clock, 1000, (100, 1))
    assert target is None


def test_a_server_list_adds_nodes_names_ours_and_forgets_nodes_gone(clock):
    choice = ServerChoice(POLICY, clock=clock)
    configured = choice.add("localhost", 7001)
    choice.set_current(configured, "alpha")
    listing = [ev.ServerInfo("alpha", "127.0.0.1", 7001, 3, 0, 0),
               ev.ServerInfo("beta", "0.0.0.0", 7002, 1, 0, 1500),
               ev.ServerInfo("gamma", "10.0.0.3", 7003, 1, 0, ev.UNKNOWN_RTT)]
    choice.learn(listing)
    assert [(s.name, s.host, s.port) for s in choice.servers] == [
        ("alpha", "localhost", 7001),           # ours: the address we reached it by
        ("beta", "localhost", 7002),            # a wildcard: the current server's host
        ("gamma", "10.0.0.3", 7003)]
    assert choice.named("beta").node_rtt_seconds == pytest.approx(0.0015)
    assert choice.named("gamma").node_rtt_seconds is None
    choice.learn(listing[:2])                   # gamma is gone from the cluster
    assert [s.name for s in choice.servers] == ["alpha", "beta"]


def test_connecting_to_a_node_known_under_another_address_merges_them(clock):
    choice = ServerChoice(POLICY, clock=clock)
    first = choice.add("127.0.0.1", 7001)
    choice.set_current(first, "alpha")
    choice.learn([ev.ServerInfo("alpha", "127.0.0.1", 7001, 1, 0, 0),
                  ev.ServerInfo("beta", "127.0.0.1", 7002, 1, 0, 0)])
    configured_beta = choice.add("localhost", 7002)       # the same node, another name
    choice.set_current(configured_beta, "beta")
    assert [(s.name, s.host) for s in choice.servers] == [("alpha", "127.0.0.1"),
                                                          ("beta", "localhost")]


@pytest.mark.parametrize("text, expected", [
    ("chat.example:7000", ("chat.example", 7000)),
    ("chat.example", ("chat.example", 7878)),
    ("[::1]:7000", ("::1", 7000)),
    ("[::1]", ("::1", 7878)),
    ("::1", ("::1", 7878)),
])
def test_server_addresses_parse(text, expected):
    assert parse_server(text, 7878) == expected


@pytest.mark.parametrize("text", [":7000", "host:port", "host:0", "host:70000", "[::1"])
def test_bad_server_addresses_are_refused(text):
    with pytest.raises(ValueError):
        parse_server(text, 7878)
