"""Resuming a session on another cluster node (real server processes, a real redis-server):
moving while the old node lives (it lets the session go), after the old node was killed
(no wait for its lease), the open chats and rooms coming along, and a wrong token refused."""
from __future__ import annotations

import signal

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ChatError, ErrorCode
from tests.test_cluster_nodes import eventually


def resume_on(node, old: ChatClient) -> ChatClient:
    """A new connection to ``node`` resuming ``old``'s session with its token."""
    client = ChatClient("127.0.0.1", node.port, timeout=10)
    client._open_socket()
    client.resume(old.name, old.resume_token)
    return client


def test_a_session_moves_to_another_live_node_with_its_chats(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, carol = clients(alpha, "alice"), clients(alpha, "carol")
    bob = clients(beta, "bob")
    alice.send_direct("bob", "hi bob")
    bob.wait_for(ev.DirectMessage)
    alice.send_direct("carol", "hi carol")
    carol.wait_for(ev.DirectMessage)
    alice.join("lobby")
    bob.join("lobby")
    # Rooms reach the resume record with the next announcement tick: seen in a whois.
    eventually(lambda: bob.whois("alice").rooms, lambda rooms: rooms)
    moved = resume_on(beta, alice)
    try:
        assert moved.welcome.name == "alice" and moved.welcome.server == "beta"
        opened = {moved.wait_for(ev.ChatOpened).peer for _ in range(2)}
        assert opened == {"bob", "carol"}
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        # The old node lets the old connection go.
        error = alice.wait_for(ev.Error)
        assert error.code == ErrorCode.SESSION_RESUMED
        # Chats go on, with the user on its new node.
        bob.send_direct("alice", "welcome to beta")
        assert moved.wait_for(ev.DirectMessage).text == "welcome to beta"
        carol.send_direct("alice", "you moved")
        assert moved.wait_for(ev.DirectMessage).text == "you moved"
        moved.send_direct("carol", "yes")
        assert carol.wait_for(ev.DirectMessage).text == "yes"
        assert not [e for e in carol.drain() + bob.drain() if isinstance(e, ev.ChatClosed)]
        assert moved.whois("carol").server == "alpha"
        assert carol.whois("alice").server == "beta"
        with pytest.raises(ChatError) as taken:
            clients(alpha, "alice")
        assert taken.value.code == ErrorCode.NAME_TAKEN
    finally:
        moved.close()


def test_a_session_of_a_killed_node_resumes_elsewhere_at_once(start_node, clients):
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    alice, bob = clients(alpha, "alice"), clients(gamma, "bob")
    alice.send_direct("bob", "hi")
    bob.wait_for(ev.DirectMessage)
    bob.send_direct("alice", "hi alice")
    alice.wait_for(ev.DirectMessage)
    alpha.signal(signal.SIGKILL)
    with pytest.raises((ConnectionClosed, OSError)):
        alice.wait_for(ev.DirectMessage, timeout=10)
    moved = resume_on(beta, alice)          # no wait for alpha's lease to run out
    try:
        assert moved.welcome.name == "alice" and moved.welcome.server == "beta"
        assert moved.wait_for(ev.ChatOpened).peer == "bob"
        # gamma drops alpha after the silence; bob's chat with alice is not lost with it.
        gamma.wait_for_log("node 'alpha' silent", timeout=15)
        bob.send_direct("alice", "still there?")
        assert moved.wait_for(ev.DirectMessage).text == "still there?"
        moved.send_direct("bob", "yes, on beta")
        assert bob.wait_for(ev.DirectMessage).text == "yes, on beta"
        assert not [e for e in bob.drain() if isinstance(e, ev.ChatClosed)]
    finally:
        moved.close()


def test_a_wrong_token_is_refused_on_another_node(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice = clients(alpha, "alice")
    client = ChatClient("127.0.0.1", beta.port, timeout=10)
    client._open_socket()
    try:
        for name, token in (("alice", "not-the-token"), ("nobody", alice.resume_token)):
            with pytest.raises(ChatError) as refused:
                client.resume(name, token)
            assert refused.value.code == ErrorCode.RESUME_REFUSED
    finally:
        client.close()
    alice.ping()                        # alice is untouched
    assert alice.whois("alice").server == "alpha"



def test_a_moved_session_stays_in_its_rooms_across_nodes(start_node, clients):
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    alice, carol = clients(alpha, "alice"), clients(gamma, "carol")
    alice.join("lobby")
    carol.join("lobby")
    eventually(lambda: carol.whois("alice").rooms, lambda rooms: rooms)   # in the record
    moved = resume_on(beta, alice)
    try:
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        alice.wait_for(ev.Error)            # SESSION_RESUMED: alpha let it go
        members = eventually(lambda: [u.name for u in carol.iter_users("lobby")],
                             lambda names: names == ["alice", "carol"]
                             and carol.whois("alice").server == "beta")
        assert members == ["alice", "carol"]
        carol.send_room("lobby", "still with us?")
        assert moved.wait_for(ev.RoomMessage).text == "still with us?"
        moved.send_room("lobby", "yes, from beta")
        assert carol.wait_for(lambda e: type(e) is ev.RoomMessage
                              and e.sender == "alice").text == "yes, from beta"
    finally:
        moved.close()


def _room_flags(client, room: str = "lobby") -> dict:
    return {member.name: member.modes for member in client.room_modes(room).members}


def _op_and_voice_across_nodes(start_node, clients):
    """alice (alpha) made #lobby, so is its operator, and voiced carol (gamma)."""
    alpha, beta, gamma = start_node("alpha"), start_node("beta"), start_node("gamma")
    alice, carol = clients(alpha, "alice"), clients(gamma, "carol")
    alice.join("lobby")
    carol.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "carol")
    alice.set_room_mode("lobby", "+v carol")
    carol.wait_for(ev.RoomModeChanged)
    eventually(lambda: carol.whois("alice").rooms, lambda rooms: rooms)   # in the record
    return alpha, beta, gamma, alice, carol


def _still_the_operator(moved: ChatClient, carol: ChatClient) -> None:
    """Every node sees alice's ``o`` and carol's ``v`` as before, nobody else was made
    operator in between, and alice moderates from her new node."""
    assert eventually(lambda: _room_flags(carol),
                      lambda flags: flags == {"alice": "o", "carol": "v"}
                      and carol.whois("alice").server == "beta")
    assert _room_flags(moved) == {"alice": "o", "carol": "v"}
    moved.set_room_mode("lobby", "+m")
    got = carol.wait_for(lambda e: type(e) is ev.RoomModeChanged and e.name == "alice")
    assert [(c.adding, c.mode) for c in got.changes] == [(True, "m")]
    heirs = [e for e in carol.drain() if type(e) is ev.RoomModeChanged and not e.name]
    assert not heirs, heirs             # no heir named while she moved


def test_room_flags_follow_a_session_moved_to_another_live_node(start_node, clients):
    alpha, beta, gamma, alice, carol = _op_and_voice_across_nodes(start_node, clients)
    moved = resume_on(beta, alice)
    try:
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        alice.wait_for(ev.Error)            # SESSION_RESUMED: alpha let it go
        _still_the_operator(moved, carol)
        # alpha's leave of the moved membership is published stale and taken quietly.
        alpha.wait_for_log("resumed on node 'beta'")
        moved.ping()
        carol.ping()
        for node in (beta, gamma):
            assert "does not know it" not in node.log, node.log
    finally:
        moved.close()


def test_room_flags_follow_a_session_of_a_killed_node(start_node, clients):
    alpha, beta, gamma, alice, carol = _op_and_voice_across_nodes(start_node, clients)
    alpha.signal(signal.SIGKILL)
    with pytest.raises((ConnectionClosed, OSError)):
        alice.wait_for(ev.DirectMessage, timeout=10)
    moved = resume_on(beta, alice)
    try:
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        gamma.wait_for_log("node 'alpha' silent", timeout=15)
        _still_the_operator(moved, carol)
    finally:
        moved.close()


# beta holds one room only, or lets a user be in one only (its rejoins are all started
# at once: those on the way count): of alice's two rooms, one cannot come along.
@pytest.mark.parametrize("limit", ["--max-rooms", "--max-rooms-per-user"])
def test_a_moved_member_passes_its_rooms_admission_and_one_it_cannot_rejoin_is_left(
        start_node, clients, limit):
    alpha, gamma = start_node("alpha"), start_node("gamma")
    beta = start_node("beta", limit, "1")
    alice, carol = clients(alpha, "alice"), clients(gamma, "carol")
    for room in ("lobby", "attic"):
        alice.join(room)
        carol.join(room)
    alice.set_room_mode("lobby", "+ik secret")      # she is in: no invitation, no key
    carol.wait_for(ev.RoomModeChanged)
    eventually(lambda: carol.whois("alice").rooms, lambda rooms: len(rooms) == 2)
    moved = resume_on(beta, alice)
    try:
        assert moved.wait_for(ev.RoomJoined).room == "lobby"
        assert _room_flags(moved) == {"alice": "o"}
        left = carol.wait_for(lambda e: type(e) is ev.UserLeft and e.room == "attic")
        assert (left.name, left.reason) == ("alice", ev.Reason.DISCONNECTED)
        assert "could not rejoin on server beta" in left.message
        members = eventually(lambda: ([u.name for u in carol.iter_users("lobby")],
                                      [u.name for u in carol.iter_users("attic")]),
                             lambda lists: lists == (["alice", "carol"], ["carol"]))
        assert members == (["alice", "carol"], ["carol"])
        assert not [e for e in carol.drain() if type(e) is ev.UserLeft and e.room == "lobby"]
    finally:
        moved.close()
