"""Users across cluster nodes (real server processes, a real redis-server): the user list from
Redis with each user's node and RTT, paged and filtered; a dead node's users gone within the
silence; actions, away replies, whois and renames across nodes; per-origin numbering of user
channel messages."""
from __future__ import annotations

import signal
import time

import pytest

from chatcore import events as ev
from chatcore.cluster.users import Users
from chatcore.errors import ChatError, ErrorCode
from tests.conftest import SILENCE_SECONDS
from tests.test_cluster_nodes import eventually


def users_by_name(client) -> dict[str, ev.UserInfo]:
    return {user.name: user for user in client.iter_users()}


def test_the_user_list_holds_every_node_users_with_their_node_and_rtt(start_node, clients):
    nodes = {name: start_node(name) for name in ("alpha", "beta", "gamma")}
    expected, everyone = {}, []
    for name, node in nodes.items():
        for i in range(2):
            user = f"{name}-user{i}"
            everyone.append(clients(node, user))
            expected[user] = name
    viewers = {name: clients(node, f"viewer-{name}") for name, node in nodes.items()}
    expected.update({f"viewer-{name}": name for name in nodes})
    everyone += viewers.values()

    def listed_by(viewer):
        for client in everyone:             # reading answers the server's pings: RTT
            client.drain()
        return users_by_name(viewer)

    for viewer in viewers.values():       # every node answers the same list
        listing = eventually(lambda v=viewer: listed_by(v),
                             lambda users: {u: i.server for u, i in users.items()} == expected
                             and all(i.rtt_us != ev.UNKNOWN_RTT for i in users.values()))
        assert all(0 < info.rtt_us < 5_000_000 for info in listing.values())
        names = [u.name for u in viewer.list_users().users]
        assert names == sorted(expected)


def test_the_user_list_is_paged_and_filtered_across_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    names = [f"u{i:02d}" for i in range(12)]
    for index, name in enumerate(names):
        clients(alpha if index % 2 else beta, name)
    viewer = clients(alpha, "viewer")
    pages = []
    after = ""
    while True:
        page = viewer.list_users_page(after=after, limit=5)
        pages.append([u.name for u in page.users])
        if not page.next_after:
            break
        after = page.next_after
    assert [name for page in pages for name in page] == names + ["viewer"]
    assert all(len(page) <= 5 for page in pages)
    assert page.total == 13
    matched = viewer.list_users_page(pattern="u0[2-5]")
    assert [u.name for u in matched.users] == ["u02", "u03", "u04", "u05"]
    assert {u.server for u in matched.users} == {"alpha", "beta"}
    one = viewer.list_users_page(pattern="U07")
    assert [(u.name, u.server) for u in one.users] == [("u07", "alpha")]
    with pytest.raises(ChatError) as refused:
        viewer.list_users_page(pattern="bad pattern")
    assert refused.value.code == ErrorCode.LIST_PATTERN_INVALID


