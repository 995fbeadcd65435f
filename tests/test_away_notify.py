"""Away changes told to the users sharing a room: the hub's AwayChanged (once per user), the
native frame, IRC's away-notify (with and without the cap), room members on other cluster
nodes, and the CLI's line."""
from __future__ import annotations

import pytest

from chatcore import events as ev
from chatcore.cli.formatting import format_text, record
from chatcore.hub import Hub, HubLimits, NodeInfo
from chatcore.protocol import Role, decode_frame, encode_event
from tests.cli_helpers import ScriptClient
from tests.test_cluster_nodes import eventually
from tests.test_hub import RecordingOutlet


# -- hub --------------------------------------------------------------------------------------

@pytest.fixture
def outlet():
    return RecordingOutlet()


@pytest.fixture
def users(outlet):
    hub = Hub(NodeInfo("node-a", "127.0.0.1", 7878), HubLimits())
    return hub, {name: hub.connect(name, outlet, name) for name in ("alice", "bob", "carol",
                                                                     "dave")}


def test_away_and_back_are_told_once_to_each_room_neighbour_only(outlet, users):
    hub, u = users
    for room in ("r1", "r2"):
        hub.join(u["alice"], room)
        hub.join(u["bob"], room)                # bob shares two rooms with alice
    hub.join(u["carol"], "r2")
    hub.open_chat(u["dave"], "alice")           # a chat is not a room: dave is not told
    outlet.received.clear()
    hub.set_away(u["alice"], "lunch")
    told = ev.AwayChanged("alice", "lunch")
    assert outlet.received == {"bob": [told], "carol": [told]}
    outlet.received.clear()
    hub.set_away(u["alice"], "lunch")           # no change: nobody told
    hub.set_away(u["bob"], "")                  # bob was not away
    assert outlet.received == {}
    hub.set_away(u["alice"], "")
    assert outlet.received == {"bob": [ev.AwayChanged("alice", "")],
                               "carol": [ev.AwayChanged("alice", "")]}


def test_away_changed_frame_round_trips():
    event = ev.AwayChanged("bob", "at lunch")
    data = encode_event(event)
    assert data[4] == 0xC2
    assert decode_frame(0xC2, 0, data[9:], role=Role.CLIENT) == event


def test_cli_prints_away_and_back():
    assert format_text(record("away_changed", name="bob", message="lunch")).endswith(
        " * bob is away: lunch")
    assert format_text(record("away_changed", name="bob", message="")).endswith(" * bob is back")


# -- native, real server ----------------------------------------------------------------------

def _away_events(client) -> list:
    client.ping()
    return [e for e in client.drain() if type(e) is ev.AwayChanged]


def test_native_clients_sharing_a_room_are_told(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.join("lobby")
    alice.join("other")
    bob.join("lobby")
    bob.join("other")
    alice.set_away("lunch")
    assert bob.wait_for(ev.AwayChanged) == ev.AwayChanged("alice", "lunch")
    assert _away_events(bob) == []              # two rooms in common, told once
    assert _away_events(carol) == [] and _away_events(alice) == []
    alice.back()
    assert bob.wait_for(ev.AwayChanged) == ev.AwayChanged("alice", "")


# -- IRC away-notify --------------------------------------------------------------------------

def test_irc_away_notify_tells_who_asked_and_follows_a_join(irc, native):
    notified, plain = irc("notified", caps="away-notify"), irc("plain")
    carol = native("carol")
    for client in (notified, plain):
        client.send("JOIN #lobby")
        client.expect("366")
    carol.join("lobby")
    carol.set_away("gone fishing")
    line = notified.expect("AWAY")
    assert line.source == "carol!carol@chatcore" and line.params == ["gone fishing"]
    carol.back()
    line = notified.expect("AWAY")
    assert line.source == "carol!carol@chatcore" and line.params == []
    plain.send("AWAY :brb")                     # an IRC user going away: told to the others
    plain.expect("306")
    assert notified.expect("AWAY").params == ["brb"]
    assert carol.wait_for(ev.AwayChanged) == ev.AwayChanged("plain", "brb")
    plain.send("PART #lobby")
    notified.expect("PART", "#lobby")
    notified.drain()
    plain.send("JOIN #lobby")                   # an away user joins: JOIN, then AWAY
    plain.expect("366")
    notified.sync()
    lines = [(m.command, m.params) for m in notified.drain()
             if m.source == "plain!plain@chatcore"]
    assert lines == [("JOIN", ["#lobby"]), ("AWAY", ["brb"])]
    plain.sync()
    assert [m for m in plain.drain() if m.command == "AWAY"] == []     # no cap: nothing


def test_irc_without_away_notify_gets_nothing_new(irc, native):
    plain = irc("plain")
    carol = native("carol")
    plain.send("JOIN #lobby")
    plain.expect("366")
    carol.join("lobby")
    plain.expect("JOIN", "#lobby")
    carol.set_away("away")
    carol.back()
    carol.set_away("again")
    carol.leave("lobby")
    carol.join("lobby")
    plain.expect("JOIN", "#lobby")
    plain.sync()
    assert [m.command for m in plain.drain() if m.command == "AWAY"] == []


# -- cluster ----------------------------------------------------------------------------------

def test_room_members_on_another_node_are_told_and_see_the_away_flag(start_node, clients):
    alpha, beta = start_node("alpha"), start_node("beta")
    alice, bob, carol = clients(alpha, "alice"), clients(beta, "bob"), clients(beta, "carol")
    for client in (alice, bob):
        client.join("lobby")
        client.join("other")
    alice.wait_for(lambda e: type(e) is ev.UserJoined and e.name == "bob" and e.room == "other")
    alice.set_away("lunch")
    assert bob.wait_for(ev.AwayChanged) == ev.AwayChanged("alice", "lunch")
    joined = carol.join("lobby")                # the away flag of a member of another node
    assert {m.name: m.away for m in joined.members} == {"alice": True, "bob": False,
                                                        "carol": False}
    alice.back()
    assert bob.wait_for(ev.AwayChanged) == ev.AwayChanged("alice", "")
    assert carol.wait_for(ev.AwayChanged) == ev.AwayChanged("alice", "")
    eventually(lambda: _away_events(bob), lambda got: got == [], timeout=1)


# -- CLI --------------------------------------------------------------------------------------

def test_a_listening_cli_prints_away_and_back(server, connect):
    listener = ScriptClient("--port", str(server.port), "--name", "carol", "--room", "#lobby")
    try:
        listener.expect(r"carol joined #lobby")
        alice = connect("alice")
        alice.join("lobby")
        listener.expect(r"alice joined #lobby")
        alice.set_away("lunch")
        listener.expect(r"^\d\d:\d\d:\d\d \* alice is away: lunch$")
        alice.back()
        listener.expect(r"^\d\d:\d\d:\d\d \* alice is back$")
        listener.write("/quit")
        status, _ = listener.finish()
        assert status == 0
    finally:
        listener.close()
