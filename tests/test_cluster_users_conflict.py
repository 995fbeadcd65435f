"""The name-conflict rule (real server processes, real redis-server): when a node was cut off
from the cluster for longer than its lease and a user of another node claimed one of its
users' names meanwhile, the name stays with that user (the holder in Redis) and the user of
the node that comes back gets a guest name; both are told (NameChanged, NAME_CONFLICT)."""
from __future__ import annotations

import signal

from chatcore import events as ev
from chatcore.errors import ErrorCode
from tests.test_cluster_names import welcomed_when_free
from tests.test_cluster_nodes import eventually


def check_conflict_resolved(old_alice, new_alice, bob) -> None:
    renamed = old_alice.wait_for(ev.NameChanged, timeout=20)
    assert renamed.old == "alice" and renamed.new.startswith("guest-")
    error = old_alice.wait_for(ev.Error)
    assert error.code == ErrorCode.NAME_CONFLICT and not error.fatal
    assert renamed.new in error.message
    told = new_alice.wait_for(ev.Error, timeout=20)
    assert told.code == ErrorCode.NAME_CONFLICT and "stays yours" in told.message
    # bob, who shared a room with the renamed user on its node, saw the rename.
    assert bob.wait_for(ev.NameChanged).new == renamed.new
    # One name, one user, cluster-wide.
    users = eventually(lambda: {u.name: u.server for u in bob.iter_users()},
                       lambda u: u.get("alice") == "beta" and renamed.new in u)
    assert users[renamed.new] == "alpha"
    bob.send_direct(renamed.new, "you were alice")
    old_alice.name = renamed.new
    assert old_alice.wait_for(ev.DirectMessage).text == "you were alice"


def test_a_stalled_node_loses_a_name_claimed_meanwhile(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    old_alice, bob = clients(alpha, "alice"), clients(alpha, "bob")
    old_alice.join("lobby")
    bob.join("lobby")
    alpha.signal(signal.SIGSTOP)        # longer than its lease: its alive key expires
    try:
        new_alice, _ = welcomed_when_free(beta, "alice", timeout=15)
    finally:
        alpha.signal(signal.SIGCONT)
    try:
        check_conflict_resolved(old_alice, new_alice, bob)
    finally:
        new_alice.close()


def test_a_name_claimed_while_a_node_was_cut_off_from_redis(start_redis, start_node,
                                                            clients):
    redis = start_redis()
    alpha = start_node("alpha", redis_url=redis.url)
    beta = start_node("beta", redis_url=redis.url)
    old_alice, bob = clients(alpha, "alice"), clients(alpha, "bob")
    old_alice.join("lobby")
    bob.join("lobby")
    alpha.signal(signal.SIGSTOP)        # alpha misses the restart; beta is back first
    try:
        redis.stop()
        redis.start()
        beta.wait_for_log("reachable again", timeout=15)
        new_alice, _ = welcomed_when_free(beta, "alice", timeout=15)
    finally:
        alpha.signal(signal.SIGCONT)
    try:
        alpha.wait_for_log("reachable again", timeout=15)
        check_conflict_resolved(old_alice, new_alice, bob)
        assert "its user here gets a guest name" in alpha.log
    finally:
        new_alice.close()