def test_a_killed_node_users_leave_the_list_within_the_silence(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    viewer = clients(alpha, "viewer")
    clients(beta, "doomed")
    eventually(lambda: users_by_name(viewer), lambda users: "doomed" in users)
    beta.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    eventually(lambda: users_by_name(viewer), lambda users: "doomed" not in users,
               timeout=15)
    assert time.monotonic() - killed_at <= 10 * SILENCE_SECONDS


def test_actions_and_away_replies_cross_nodes_once_per_away_period(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    ack = alice.send_direct_action("bob", "waves")
    action = bob.wait_for(ev.DirectAction)
    assert (action.sender, action.text, action.msg_id) == ("alice", "waves", ack.msg_id)
    bob.set_away("at lunch")
    alice.send_direct("bob", "are you there?")
    reply = alice.wait_for(ev.AwayReply)
    assert (reply.name, reply.message) == ("bob", "at lunch")
    alice.send_direct("bob", "hello?")
    alice.send_direct_action("bob", "knocks")
    assert [m.text for m in (bob.wait_for(ev.DirectMessage), bob.wait_for(ev.DirectMessage))
            ] == ["are you there?", "hello?"]
    bob.wait_for(ev.DirectAction)
    alice.ping()
    assert not [e for e in alice.drain() if isinstance(e, ev.AwayReply)]
    bob.set_away("gone home")           # a new away period: one reply again
    alice.send_direct("bob", "bye")
    assert alice.wait_for(ev.AwayReply).message == "gone home"
    listed = eventually(lambda: users_by_name(alice), lambda u: u.get("bob") is not None
                        and u["bob"].away == "gone home")
    assert listed["bob"].server == "beta"


def test_whois_of_a_user_of_another_node(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("lobby")
    bob.join("lobby")
    bob.join("elsewhere")
    bob.set_away("brb")
    before_ms = int(time.time() * 1000)
    details = eventually(lambda: (bob.drain(), alice.whois("BOB"))[1],     # bob pongs
                         lambda d: d.rtt_us != ev.UNKNOWN_RTT and d.rooms)
    assert (details.name, details.server, details.away) == ("bob", "beta", "brb")
    assert 0 < details.connected_at_ms <= before_ms
    assert details.idle_seconds <= 15
    assert [room.name for room in details.rooms] == ["lobby"]
    with pytest.raises(ChatError) as refused:
        alice.whois("nobody")
    assert refused.value.code == ErrorCode.NO_SUCH_USER


def test_a_rename_claims_the_new_name_and_tells_partners_on_other_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    clients(alpha, "taken")
    alice.send_direct("bob", "hi")
    bob.wait_for(ev.DirectMessage)
    with pytest.raises(ChatError) as refused:
        bob.set_name("Taken")               # held on the other node
    assert refused.value.code == ErrorCode.NAME_TAKEN
    changed = bob.set_name("robert")
    assert (changed.old, changed.new) == ("bob", "robert")
    told = alice.wait_for(ev.NameChanged)
    assert (told.old, told.new) == ("bob", "robert")
    alice.send_direct("robert", "hello robert")
    assert bob.wait_for(ev.DirectMessage).text == "hello robert"
    with pytest.raises(ChatError) as gone:
        alice.send_direct("bob", "still bob?")
    assert gone.value.code == ErrorCode.NO_SUCH_USER
    clients(alpha, "bob").quit()        # the old name is free cluster-wide
    with pytest.raises(ChatError) as held:
        clients(alpha, "ROBERT")
    assert held.value.code == ErrorCode.NAME_TAKEN
    eventually(lambda: users_by_name(alice), lambda u: "robert" in u and "bob" not in u)


def test_user_channel_messages_arrive_numbered_without_gaps(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    for i in range(30):
        alice.send_direct("bob", f"line {i}")
    assert [bob.wait_for(ev.DirectMessage).text for _ in range(30)] == [
        f"line {i}" for i in range(30)]
    assert "missed" not in beta.log


class _Counter(Users):
    """Only the numbering of ``Users``, on no broker."""

    def __init__(self):
        self._init_users()


def test_a_jump_in_a_user_channel_sequence_is_counted_and_logged(caplog):
    counter = _Counter()
    for seq in (1, 2, 5, 6):
        counter._count_user_gap("bob", {"seq": seq, "instance": "i1", "node": "alpha"})
    counter._count_user_gap("bob", {"seq": 9, "instance": "i2", "node": "gamma"})   # first
    counter._count_user_gap("bob", {"seq": 1, "instance": "i1", "node": "alpha"})   # restart
    counter._count_user_gap("bob", {"seq": 2, "instance": "i1", "node": "alpha"})
    assert counter.user_message_gaps == 2
    assert [r.getMessage() for r in caplog.records if "missed" in r.getMessage()] == [
        "cluster: missed 2 message(s) from node 'alpha' to user 'bob' (seq 5 after 2)"]


def test_a_rename_reaches_room_members_on_other_nodes(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob, carol = clients(alpha, "alice"), clients(beta, "bob"), clients(beta, "carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    eventually(lambda: [u.name for u in bob.iter_users("lobby")],
               lambda names: names == ["alice", "bob", "carol"])
    alice.set_name("alicia")
    for member in (bob, carol):
        told = member.wait_for(ev.NameChanged)
        assert (told.old, told.new) == ("alice", "alicia")
    assert [u.name for u in bob.iter_users("lobby")] == ["alicia", "bob", "carol"]
    bob.send_room("lobby", "hello alicia")
    assert alice.wait_for(lambda e: type(e) is ev.RoomMessage
                          and e.sender == "bob").text == "hello alicia"
    alice.leave("lobby")
    eventually(lambda: [u.name for u in carol.iter_users("lobby")],
               lambda names: names == ["bob", "carol"])
