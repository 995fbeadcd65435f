"""IRCv3 capabilities, one test (or a few) each, over raw sockets and the ``irc`` library."""
from __future__ import annotations

import datetime
import re
import time

import irc.client

from chatcore import events as ev

_SERVER_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def _when(message) -> datetime.datetime:
    value = message.tags["time"]
    assert _SERVER_TIME.match(value), value
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def _joined(*clients, channel="#lobby"):
    for client in clients:
        client.send(f"JOIN {channel}")
        client.expect("366")


# -- server-time --------------------------------------------------------------------------


def test_server_time_tags_every_relayed_line_and_only_for_clients_that_asked(irc, native):
    timed, plain = irc("timed", caps="server-time"), irc("plain")
    carol = native("carol")
    _joined(timed, plain)
    carol.join("lobby")
    ack = carol.send_room("lobby", "hello")
    message = timed.expect("PRIVMSG", "#lobby", "hello")
    assert _when(message) == datetime.datetime.fromtimestamp(ack.timestamp_ms / 1000,
                                                             datetime.timezone.utc)
    assert plain.expect("PRIVMSG", "#lobby", "hello").tags == {}
    now = datetime.datetime.now(datetime.timezone.utc)
    plain.send("PRIVMSG #lobby :from plain", "TOPIC #lobby :a topic", "NICK plain2",
               "PART #lobby")
    for command, params in (("PRIVMSG", ("#lobby", "from plain")), ("TOPIC", ("#lobby",)),
                            ("NICK", ("plain2",)), ("PART", ("#lobby",))):
        line = timed.expect(command, *params)
        assert abs((_when(line) - now).total_seconds()) < 60, line
    carol.send_direct("timed", "direct")
    _when(timed.expect("PRIVMSG", "timed", "direct"))
    carol.send_room_action("lobby", "waves")
    _when(timed.expect("PRIVMSG", "#lobby", "\x01ACTION waves\x01"))
    carol.quit("bye")
    _when(timed.expect("QUIT"))
    # Numerics are the server's own replies, not relayed: no tag needed (none sent).
    timed.send("JOIN #other")
    assert "time" in timed.expect("JOIN", "#other").tags
    assert timed.expect("366").tags == {}


def test_server_time_is_fixed_once_registered(irc):
    alice = irc("alice")
    alice.send("CAP REQ server-time")
    alice.expect("CAP", "alice", "NAK")
    timed = irc("timed", caps="server-time")
    timed.send("CAP REQ -server-time")
    timed.expect("CAP", "timed", "NAK")
    timed.send("CAP REQ :echo-message")          # the others can still change
    timed.expect("CAP", "timed", "ACK")


# -- message-tags ---------------------------------------------------------------------------


def test_message_tags_accepts_client_tags_and_relays_none(irc):
    alice = irc("alice", caps="message-tags server-time")
    bob = irc("bob", caps="message-tags")
    _joined(alice, bob)
    alice.send("@+typing=active TAGMSG #lobby", "@+draft/reply=1;+x=y PRIVMSG #lobby :tagged")
    line = bob.expect("PRIVMSG", "#lobby", "tagged")
    assert line.tags == {}
    bob.sync()
    assert not [m for m in bob.seen if m.command == "TAGMSG"]
    alice.send("TAGMSG")
    alice.expect("411")


def test_isupport_says_client_tags_are_denied(irc):
    client = irc()
    client.send("NICK alice", "USER a 0 * :Alice")
    tokens = []
    client.expect("001")
    for _ in range(2):
        tokens += client.expect("005").params[1:-1]
    assert "CLIENTTAGDENY=*" in tokens
    assert "UTF8ONLY" in tokens
    assert "TOPICLEN=390" in tokens and "AWAYLEN=200" in tokens and "NAMELEN=100" in tokens


# -- labeled-response and batch -------------------------------------------------------------


def test_labeled_response_one_line_batch_and_ack(irc):
    alice = irc("alice", caps="batch labeled-response message-tags")
    alice.send("@label=p1 PING :token")
    pong = alice.expect("PONG")
    assert pong.tags == {"label": "p1"}
    alice.send("@label=w2 WHOIS alice")
    start = alice.expect("BATCH")
    assert start.tags == {"label": "w2"}
    ref = start.params[0]
    assert ref.startswith("+") and start.params[1] == "labeled-response"
    for numeric in ("311", "312", "320", "317", "318"):
        assert alice.expect(numeric).tags == {"batch": ref[1:]}
    end = alice.expect("BATCH")
    assert end.params == ["-" + ref[1:]]
    alice.send("@label=a3 PONG :nothing-to-say")
    ack = alice.expect("ACK")
    assert ack.tags == {"label": "a3"}


