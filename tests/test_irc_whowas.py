"""WHOWAS on a server alone: users of both front ends who quit, timed out or renamed,
with realname and time; the count argument; the per-nick and total limits; 406; and the
history's own rules (chatcore.irc.whowas.WhowasHistory) without a server."""
from __future__ import annotations

import time

from chatcore.irc.whowas import Gone, WhowasHistory
from tests.irchelpers import RawIrc


def _whowas(client: RawIrc, query: str) -> list:
    """The (314 params after the client, 312's server and time) pairs of one WHOWAS, up
    to its 369; ("406", nick) for a nick with no history."""
    client.send(f"WHOWAS {query}")
    entries = []
    while True:
        line = client.expect_any("314", "312", "406", "369")
        if line.command == "369":
            return entries
        if line.command == "406":
            entries.append(("406", line.params[1]))
        elif line.command == "314":
            entries.append((line.params[1:], client.expect("312").params[2:]))


def test_quit_rename_and_native_leave_are_remembered(irc, native):
    watcher = irc("watcher")
    alice = irc()
    alice.send("NICK alice", "USER al 0 * :Alice \x02Liddell\x02")      # formatting stripped
    alice.expect("001")
    before = time.time()
    alice.send("QUIT :bye")
    alice.expect_closed()
    bob = irc("bob")
    bob.send("SETNAME :Robert Tables")
    bob.send("NICK bobby")
    bob.expect("NICK", "bobby")
    carol = native("carol")
    carol.close()
    [(user, server)] = _whowas(watcher, "alice")
    assert user == ["alice", "alice", "chatcore", "*", "Alice Liddell"]
    assert "." in server[0]                 # the server the user was on
    assert "UTC" in server[1]
    gone = time.strptime(server[1], "%a %b %d %H:%M:%S %Y UTC")
    assert abs(time.mktime(gone) - time.timezone - before) < 60
    [(user, _)] = _whowas(watcher, "BOB")                   # case-insensitive
    assert user == ["bob", "bob", "chatcore", "*", "Robert Tables"]
    # A native user has no realname: its name stands in.
    deadline = time.monotonic() + 10
    while (entries := _whowas(watcher, "carol")) == [("406", "carol")]:
        assert time.monotonic() < deadline, "carol's leave never recorded"
    [(user, _)] = entries
    assert user == ["carol", "carol", "chatcore", "*", "carol"]
    # Online users are not in the history; nicks never seen get 406.
    assert _whowas(watcher, "bobby,ghost,no!name") == [("406", "bobby"), ("406", "ghost"),
                                                       ("406", "no!name")]
    watcher.send("WHOWAS")
    watcher.expect("431")


def test_count_newest_first_and_per_nick_limit(start_irc_server, irc_on):
    server = start_irc_server("--whowas-per-nick", "3")
    watcher = irc_on(server, "watcher")
    for n in range(5):
        user = irc_on(server)
        user.send("NICK dora", f"USER d 0 * :Dora {n}")
        user.expect("001")
        user.send("QUIT")
        user.expect_closed()
    realnames = [user[4] for user, _ in _whowas(watcher, "dora")]
    assert realnames == ["Dora 4", "Dora 3", "Dora 2"]      # newest first, 3 kept
    assert [user[4] for user, _ in _whowas(watcher, "dora 2")] == ["Dora 4", "Dora 3"]
    assert len(_whowas(watcher, "dora 0")) == 3             # 0 or no number: all
    assert len(_whowas(watcher, "dora x")) == 3


def test_total_limit_and_history_off(start_irc_server, irc_on):
    server = start_irc_server("--whowas-max-entries", "2")
    watcher = irc_on(server, "watcher")
    for nick in ("u1", "u2", "u3"):
        irc_on(server, nick).send("QUIT")
        watcher.send(f"WHOWAS {nick}")          # in order: each quit is in before the next
        watcher.expect_any("314", "406")
        watcher.expect("369")
    assert _whowas(watcher, "u1") == [("406", "u1")]           # the oldest went first
    assert [entry[0][0] for entry in _whowas(watcher, "u2,u3")] == ["u2", "u3"]

    off = start_irc_server("--whowas-per-nick", "0")
    watcher = irc_on(off, "watcher")
    quitter = irc_on(off, "quitter")
    quitter.send("QUIT")
    quitter.expect_closed()
    assert _whowas(watcher, "quitter") == [("406", "quitter")]


def test_a_ping_timeout_is_remembered(start_irc_server, irc_on):
    server = start_irc_server("--idle-timeout-seconds", "1")
    watcher = irc_on(server, "watcher")
    sleeper = irc_on(server, "sleeper")
    watcher.send("JOIN #room")
    watcher.expect("366")
    sleeper.send("JOIN #room")
    watcher.expect("JOIN", "#room")
    # The watcher answers its pings (RawIrc does not on its own), the sleeper never does.
    deadline = time.monotonic() + 10
    while True:
        line = watcher.expect_any("PING", "QUIT", timeout=5)
        if line.command == "QUIT":
            break
        watcher.send(f"PONG :{line.params[-1]}")
        assert time.monotonic() < deadline
    assert "Ping timeout" in line.params[-1]
    [(user, _)] = _whowas(watcher, "sleeper")
    assert user[:2] == ["sleeper", "sleeper"]


def test_history_bounds_without_a_server():
    now = [1000.0]
    history = WhowasHistory(per_nick=2, max_entries=3, seconds=60, wallclock=lambda: now[0])
    for name, at in (("a", 1000), ("A", 1001), ("a", 1002), ("b", 1003), ("c", 1004)):
        history.record(Gone(name, f"{name} {at}", "node", at))
    # a kept its newest 2, then the total (3) made a lose its oldest: a's last is oldest.
    assert [g.realname for g in history.lookup("a", 0)] == ["a 1002"]
    assert history.entries == 3
    assert [g.name for g in history.lookup("b", 5)] == ["b"]
    now[0] = 1063.5                                  # b and older are past 60 s
    assert history.lookup("b", 0) == [] and history.lookup("a", 0) == []
    assert [g.name for g in history.lookup("c", 1)] == ["c"]
    history.record(Gone("d", "d", "node", 1063.5))   # expires the old ones from the store
    assert history.entries == 2
    WhowasHistory(0, 10, 60).record(Gone("x", "x", "n", 0))     # off: nothing kept
