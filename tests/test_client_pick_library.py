"""The library's RoamingClient (chatcore.roaming) on real servers: the lowest RTT, a move
after the sustained period with rooms and chats kept, failover when its server is killed,
and on a cluster the nodes learned from the first one."""
from __future__ import annotations

import signal
import time

import pytest

from chatcore import events as ev
from chatcore.roaming import RoamingClient
from chatcore.serverchoice import ChoicePolicy
from tests.pick_helpers import proxies  # noqa: F401

pytestmark = pytest.mark.timeout(90)

FAST = ChoicePolicy(probe_interval_seconds=0.1, move_sustain_seconds=1.0)


@pytest.fixture
def roaming():
    made = []

    def make(*servers, **options) -> RoamingClient:
        client = RoamingClient(servers, timeout=10, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_it_connects_to_the_lowest_rtt_server(start_server, proxies, roaming):
    near, far = start_server(), start_server()
    far_proxy = proxies(far, 0.1)
    alice = roaming(f"127.0.0.1:{far_proxy.port}", ("127.0.0.1", near.port))
    welcome = alice.connect("alice")
    assert alice.current.port == near.port and welcome.name == "alice"
    assert alice.choice.find("127.0.0.1", far_proxy.port).rtt >= 0.2
    assert alice.send_room is not None and alice.name == "alice"    # the ChatClient's


def test_it_moves_after_the_sustained_period_and_keeps_rooms_and_chats(
        start_server, proxies, roaming, connect):
    first, second = start_server(), start_server()
    first_proxy, second_proxy = proxies(first), proxies(second, 0.02)
    alice = roaming(("127.0.0.1", first_proxy.port), ("127.0.0.1", second_proxy.port),
                    policy=FAST)
    alice.connect("alice")
    assert alice.current.port == first_proxy.port
    alice.join("lobby")
    first_proxy.delay_seconds = 0.1
    slowed_at = time.monotonic()
    moved = None
    while moved is None:
        assert time.monotonic() - slowed_at < 30, "no move"
        moved = alice.maintain()
        time.sleep(0.05)
    assert time.monotonic() - slowed_at >= FAST.move_sustain_seconds
    assert moved.port == second_proxy.port == alice.current.port
    assert alice.client.port == second_proxy.port
    assert alice.rooms == ["lobby"]
    assert alice.send_room("lobby", "moved").msg_id > 0     # a member of #lobby there


def test_a_killed_server_fails_over_with_name_rooms_and_chats(start_server, roaming):
    first, second = start_server(), start_server()
    alice = roaming(("127.0.0.1", first.port), ("127.0.0.1", second.port))
    alice.connect("alice")
    on_first = alice.current
    alice.join("lobby")
    killed = first if on_first.port == first.port else second
    other = second if killed is first else first
    killed.signal(signal.SIGKILL)
    killed.proc.wait()
    with pytest.raises((ConnectionError, OSError)):
        alice.send_room("lobby", "lost?")
    welcome = alice.failover()
    assert welcome.name == "alice" and alice.current.port == other.port
    assert alice.send_room("lobby", "back").msg_id > 0


def test_on_a_cluster_it_learns_the_nodes_and_fails_over_to_one(start_node, roaming,
                                                                 clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    bob = clients(beta, "bob")
    alice = roaming(("127.0.0.1", alpha.port))
    alice.connect("alice")
    deadline = time.monotonic() + 10
    while len(alice.choice.servers) < 2:            # beta's first announcement
        assert time.monotonic() < deadline
        time.sleep(0.1)
        alice.learn_servers()
    assert {s.name for s in alice.choice.servers} == {"alpha", "beta"}
    alice.open_chat("bob")
    bob.wait_for(ev.ChatOpened)
    alpha.signal(signal.SIGKILL)
    alpha.proc.wait()
    with pytest.raises((ConnectionError, OSError)):
        while True:
            alice.next_event(timeout=5)
    welcome = alice.failover()                      # NAME_TAKEN until alpha's lease lapses
    assert welcome.name == "alice" and alice.current.name == "beta"
    alice.send_direct("bob", "from beta")
    assert bob.wait_for(ev.DirectMessage).text == "from beta"
