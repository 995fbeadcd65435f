"""The IRC front end on cluster nodes: IRC users of one node and users of another chat."""
from __future__ import annotations

import time

from chatcore import events as ev
from tests.irchelpers import irc_port


def _away_seen(client, nick: str, timeout: float = 10.0) -> None:
    """Wait until WHOIS from ``client`` shows ``nick`` away (records reach Redis on the
    other node's next tick)."""
    deadline = time.monotonic() + timeout
    while True:
        client.send(f"WHOIS {nick}")
        client.expect("318", nick)
        away = [m for m in client.drain() if m.command == "301"]
        if away or time.monotonic() > deadline:
            assert away, f"{nick} never shown away"
            return
        time.sleep(0.05)


def _nodes(start_node):
    alpha = start_node("alpha", "--irc-port", "0")
    beta = start_node("beta", "--irc-port", "0")
    alpha.irc_port, beta.irc_port = irc_port(alpha), irc_port(beta)
    return alpha, beta


def test_direct_messages_between_an_irc_user_and_a_user_of_another_node(start_node, clients,
                                                                        irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    dave = irc_on(alpha, "dave", caps="echo-message")
    erin = irc_on(beta, "erin")
    dave.send("PRIVMSG carol,erin :across nodes")
    assert dave.expect("PRIVMSG", "carol", "across nodes").source == "dave!dave@chatcore"
    dave.expect("PRIVMSG", "erin", "across nodes")
    got = carol.wait_for(ev.DirectMessage)
    assert (got.sender, got.text) == ("dave", "across nodes")
    assert erin.expect("PRIVMSG", "erin", "across nodes").source == "dave!dave@chatcore"
    carol.send_direct("dave", "right back")
    assert dave.expect("PRIVMSG", "dave", "right back").source == "carol!carol@chatcore"
    dave.send("PRIVMSG nobody,carol :x")
    dave.expect("401", "nobody")
    dave.expect("PRIVMSG", "carol", "x")
    carol.quit("bye")
    assert dave.expect("QUIT").params[-1] == "Quit: bye"


def test_a_labeled_message_to_a_user_of_another_node_is_answered_once_sent(start_node, clients,
                                                                          irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    dave = irc_on(alpha, "dave", caps="batch labeled-response echo-message")
    dave.send("@label=m1 PRIVMSG carol :hi", "@label=m2 PRIVMSG nobody :hi")
    assert dave.expect("PRIVMSG", "carol", "hi").tags == {"label": "m1"}
    assert dave.expect("401", "nobody").tags == {"label": "m2"}
    assert carol.wait_for(ev.DirectMessage).text == "hi"
    no_label = irc_on(alpha, "erin", caps="echo-message")
    no_label.send("PRIVMSG carol :plain")
    assert no_label.expect("PRIVMSG", "carol", "plain").tags == {}


def test_lookups_reach_users_of_other_nodes(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.set_away("on beta")
    irc_on(beta, "erin")
    dave = irc_on(alpha, "dave")
    _away_seen(dave, "carol")
    dave.send("WHOIS carol")
    assert dave.expect("311", "carol").params[-1] == "carol"
    assert dave.expect("312", "carol").params[-1] == "beta"
    assert dave.expect("301", "carol").params[-1] == "on beta"
    assert "RTT" in dave.expect("320", "carol").params[-1]
    dave.expect("317", "carol")
    dave.expect("318", "carol")
    dave.send("ISON carol nobody erin dave")
    assert dave.expect("303").params[-1] == "carol erin dave"
    dave.send("USERHOST carol erin")
    assert dave.expect("302").params[-1] == "carol=-carol@chatcore erin=+erin@chatcore"
    dave.send("WHO carol")
    assert dave.expect("352", "*", None, None, None, "carol").params[6] == "G"
    dave.expect("315", "carol")
    dave.send("MODE carol")
    dave.expect("502")
    dave.send("PRIVMSG carol :\x01VERSION\x01")
    assert dave.expect("NOTICE", "dave").source == "carol!carol@chatcore"
    dave.send("WHOIS nobody")
    dave.expect("401", "nobody")
    dave.expect("318", "nobody")


def test_actions_to_a_user_of_another_node(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    dave = irc_on(alpha, "dave")
    dave.send("PRIVMSG carol :\x01ACTION waves across\x01", "PING after")
    action = carol.wait_for(ev.DirectAction)
    assert (action.sender, action.text) == ("dave", "waves across")
    dave.expect("PONG")
    carol.send_direct_action("dave", "waves back")
    assert dave.expect("PRIVMSG", "dave").params[-1] == "\x01ACTION waves back\x01"


def test_labeled_lookups_waiting_for_the_cluster_get_their_whole_answer(start_node, clients,
                                                                       irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.set_away("out")
    dave = irc_on(alpha, "dave", caps="batch labeled-response echo-message")
    _away_seen(dave, "carol")
    dave.send("@label=w1 WHOIS carol")
    start = dave.expect("BATCH")
    assert start.tags == {"label": "w1"}
    ref = start.params[0][1:]
    for numeric in ("311", "312", "301", "320", "317", "318"):
        assert dave.expect(numeric, "carol").tags == {"batch": ref}
    dave.expect("BATCH", "-" + ref)
    dave.send("@label=i2 ISON carol nobody")
    ison = dave.expect("303")
    assert (ison.tags, ison.params[-1]) == ({"label": "i2"}, "carol")
    dave.send("@label=m3 PRIVMSG carol :hi")
    # The echo answers the command; carol's node sends the away reply on its own, later.
    assert dave.expect("PRIVMSG", "carol", "hi").tags == {"label": "m3"}
    assert dave.expect("301", "carol").tags == {}
    assert carol.wait_for(ev.DirectMessage).text == "hi"
