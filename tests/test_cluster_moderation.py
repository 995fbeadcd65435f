"""Room moderation across cluster nodes (real server processes, a real redis-server): one
set of modes, bans, operators and voice per room cluster-wide, kept in Redis; kicks,
invitations, the last-operator rule (also with the operator's node killed), races between
operators of two nodes, Redis out of reach, forged outcomes."""
from __future__ import annotations

import json
import signal

import pytest

from chatcore import events as ev
from chatcore.errors import ChatError, ErrorCode
from chatcore.events import Reason
from tests.test_cluster_nodes import eventually


def changed(client, by=None, room: str = "lobby") -> ev.RoomModeChanged:
    return client.wait_for(lambda e: type(e) is ev.RoomModeChanged and e.room == room
                           and (by is None or e.name == by))


def refused(code: ErrorCode, call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value
    return caught.value.message


def modes_of(client, room: str = "lobby") -> tuple:
    modes = client.room_modes(room)
    return modes.modes, {m.name: m.modes for m in modes.members}, modes.key, modes.limit


@pytest.fixture
def lobby(start_node, clients):
    """alice (on alpha) made #lobby; bob (beta) and carol (beta) joined it."""
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob, carol = clients(alpha, "alice"), clients(beta, "bob"), clients(beta, "carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "carol")
    return alpha, beta, alice, bob, carol


def test_the_first_member_cluster_wide_is_the_operator_everywhere(lobby):
    _, _, alice, bob, carol = lobby
    for client in (alice, bob, carol):
        assert modes_of(client)[1] == {"alice": "o"}
    # The first member of beta is no operator: beta's members cannot moderate.
    assert "not an operator" in refused(ErrorCode.NOT_OPERATOR, bob.set_room_mode, "lobby",
                                        "+m")


def test_a_mode_change_on_one_node_is_seen_and_enforced_on_every_node(lobby):
    _, _, alice, bob, carol = lobby
    alice.set_room_mode("lobby", "+mt")
    for client in (alice, bob, carol):
        got = changed(client, "alice")
        assert [(c.adding, c.mode) for c in got.changes] == [(True, "m"), (True, "t")]
        assert modes_of(client)[0] == "mnt"
    refused(ErrorCode.CANNOT_SPEAK, bob.send_room, "lobby", "hello?")     # +m on beta
    refused(ErrorCode.NOT_OPERATOR, carol.set_topic, "lobby", "mine")     # +t on beta
    alice.set_room_mode("lobby", "+v bob")          # a member of another node: no refusal
    for client in (bob, carol):
        assert changed(client, "alice").changes == (ev.ModeChange(True, "v", "bob"),)
    bob.send_room("lobby", "voiced now")
    assert alice.wait_for(ev.RoomMessage).text == "voiced now"
    alice.set_room_mode("lobby", "+o carol")
    assert changed(bob, "alice").changes == (ev.ModeChange(True, "o", "carol"),)
    carol.set_topic("lobby", "carol may")           # an operator made on alpha, on beta
    carol.set_room_mode("lobby", "-m")              # and moderates from beta
    assert changed(alice, "carol").changes == (ev.ModeChange(False, "m"),)
    assert modes_of(alice)[1] == {"alice": "o", "bob": "v", "carol": "o"}


def test_keys_limits_invite_only_and_bans_refuse_joins_on_every_node(start_node, clients,
                                                                     redis_server,
                                                                     cluster_name):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("lobby")
    alice.set_room_mode("lobby", "+k sesame")
    refused(ErrorCode.BAD_ROOM_KEY, bob.join, "lobby")      # beta opens the room: refused
    bob.join("lobby", "sesame")
    alice.set_room_mode("lobby", "+l 2")
    changed(bob, "alice")
    dave, erin = clients(beta, "dave"), clients(alpha, "erin")
    refused(ErrorCode.ROOM_FULL, dave.join, "lobby", "sesame")     # 2 members, cluster-wide
    refused(ErrorCode.ROOM_FULL, erin.join, "lobby", "sesame")
    alice.set_room_mode("lobby", "-lk+i")
    changed(bob, "alice")
    refused(ErrorCode.INVITE_ONLY, dave.join, "lobby")
    alice.set_room_mode("lobby", "-i+b dav*")
    changed(bob, "alice")
    refused(ErrorCode.BANNED, dave.join, "lobby")
    bob.room_modes("lobby")
    assert [b.mask for b in bob.room_modes("lobby").bans] == ["dav*!*@*"]
    erin.join("lobby")
    # The state is in Redis, versioned, beside the member set.
    base = f"{cluster_name}:v1:room:lobby"
    state = _hash(redis_server, base + ":modes")
    assert state["flags"] == "" and state["key"] == "" and state["limit"] == "0"
    assert json.loads(state["bans"])[0][:2] == ["dav*!*@*", "alice"]
    assert _hash(redis_server, base + ":privs") == {"alice": "o"}


def _hash(redis_server, key: str) -> dict:
    items = [x.decode() for x in redis_server.command("HGETALL", key)]
    return dict(zip(items[::2], items[1::2]))


def test_a_kick_of_a_member_of_another_node_is_seen_once_in_one_order(lobby):
    _, _, alice, bob, carol = lobby
    for client in (alice, bob, carol):
        client.drain()
    alice.send_room("lobby", "before")
    alice.kick("lobby", "bob", "behave")
    alice.send_room("lobby", "after")
    for client in (alice, carol):
        seen = []
        while len(seen) < 4:
            event = client.wait_for(lambda e: type(e) in (ev.RoomMessage, ev.Kicked,
                                                          ev.UserLeft))
            seen.append(event)
        assert [type(e) for e in seen] == [ev.RoomMessage, ev.Kicked, ev.UserLeft,
                                           ev.RoomMessage]
        assert (seen[1].name, seen[1].by, seen[1].reason) == ("bob", "alice", "behave")
        assert (seen[2].name, seen[2].reason) == ("bob", Reason.KICKED)
    kicked = bob.wait_for(ev.Kicked)
    assert bob.wait_for(ev.UserLeft).reason == Reason.KICKED and kicked.by == "alice"
    refused(ErrorCode.NOT_IN_ROOM, bob.send_room, "lobby", "still here?")
    assert bob.join("lobby").total == 3             # kicked, not banned
    assert modes_of(carol)[1] == {"alice": "o"}


def test_an_invitation_reaches_a_user_of_another_node_and_lets_it_in(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("lobby")
    alice.set_room_mode("lobby", "+ik sesame")
    refused(ErrorCode.INVITE_ONLY, bob.join, "lobby")
    alice.invite("lobby", "bob")
    invited = bob.wait_for(ev.Invited)
    assert (invited.room, invited.name) == ("lobby", "alice")
    assert bob.join("lobby").total == 2              # past +i and +k, once
    bob.leave("lobby")
    refused(ErrorCode.INVITE_ONLY, bob.join, "lobby")
    refused(ErrorCode.NO_SUCH_USER, alice.invite, "lobby", "nobody")
    alice.invite("lobby", "bob")
    bob.wait_for(ev.Invited)
    carol = clients(beta, "carol")
    carol.join("lobby2")                             # bob's invitation is to lobby only
    bob.join("lobby")
    refused(ErrorCode.ALREADY_IN_ROOM, alice.invite, "lobby", "bob")


def test_an_invitation_ends_with_the_room(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob, dave = clients(alpha, "alice"), clients(beta, "bob"), clients(alpha, "dave")
    alice.join("lobby")
    alice.set_room_mode("lobby", "+i")
    alice.invite("lobby", "bob")
    bob.wait_for(ev.Invited)
    alice.leave("lobby")                             # the room ends
    dave.join("lobby")                               # made anew: dave's, +i again
    dave.set_room_mode("lobby", "+i")
    refused(ErrorCode.INVITE_ONLY, bob.join, "lobby")


def test_the_last_operator_leaving_names_one_heir_the_longest_present(start_node, clients):
    nodes = [start_node(name) for name in ("alpha", "beta", "gamma")]
    alice = clients(nodes[0], "alice")
    alice.join("lobby")
    bob = clients(nodes[1], "bob")
    bob.join("lobby")                                # the longest present after alice
    carol, dave = clients(nodes[2], "carol"), clients(nodes[0], "dave")
    carol.join("lobby")
    dave.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "dave")
    alice.leave("lobby")
    for client in (bob, carol, dave):
        left = client.wait_for(lambda e: type(e) is ev.UserLeft and e.name == "alice")
        assert left.reason == Reason.CLOSED
        got = changed(client)
        assert (got.name, got.changes) == ("", (ev.ModeChange(True, "o", "bob"),))
    for client in (bob, carol, dave):
        assert modes_of(client)[1] == {"bob": "o"}
        assert not [e for e in client.drain() if type(e) is ev.RoomModeChanged]


def test_the_operators_node_killed_one_heir_is_named_by_the_nodes_that_notice(start_node,
                                                                             clients):
    alpha, beta, gamma = (start_node(name) for name in ("alpha", "beta", "gamma"))
    alice = clients(alpha, "alice")
    alice.join("lobby")
    bob, carol, dave = clients(beta, "bob"), clients(gamma, "carol"), clients(beta, "dave")
    for client in (bob, carol, dave):
        client.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "dave")
    alpha.signal(signal.SIGKILL)
    for client in (bob, carol, dave):
        left = client.wait_for(lambda e: type(e) is ev.UserLeft and e.name == "alice",
                               timeout=15)
        assert left.reason == Reason.SERVER_LOST
        got = changed(client)
        assert (got.name, got.changes) == ("", (ev.ModeChange(True, "o", "bob"),))
    for client in (bob, carol, dave):         # both nodes noticed; exactly one heir
        assert modes_of(client)[1] == {"bob": "o"}
    bob.set_room_mode("lobby", "+m")
    changed(carol, "bob")


def test_two_operators_on_two_nodes_racing_end_in_one_state_everywhere(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    carol, dave = clients(alpha, "carol"), clients(beta, "dave")
    for client in (alice, bob, carol, dave):
        client.join("lobby")
    alice.set_room_mode("lobby", "+o bob")
    changed(dave, "alice")
    for round_ in range(5):                          # modes at once, pipelined, both sides
        alice.send(ev.SetRoomMode("lobby", (ev.ModeChange(True, "k", f"a{round_}"),
                                            ev.ModeChange(True, "m"))))
        bob.send(ev.SetRoomMode("lobby", (ev.ModeChange(True, "k", f"b{round_}"),
                                          ev.ModeChange(False, "m"))))
    for client in (alice, bob):                      # every request answered
        for _ in range(5):
            client.wait_for(lambda e: type(e) in (ev.Ok, ev.Error))
    views = [modes_of(client) for client in (alice, bob, carol, dave)]
    assert all(view == views[0] for view in views), views
    # Kicking each other at once: one kick wins, everywhere.
    alice.send(ev.Kick("lobby", "bob", "race"))
    bob.send(ev.Kick("lobby", "alice", "race"))
    kicks = [carol.wait_for(ev.Kicked)]
    gone = kicks[0].name
    assert dave.wait_for(ev.Kicked).name == gone
    stays = {"alice": "bob", "bob": "alice"}[gone]
    for client in (carol, dave):
        assert modes_of(client)[1].get(stays) == "o"
        assert gone not in {m.name for m in client.list_users("lobby").users}
        assert not [e for e in client.drain() if type(e) is ev.Kicked]


def test_renamed_operator_keeps_its_flag_across_nodes(lobby, clients):
    alpha, _, alice, bob, carol = lobby
    alice.set_room_mode("lobby", "+v carol")
    changed(bob, "alice")
    carol.set_name("caroline")
    bob.wait_for(lambda e: type(e) is ev.NameChanged and e.new == "caroline")
    eventually(lambda: modes_of(alice)[1], lambda m: m == {"alice": "o", "caroline": "v"})
    alice.set_name("alicia")
    eventually(lambda: modes_of(bob)[1], lambda m: m == {"alicia": "o", "caroline": "v"})
    dave = clients(alpha, "dave")                    # a node opening the room later:
    dave.join("lobby")                               # from the shared state
    assert modes_of(dave)[1] == {"alicia": "o", "caroline": "v"}


def test_irc_mode_kick_and_invite_reach_members_of_another_node(start_node, clients, irc_on):
    from tests.irchelpers import irc_port
    alpha = start_node("alpha", "--irc-port", "0")
    beta = start_node("beta", "--irc-port", "0")
    alpha.irc_port, beta.irc_port = irc_port(alpha), irc_port(beta)
    dave = irc_on(alpha, "dave")
    dave.send("JOIN #lobby")
    dave.expect("366", "#lobby")
    bob, carol = clients(beta, "bob"), clients(beta, "carol")
    bob.join("lobby")
    dave.expect("JOIN", "#lobby")
    dave.send("MODE #lobby +v bob")
    assert dave.expect("MODE", "#lobby").params[1:] == ["+v", "bob"]
    assert changed(bob, "dave").changes == (ev.ModeChange(True, "v", "bob"),)
    dave.send("NAMES #lobby")
    names = []
    while (line := dave.expect_any("353", "366")).command == "353":
        names += line.params[-1].split()
    assert set(names) == {"+bob", "@dave"}
    dave.send("MODE #lobby +i")
    dave.expect("MODE", "#lobby")
    dave.send("INVITE carol #lobby")
    dave.expect("341", "carol")
    assert carol.wait_for(ev.Invited).name == "dave"
    carol.join("lobby")
    dave.send("KICK #lobby bob :out")
    kick = dave.expect("KICK", "#lobby")
    assert kick.params[1:] == ["bob", "out"]
    assert bob.wait_for(ev.Kicked).by == "dave"
    dave.send("KICK #lobby nobody")
    dave.expect("401", "nobody")
    erin = irc_on(beta, "erin")
    erin.send("JOIN #lobby")
    erin.expect("473", "#lobby")                    # +i on the other node too


def test_while_redis_is_out_of_reach_moderation_is_refused_and_modes_still_hold(
        start_node, clients, start_redis):
    redis = start_redis()
    alpha = start_node("alpha", redis_url=redis.url)
    beta = start_node("beta", redis_url=redis.url)
    alice, bob, carol = clients(alpha, "alice"), clients(beta, "bob"), clients(alpha, "carol")
    for client in (alice, bob, carol):
        client.join("lobby")
    alice.set_room_mode("lobby", "+m")
    changed(bob, "alice")
    redis.stop()
    alpha.wait_for_log("is unreachable", timeout=10)
    message = refused(ErrorCode.CLUSTER_UNREACHABLE, alice.set_room_mode, "lobby", "-m")
    assert "out of reach" in message
    refused(ErrorCode.CLUSTER_UNREACHABLE, alice.kick, "lobby", "carol")
    refused(ErrorCode.CANNOT_SPEAK, carol.send_room, "lobby", "x")      # +m still holds
    redis.start()                                    # empty: the nodes write their views back
    alpha.wait_for_log("reachable again", timeout=15)
    # Decided in Redis again (not refused as out of reach), and alice is still the operator.
    eventually(lambda: _decided(lambda: alice.set_room_mode("lobby", "-m")), bool,
               timeout=30)
    minus_m = (ev.ModeChange(False, "m", ""),)
    assert carol.wait_for(lambda e: type(e) is ev.RoomModeChanged
                          and e.changes == minus_m).name == "alice"
    eventually(lambda: modes_of(bob)[1].get("alice"), lambda flags: flags == "o",
               timeout=10)              # beta's view too: the restore is published


def _decided(call) -> bool:
    """True once ``call`` is done, False while the cluster is out of reach; any other
    refusal fails the test."""
    try:
        call()
        return True
    except ChatError as exc:
        if exc.code != ErrorCode.CLUSTER_UNREACHABLE:
            raise
        return False


def test_forged_or_malformed_outcomes_are_skipped(lobby, redis_server, cluster_name):
    alpha, _, alice, bob, _ = lobby
    channel = f"{cluster_name}:v1:room:lobby"
    for forged in ({"kind": "modes", "changes": "nonsense"},
                   {"kind": "modes", "changes": [[1, "m", ""], [True, "zz", ""], [True]]},
                   {"kind": "kick", "name": 5},
                   {"kind": "kick"}):
        redis_server.command("PUBLISH", channel, json.dumps(
            {"v": 1, "node": "forger", "instance": "x", "seq": 1, "by": "x", "refused": "",
             **forged}))
    alice.set_room_mode("lobby", "+s")
    assert changed(bob, "alice").changes == (ev.ModeChange(True, "s"),)
    assert modes_of(bob)[0] == "ns"
    assert alpha.proc.poll() is None


def test_the_ban_list_and_modes_are_loaded_by_a_node_opening_the_room_later(start_node,
                                                                            clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice = clients(alpha, "alice")
    alice.join("lobby")
    alice.set_room_mode("lobby", "+tl+b 3 zed")
    bob = clients(beta, "bob")
    joined_modes = bob.join("lobby") and bob.room_modes("lobby")
    assert (joined_modes.modes, joined_modes.limit) == ("lnt", 3)
    assert [(b.mask, b.set_by) for b in joined_modes.bans] == [("zed!*@*", "alice")]
    assert {m.name: m.modes for m in joined_modes.members} == {"alice": "o"}


def test_an_operator_kicking_itself_off_its_node_is_answered_once_and_has_an_heir(
        start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob")
    alice.kick("lobby", "alice", "off I go")         # the room ends on alpha
    assert alice.wait_for(ev.UserLeft).reason == Reason.KICKED
    assert bob.wait_for(ev.Kicked).name == "alice"
    got = changed(bob)
    assert (got.name, got.changes) == ("", (ev.ModeChange(True, "o", "bob"),))
    alice.whois("bob")                               # the next reply is this one's
    assert not [e for e in alice.drain() if type(e) in (ev.Ok, ev.Error)]


def test_a_secret_room_is_left_out_of_room_lists_on_every_node(lobby, clients):
    alpha, beta, alice, bob, _ = lobby
    erin, dave = clients(alpha, "erin"), clients(beta, "dave")
    erin.join("open")
    alice.set_room_mode("lobby", "+s")
    changed(bob, "alice")
    for client in (alice, bob, erin, dave):         # members and others, on both nodes
        assert [r.name for r in client.list_rooms().rooms] == ["open"]
        assert [r.name for r in client.list_rooms_page(pattern="*").rooms] == ["open"]
    alice.set_room_mode("lobby", "-s")
    changed(bob, "alice")
    assert [r.name for r in dave.list_rooms().rooms] == ["lobby", "open"]


def test_a_room_made_on_two_nodes_at_once_has_one_founder_everywhere(start_node, clients):
    """alice (alpha) and bob (beta) join a room new cluster-wide in the same instant: the
    join scripts run one after the other in Redis, so one of them made it and is its only
    operator, on both nodes; the other is a plain member, and both see each other."""
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob = clients(alpha, "alice"), clients(beta, "bob")
    for round_ in range(5):
        room = f"race{round_}"
        for client in (alice, bob):         # both requests on the way before any answer
            client.send(ev.JoinRoom(room))
        for client in (alice, bob):
            client.wait_for(lambda e: type(e) is ev.RoomJoined and e.room == room)
        for client in (alice, bob):
            eventually(lambda: {u.name for u in client.list_users(room).users},
                       lambda names: names == {"alice", "bob"})
        views = [eventually(lambda: modes_of(client, room)[1], lambda flags: len(flags) == 1)
                 for client in (alice, bob)]
        assert views[0] == views[1] and list(views[0].values()) == ["o"], views