def test_labeled_response_covers_a_commands_own_relayed_lines(irc):
    alice = irc("alice", caps="batch labeled-response echo-message")
    bob = irc("bob")
    _joined(alice, bob)
    alice.send("@label=m1 PRIVMSG #lobby :hi")
    echo = alice.expect("PRIVMSG", "#lobby", "hi")
    assert echo.tags == {"label": "m1"}
    assert bob.expect("PRIVMSG", "#lobby", "hi").tags == {}
    alice.send("@label=j2 JOIN #kitchen")
    start = alice.expect("BATCH")
    assert start.tags == {"label": "j2"}
    join = alice.expect("JOIN", "#kitchen")
    assert join.tags == {"batch": start.params[0][1:]}
    alice.expect("366")
    alice.expect("BATCH", "-" + start.params[0][1:])
    bob.send("AWAY :lunch")
    bob.expect("306")
    alice.send("@label=d3 PRIVMSG bob :there?")           # the echo and the away reply
    start = alice.expect("BATCH")
    assert start.tags == {"label": "d3"}
    ref = start.params[0][1:]
    assert alice.expect("PRIVMSG", "bob", "there?").tags == {"batch": ref}
    assert alice.expect("301", "bob").tags == {"batch": ref}
    alice.expect("BATCH", "-" + ref)
    # An escaped label comes back as it was sent.
    alice.send(r"@label=a\sb\:c PING x")
    assert alice.expect("PONG").tags == {"label": "a b;c"}


def test_no_labels_without_batch_or_before_registration(irc):
    alice = irc("alice", caps="labeled-response")
    alice.send("@label=p1 PING :token")
    assert alice.expect("PONG").tags == {}


# -- setname ------------------------------------------------------------------------------


def test_setname_changes_the_realname_and_tells_those_who_asked(irc, native):
    alice = irc("alice", caps="setname")
    bob, dave = irc("bob", caps="setname"), irc("dave")
    carol = native("carol")
    _joined(alice, bob, dave)
    carol.join("lobby")
    alice.send("SETNAME :Alice \x02Liddell\x02")
    assert alice.expect("SETNAME").params == ["Alice Liddell"]
    line = bob.expect("SETNAME")
    assert (line.source, line.params) == ("alice!alice@chatcore", ["Alice Liddell"])
    dave.send("WHOIS alice")
    assert dave.expect("311", "alice").params[-1] == "Alice Liddell"
    dave.send("WHO #lobby")
    assert dave.expect("352", "#lobby", None, None, None, "alice").params[-1] == \
        "0 Alice Liddell"
    dave.sync()
    assert not [m for m in dave.seen if m.command == "SETNAME"]
    alice.send("SETNAME :" + "x" * 101)
    fail = alice.expect("FAIL")
    assert fail.params[:2] == ["SETNAME", "INVALID_REALNAME"]
    # The chatcore name is unchanged: only NICK changes that.
    assert carol.whois("alice").name == "alice"


# -- with the irc library -------------------------------------------------------------------


def test_library_negotiates_caps_and_reads_tags(irc_server, native):
    reactor = irc.client.Reactor()
    events: list = []
    reactor.add_global_handler("all_events", lambda c, e: events.append(e), -10)
    conn = reactor.server().connect("127.0.0.1", irc_server.irc_port, "bot")

    def wait(match):
        deadline = time.monotonic() + 10
        while True:
            for i, event in enumerate(events):
                if match(event):
                    return events.pop(i)
            assert time.monotonic() < deadline, [(e.type, e.arguments) for e in events]
            reactor.process_once(0.05)

    try:
        wait(lambda e: e.type == "welcome")
        conn.cap("REQ", "echo-message", "setname", "batch", "labeled-response")
        assert wait(lambda e: e.type == "cap").arguments[0] == "ACK"
        conn.join("#lobby")
        wait(lambda e: e.type == "endofnames")
        carol = native("carol")
        carol.join("lobby")
        conn.send_raw("@label=x1 PRIVMSG #lobby :hello")
        echo = wait(lambda e: e.type == "pubmsg")
        assert echo.arguments == ["hello"]
        assert {"key": "label", "value": "x1"} in echo.tags
        assert carol.wait_for(ev.RoomMessage).text == "hello"
        conn.action("#lobby", "beeps")
        assert carol.wait_for(ev.RoomAction).text == "beeps"
        carol.send_room_action("lobby", "boops")
        action = wait(lambda e: e.type == "action" and e.source.nick == "carol")
        assert action.arguments == ["boops"]
    finally:
        conn.close()


def test_a_labeled_quit_gets_its_error_line_labeled(irc):
    alice = irc("alice", caps="batch labeled-response")
    alice.send("@label=q1 QUIT :bye")
    error = alice.expect("ERROR")
    assert error.tags == {"label": "q1"}
    alice.expect_closed()
