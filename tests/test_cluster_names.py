"""User names across cluster nodes (real server processes, real redis-server): unique
cluster-wide, freed when their user leaves or their node dies, guests included; requests
sent with the Hello wait for its claim; Redis out of reach refuses new names only."""
from __future__ import annotations

import signal
import time

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.errors import ChatError, ErrorCode
from chatcore.protocol import PROTOCOL_VERSION, encode_event
from tests.conftest import SILENCE_SECONDS


def welcomed_when_free(node, name: str, timeout: float = 10.0) -> tuple[ChatClient, float]:
    """Connect as ``name`` on ``node``, retrying NAME_TAKEN; the client and the seconds
    it took. The name is freed by another process, so its refusals are all we can watch."""
    started = time.monotonic()
    while True:
        client = ChatClient("127.0.0.1", node.port, timeout=10)
        try:
            client.connect(name)
            return client, time.monotonic() - started
        except ChatError as exc:
            client.close()
            assert exc.code == ErrorCode.NAME_TAKEN, exc
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name!r} still taken after {timeout}s") from None
            time.sleep(0.05)


def test_a_name_is_unique_across_nodes_in_any_case(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    clients(alpha, "alice")
    for name in ("alice", "ALICE"):
        with pytest.raises(ChatError) as refused:
            clients(beta, name)
        assert refused.value.code == ErrorCode.NAME_TAKEN


def test_a_name_is_free_on_every_node_once_its_user_leaves(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    clients(alpha, "alice").quit()
    bob_as_alice, _ = welcomed_when_free(beta, "alice", timeout=5)
    assert bob_as_alice.name == "alice"
    bob_as_alice.close()


def test_guest_names_are_unique_across_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    names = [clients(node).name for node in (alpha, beta) * 6]
    assert len(set(n.casefold() for n in names)) == 12
    assert all(name.startswith("guest-") for name in names)


def test_the_names_of_a_killed_node_are_free_within_the_silence(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    clients(beta, "carol")
    beta.signal(signal.SIGKILL)
    carol_again, seconds = welcomed_when_free(alpha, "carol", timeout=15)
    # The alive key expires after the silence (1 s here, 6 s by default); a wide margin.
    assert seconds <= 10 * SILENCE_SECONDS
    carol_again.close()


def test_requests_sent_with_the_hello_wait_for_its_claim(start_node):
    node = start_node("alpha")
    with ChatClient("127.0.0.1", node.port, timeout=10) as client:
        client.sock = __import__("socket").create_connection(("127.0.0.1", node.port), 10)
        client.send_raw(encode_event(ev.Hello(PROTOCOL_VERSION, "dave", "test", 1))
                        + encode_event(ev.JoinRoom("lobby", 2))
                        + encode_event(ev.SendRoom("lobby", "first words", 3)))
        assert isinstance(client.wait_for(lambda e: getattr(e, "request_id", 0) == 1),
                          ev.Welcome)
        assert isinstance(client.wait_for(lambda e: getattr(e, "request_id", 0) == 2
                                          and type(e) is not ev.UserJoined), ev.Ok)
        assert isinstance(client.wait_for(lambda e: getattr(e, "request_id", 0) == 3),
                          ev.Ack)
        message = client.wait_for(ev.RoomMessage)
        assert (message.sender, message.text) == ("dave", "first words")


def test_without_redis_new_names_wait_and_present_users_chat_on(start_redis, start_node,
                                                                clients):
    redis = start_redis()
    alpha = start_node("alpha", redis_url=redis.url)
    beta = start_node("beta", redis_url=redis.url)
    alice, bob = clients(alpha, "alice"), clients(alpha, "bob")
    alice.join("lobby")
    bob.join("lobby")
    redis.stop()
    alpha.wait_for_log("is unreachable", timeout=10)
    alice.send_room("lobby", "still here?")
    assert bob.wait_for(ev.RoomMessage).text == "still here?"
    with pytest.raises(ChatError) as refused:
        clients(alpha, "erin")
    assert refused.value.code == ErrorCode.CLUSTER_UNREACHABLE
    redis.start()                       # an empty Redis: every name must be claimed again
    alpha.wait_for_log("reachable again", timeout=15)
    beta.wait_for_log("reachable again", timeout=15)
    erin, _ = welcomed_when_free(alpha, "erin")
    assert erin.name == "erin"
    erin.close()
    with pytest.raises(ChatError) as taken:
        clients(beta, "alice")          # alpha claimed its users' names again
    assert taken.value.code == ErrorCode.NAME_TAKEN
