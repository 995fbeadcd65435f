"""The IRC front end on cluster nodes: IRC users of one node and users of another chat."""
from __future__ import annotations

from chatcore import events as ev
from tests.irchelpers import irc_port


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
