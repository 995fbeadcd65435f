"""Direct chats between users of different cluster nodes (real server processes, a real
redis-server): open, messages both ways in order, close, quit, a user on no node, and the
conversation ending with SERVER_LOST when the other user's node dies."""
from __future__ import annotations

import signal

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason


@pytest.fixture
def two_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    return alpha, beta, clients(alpha, "alice"), clients(beta, "bob")


def test_a_chat_across_nodes_opens_carries_messages_both_ways_and_closes(two_nodes):
    _, _, alice, bob = two_nodes
    alice.open_chat("Bob")
    assert bob.wait_for(ev.ChatOpened).peer == "alice"
    ack = alice.send_direct("bob", "hi bob, from alpha")
    message = bob.wait_for(ev.DirectMessage)
    assert (message.sender, message.text, message.msg_id) == ("alice", "hi bob, from alpha",
                                                              ack.msg_id)
    bob.send_direct("alice", "hi alice, from beta")
    assert alice.wait_for(ev.DirectMessage).text == "hi alice, from beta"
    alice.close_chat("bob")
    closed = bob.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("alice", Reason.CLOSED)
    with pytest.raises(ChatError) as refused:
        bob.close_chat("alice")
    assert refused.value.code == ErrorCode.NO_CONVERSATION


def test_messages_across_nodes_arrive_in_the_order_sent(two_nodes):
    _, _, alice, bob = two_nodes
    request_ids = [alice.send(ev.SendDirect("bob", f"line {i}")) for i in range(50)]
    acks = [alice.wait_for(lambda e, r=r: getattr(e, "request_id", 0) == r)
            for r in request_ids]
    assert all(isinstance(ack, ev.Ack) for ack in acks)
    texts = [bob.wait_for(ev.DirectMessage).text for _ in range(50)]
    assert texts == [f"line {i}" for i in range(50)]


def test_a_user_on_no_node_is_no_such_user(two_nodes):
    _, _, alice, _ = two_nodes
    for request in (lambda: alice.open_chat("nobody"),
                    lambda: alice.send_direct("nobody", "hello?")):
        with pytest.raises(ChatError) as refused:
            request()
        assert refused.value.code == ErrorCode.NO_SUCH_USER


def test_a_quit_across_nodes_ends_the_chat(two_nodes):
    _, _, alice, bob = two_nodes
    alice.send_direct("bob", "bye soon")
    bob.wait_for(ev.DirectMessage)
    bob.quit("off")
    closed = alice.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("bob", Reason.QUIT)


def test_the_chat_ends_with_server_lost_when_the_other_node_dies(two_nodes):
    _, beta, alice, bob = two_nodes
    alice.send_direct("bob", "are you there?")
    bob.wait_for(ev.DirectMessage)
    bob.send_direct("alice", "yes")     # alice's node now knows which node bob is on
    alice.wait_for(ev.DirectMessage)
    beta.signal(signal.SIGKILL)
    closed = alice.wait_for(ev.ChatClosed, timeout=15)
    assert (closed.peer, closed.reason) == ("bob", Reason.SERVER_LOST)

