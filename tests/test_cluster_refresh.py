"""The announcement tick's rewrite of this node's user records, on an in-process node and a
real redis-server: a slice of users a loop turn, so a node of many users never holds its
clients' messages for the whole visit, and every changed user is still written."""
from __future__ import annotations

import json
import socket

import pytest

from chatcore import events as ev
from chatcore.cluster import presence_users
from chatcore.config import ServerConfig
from chatcore.protocol import encode_event
from tests.inprocess import running_server

USERS = 7
SLICE = 2


@pytest.fixture
def node(redis_server, cluster_name, monkeypatch):
    monkeypatch.setattr(presence_users, "REFRESH_SLICE_USERS", SLICE)
    config = ServerConfig(port=0, redis=redis_server.url, cluster_name=cluster_name,
                          server_name="alpha", node_announce_seconds=60,
                          node_silence_seconds=120)
    with running_server(config) as (server, turn_until):
        server.join_cluster()
        turn_until(lambda: server.cluster.broker.up)
        sockets = []
        for n in range(USERS):
            sock = socket.create_connection(server.address)
            sock.sendall(encode_event(ev.Hello(1, f"user{n}", request_id=1)))
            sockets.append(sock)
        turn_until(lambda: len(server.hub.sessions) == USERS)
        try:
            yield server, turn_until, redis_server
        finally:
            for sock in sockets:
                sock.close()
            server.cluster.close()


def _rtt(redis_server, cluster, key: str) -> int:
    raw = redis_server.command("HGET", f"{cluster._prefix}:userinfo", key)
    return json.loads(raw)["rtt"]


def test_the_tick_writes_every_changed_user_a_slice_a_turn(node):
    server, turn_until, redis_server = node
    cluster = server.cluster
    batches = []
    write = cluster._write_records
    cluster._write_records = lambda batch, callback=None: (batches.append(len(batch)),
                                                           write(batch, callback))
    for session in server.hub.sessions.values():
        session.rtt_seconds = 0.25              # measured since: news for every record
    cluster.refresh_users()
    assert batches == [SLICE]                   # the first slice now, the rest on later turns
    turn_until(lambda: cluster._refresh_left is None)
    assert sum(batches) == USERS and max(batches) <= SLICE
    cluster.broker.flush()
    turn_until(lambda: not cluster.broker.commands._callbacks)
    assert {_rtt(redis_server, cluster, key) for key in server.hub.sessions} == {250_000}


def test_a_newer_tick_takes_over_the_unfinished_one(node):
    server, turn_until, _ = node
    cluster = server.cluster
    turn_until(lambda: cluster._refresh_left is None)
    visited = []
    detector = cluster._detector
    cluster._detector = lambda session: (visited.append(session.key), detector(session))[1]
    cluster.refresh_users()
    cluster.refresh_users()                     # before the first one's next slice
    per_turn = [len(visited)]
    server.reactor.add_before_sleep(lambda: per_turn.append(len(visited)))
    turn_until(lambda: cluster._refresh_left is None)
    assert len(visited) == SLICE + USERS        # the first slice, then one whole visit ...
    assert max(b - a for a, b in zip(per_turn, per_turn[1:])) <= SLICE    # ... one chain


def test_a_tick_with_nothing_changed_still_renews_the_resume_records(node):
    server, turn_until, _ = node
    cluster = server.cluster
    turn_until(lambda: cluster._refresh_left is None)
    batches = []
    cluster._write_records = lambda batch, callback=None: batches.append(len(batch))
    cluster.refresh_users()
    turn_until(lambda: cluster._refresh_left is None)
    assert batches == [0]                       # one script, for its PEXPIRE
