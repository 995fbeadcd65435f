"""The IRC front end on cluster nodes: IRC users of one node and users of another chat."""
from __future__ import annotations

import signal
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
    erin = irc_on(beta, "erin")
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
    # CTCP: a native user of another node cannot take it (the server says so); an IRC
    # user of another node gets it, and its reply comes back (remote.py).
    dave.send("PRIVMSG carol :\x01VERSION\x01", "PRIVMSG erin :\x01VERSION\x01")
    assert dave.expect("NOTICE", "dave").params[-1].startswith(
        "CTCP VERSION not delivered to carol: carol uses the native protocol")
    request = erin.expect("PRIVMSG", "erin")
    assert (request.source, request.params[-1]) == ("dave!dave@chatcore", "\x01VERSION\x01")
    erin.send("NOTICE dave :\x01VERSION weechat 4.0\x01")
    reply = dave.expect("NOTICE", "dave")
    assert (reply.source, reply.params[-1]) == ("erin!erin@chatcore",
                                                "\x01VERSION weechat 4.0\x01")
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
    # carol's away message is read from her record with the message sent: one answer,
    # 301 then the echo, as on one node; her node sends none of its own.
    start = dave.expect("BATCH")
    assert start.tags == {"label": "m3"}
    ref = start.params[0][1:]
    away = dave.expect("301", "carol")
    assert (away.tags, away.params[-1]) == ({"batch": ref}, "out")
    assert dave.expect("PRIVMSG", "carol", "hi").tags == {"batch": ref}
    dave.expect("BATCH", "-" + ref)
    assert carol.wait_for(ev.DirectMessage).text == "hi"
    dave.send("@label=m4 PRIVMSG carol :again")     # told once per away message
    assert dave.expect("PRIVMSG", "carol", "again").tags == {"label": "m4"}
    assert carol.wait_for(ev.DirectMessage).text == "again"
    dave.sync()
    assert not [m for m in dave.drain() if m.command == "301"]


# -- channels, lists and counts across the cluster ---------------------------------------


def _names(client, channel: str) -> set:
    """Every name of one channel's 353 lines, up to its 366."""
    names = set()
    while True:
        line = client.expect_any("353", "366")
        if line.command == "366":
            assert line.params[1] == channel
            return names
        names.update(name.lstrip("@+") for name in line.params[-1].split())


def test_join_and_names_list_the_members_of_every_node(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.join("lobby")
    erin = irc_on(beta, "erin")
    erin.send("JOIN #lobby")
    erin.expect("366", "#lobby")
    dave = irc_on(alpha, "dave")
    # alpha opens the room from Redis: the names come once the join is complete.
    dave.send("JOIN #lobby", "PING after-join")
    assert dave.expect("JOIN", "#lobby").source.startswith("dave!")
    assert _names(dave, "#lobby") == {"carol", "erin", "dave"}
    dave.expect("PONG", None, "after-join")
    dave.send("NAMES #lobby,#nowhere")
    assert _names(dave, "#lobby") == {"carol", "erin", "dave"}
    dave.expect("366", "#nowhere")
    while carol.wait_for(ev.UserJoined).name != "dave":     # its own, erin's, then dave's
        pass


def test_list_shows_rooms_and_member_counts_of_every_node(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    carol, frank = clients(beta, "carol"), clients(beta, "frank")
    carol.join("beta-only")
    frank.join("beta-only")
    carol.set_topic("beta-only", "kept in Redis")
    carol.join("shared")
    carol.join("quiet")
    dave = irc_on(alpha, "dave")
    dave.send("JOIN #shared")
    dave.expect("366", "#shared")
    dave.send("TOPIC #shared :set on alpha")
    dave.expect("TOPIC", "#shared")
    dave.send("LIST")
    dave.expect("321")
    listed = {}
    while (line := dave.expect_any("322", "323")).command == "322":
        listed[line.params[1]] = tuple(line.params[2:])
    # Topics of rooms with no member here come from the shared state too.
    assert listed == {"#beta-only": ("2", "kept in Redis"), "#quiet": ("1", ""),
                      "#shared": ("2", "set on alpha")}
    dave.send("LIST #beta-only,#nowhere,#bad*name")
    dave.expect("321")
    assert dave.expect_any("322", "323").params[1:] == ["#beta-only", "2", "kept in Redis"]
    dave.expect("323")
    # TOPIC of a channel with no member on this node: read, not set.
    dave.send("TOPIC #beta-only", "TOPIC #quiet", "TOPIC #beta-only :mine now",
              "TOPIC #nowhere")
    assert dave.expect("332", "#beta-only").params[-1] == "kept in Redis"
    who = dave.expect("333", "#beta-only")
    assert who.params[2] == "carol!carol@chatcore" and abs(int(who.params[3]) - time.time()) < 60
    dave.expect("331", "#quiet")
    dave.expect("442", "#beta-only")
    dave.expect("403", "#nowhere")


def test_lusers_counts_the_users_and_servers_of_the_cluster(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    clients(beta, "carol")
    irc_on(beta, "erin")
    dave = irc_on(alpha, "dave")
    deadline = time.monotonic() + 10
    while True:         # beta's count reaches alpha with its next announcement
        dave.send("LUSERS")
        client_line = dave.expect("251").params[-1]
        me = dave.expect("255").params[-1]
        local, total = dave.expect("265"), dave.expect("266")
        if "3 users" in client_line or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert client_line == "There are 3 users and 0 invisible on 2 servers"
    assert me == "I have 1 clients and 1 servers"
    assert (local.params[1], total.params[1]) == ("1", "3")
    dave.send("LINKS")
    assert dave.expect("364").params[1:] == ["*", "alpha.chatcore", "0 alpha"]
    assert dave.expect("364").params[1:] == ["*", "beta.chatcore", "1 beta"]
    dave.expect("365")


def test_a_labeled_nick_claimed_across_the_cluster_is_answered_with_its_nick_line(
        start_node, irc_on):
    alpha, _ = _nodes(start_node)
    dave = irc_on(alpha, "dave", caps="batch labeled-response")
    dave.send("@label=n1 NICK david")
    nick = dave.expect("NICK", "david")
    assert (nick.source, nick.tags) == ("dave!dave@chatcore", {"label": "n1"})
    dave.send("@label=n2 NICK dave")
    assert dave.expect("NICK", "dave").tags == {"label": "n2"}
    dave.sync()
    assert not [m for m in dave.drain() if m.command == "ACK"]


def test_a_labeled_join_completed_by_the_cluster_is_answered_in_one_batch(start_node, clients,
                                                                         irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.join("lobby")
    carol.set_topic("lobby", "on beta")
    dave = irc_on(alpha, "dave", caps="batch labeled-response")
    dave.send("@label=j1 JOIN #lobby")
    start = dave.expect("BATCH")
    assert start.tags == {"label": "j1"} and start.params[1] == "labeled-response"
    ref = start.params[0][1:]
    batch = {"batch": ref}
    join = dave.expect("JOIN", "#lobby")
    assert (join.source, join.tags) == ("dave!dave@chatcore", batch)
    assert dave.expect("332", "#lobby").tags == batch
    assert dave.expect("353", "=", "#lobby").tags == batch
    assert dave.expect("366", "#lobby").tags == batch
    dave.expect("BATCH", "-" + ref)


def test_away_replies_for_users_of_another_node_once_per_away_message(start_node, clients,
                                                                      irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    erin = irc_on(beta, "erin")
    dave = irc_on(alpha, "dave")
    carol.set_away("lunch")
    erin.send("AWAY :brb")
    erin.expect("306")
    _away_seen(dave, "carol")
    _away_seen(dave, "erin")
    dave.send("NOTICE carol,erin :no 301 for a notice", "PRIVMSG carol :one",
              "PRIVMSG carol :two", "PRIVMSG erin,carol :three",
              "PRIVMSG carol :\x01ACTION waves\x01", "PING done")
    dave.expect("PONG", None, "done")
    replies = [(m.params[1], m.params[-1]) for m in dave.drain() if m.command == "301"]
    assert replies == [("carol", "lunch"), ("erin", "brb")]
    assert [carol.wait_for(ev.DirectMessage).text for _ in range(4)] == [
        "no 301 for a notice", "one", "two", "three"]
    assert carol.wait_for(ev.DirectAction).text == "waves"
    # (a message, as chatcore has one kind: docs/irc.md, the mapping)
    assert erin.expect("PRIVMSG", "erin").params[-1] == "no 301 for a notice"
    assert erin.expect("PRIVMSG", "erin").params[-1] == "three"
    dave.sync()
    assert not [m for m in dave.drain(0.3) if m.command == "301"]   # none from beta later
    # Back, then away with a new message: told again (the record says so by the next tick).
    carol.set_away("")
    carol.set_away("meeting")
    deadline = time.monotonic() + 10
    while True:
        dave.send("PRIVMSG carol :ping?", "PING again")
        dave.expect("PONG", None, "again")
        replies = [m.params[-1] for m in dave.drain() if m.command == "301"]
        if replies or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert replies == ["meeting"]


def test_who_and_names_of_a_channel_list_the_members_of_every_node(start_node, clients,
                                                                   irc_on):
    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.join("Lobby")
    carol.set_away("gone fishing")
    erin = irc_on(beta, "erin")
    erin.send("JOIN #lobby")
    erin.expect("366", "#Lobby")
    dave = irc_on(alpha, "dave", caps="multi-prefix")
    # No member of #lobby on alpha: the names and the WHO come from the shared state.
    dave.send("NAMES #lobby")
    names = dave.expect("353", "=", "#Lobby").params[-1].split()
    assert sorted(names) == ["carol", "erin"]       # no member here: no prefixes known
    dave.expect("366", "#Lobby")
    _away_seen(dave, "carol")
    dave.send("WHO #lobby")
    who = {}
    while (line := dave.expect_any("352", "315")).command == "352":
        who[line.params[5]] = line.params[1:]
    assert line.params[1] == "#lobby"
    assert who == {
        "carol": ["#Lobby", "carol", "chatcore", "beta.chatcore", "carol", "G", "1 carol"],
        "erin": ["#Lobby", "erin", "chatcore", "beta.chatcore", "erin", "H", "1 Real Name"]}
    dave.send("JOIN #lobby")
    dave.expect("366", "#Lobby")
    dave.send("WHO #lobby")
    who = {}
    while (line := dave.expect_any("352", "315")).command == "352":
        who[line.params[5]] = (line.params[4], line.params[6], line.params[7])
    # Operators are the cluster's: carol made the room on beta, and is its operator here too.
    assert who == {"carol": ("beta.chatcore", "G@", "1 carol"),
                   "erin": ("beta.chatcore", "H", "1 Real Name"),   # her record's
                   "dave": ("alpha.chatcore", "H", "0 Real Name")}
    dave.send("NAMES #nowhere", "WHO #nowhere", "NAMES #bad*name")
    dave.expect("366", "#nowhere")
    dave.expect("315", "#nowhere")
    dave.expect("366", "#bad*name")
    # A WHO mask shows users of other nodes who share a channel, as it does here.
    dave.send("WHO e*")
    assert dave.expect("352", "*").params[5] == "erin"
    dave.expect("315", "e*")


def test_labeled_who_and_names_read_from_redis_are_answered_in_one_batch(start_node, clients,
                                                                        irc_on):
    alpha, beta = _nodes(start_node)
    clients(beta, "carol").join("lobby")
    dave = irc_on(alpha, "dave", caps="batch labeled-response")
    for label, command, end in (("w1", "WHO #lobby", "315"), ("n1", "NAMES #lobby", "366")):
        dave.send(f"@label={label} {command}")
        start = dave.expect("BATCH")
        assert start.tags == {"label": label}
        ref = start.params[0][1:]
        assert dave.expect_any("352", "353").tags == {"batch": ref}
        assert dave.expect(end).tags == {"batch": ref}
        dave.expect("BATCH", "-" + ref)
    dave.send("@label=n2 NAMES #nowhere")
    assert dave.expect("366", "#nowhere").tags == {"label": "n2"}


def test_whois_of_a_user_of_another_node(start_node, clients, irc_on):
    alpha, beta = _nodes(start_node)
    erin = irc_on(beta, "erin")
    erin.send("JOIN #shared,#beta-only")
    erin.expect("366", "#beta-only")
    erin.send(f"PONG :{erin.expect('PING').params[-1]}")   # her RTT, measured by beta
    dave = irc_on(alpha, "dave")
    dave.send("JOIN #shared")
    dave.expect("366", "#shared")
    deadline = time.monotonic() + 10
    while True:     # rooms and RTT reach the record with beta's ticks
        dave.send("WHOIS erin")
        lines = {}
        while (line := dave.expect_any("311", "312", "319", "320", "317", "318")).command \
                != "318":
            lines[line.command] = line.params
        if ("319" in lines and "not measured" not in lines["320"][-1]) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines["311"][1:] == ["erin", "erin", "chatcore", "*", "Real Name"]
    assert lines["312"][1:] == ["erin", "beta.chatcore", "beta"]
    assert lines["319"][1:] == ["erin", "@#shared"]     # in common; she made it: @
    assert lines["320"][-1].startswith("is connected with RTT ")
    assert lines["320"][-1].endswith(" ms")
    idle, signon = int(lines["317"][2]), int(lines["317"][3])
    assert 0 <= idle < 60 and abs(signon - time.time()) < 60
    # SETNAME reaches her record at once: WHOIS and WHO on alpha show it.
    erin.send("SETNAME :Erin of Beta")
    erin.send("PING sync")
    erin.expect("PONG")
    dave.send("WHOIS erin")
    assert dave.expect("311", "erin").params[-1] == "Erin of Beta"
    dave.send("WHO erin")
    assert dave.expect("352").params[-1] == "1 Erin of Beta"
    dave.expect("315")


def test_whowas_is_cluster_wide(start_node, clients, irc_on):
    """Who left beta (an IRC user who quit, one who renamed, a native user) is in alpha's
    WHOWAS, with realname and server, from the capped list per nick in Redis."""
    alpha, beta = _nodes(start_node)
    dave = irc_on(alpha, "dave")
    erin = irc_on(beta, "erin")
    erin.send("SETNAME :Erin of Beta", "QUIT :bye")
    erin.expect_closed()
    frank = irc_on(beta, "frank")
    frank.send("NICK franz")
    frank.expect("NICK", "franz")
    carol = clients(beta, "carol")
    carol.quit("bye")
    for nick, realname in (("erin", "Erin of Beta"), ("frank", "Real Name"),
                           ("carol", "carol")):
        deadline = time.monotonic() + 10
        while True:
            dave.send(f"WHOWAS {nick}")
            line = dave.expect_any("314", "406")
            if line.command == "314" or time.monotonic() > deadline:
                break
            dave.expect("369")
            time.sleep(0.05)
        assert line.params[1:] == [nick, nick, "chatcore", "*", realname]
        assert dave.expect("312").params[2] == "beta.chatcore"
        dave.expect("369")
    # A second visit of erin's, on alpha this time: newest first, the count honoured.
    again = irc_on(alpha, "erin")
    again.send("QUIT")
    again.expect_closed()
    dave.send("WHOWAS erin 1")
    dave.expect("314", "erin")
    assert dave.expect("312").params[2] == "alpha.chatcore"
    assert dave.expect_any("314", "369").command == "369"
    dave.send("WHOWAS erin")
    servers = []
    while (line := dave.expect_any("312", "369")).command == "312":
        servers.append(line.params[2])
    assert servers == ["alpha.chatcore", "beta.chatcore"]
    dave.send("WHOWAS franz,ghost")                     # online, and never seen
    dave.expect("406", "franz")
    dave.expect("406", "ghost")


def test_a_library_client_sees_the_cluster_names_who_and_away_of_another_node(
        start_node, clients, irc_on):
    """The same, read by the ``irc`` library rather than by our own parser."""
    from tests.test_irc_library import LibraryUser

    alpha, beta = _nodes(start_node)
    carol = clients(beta, "carol")
    carol.join("lobby")
    carol.set_away("in a meeting")
    _away_seen(irc_on(alpha, "probe"), "carol")
    bot = LibraryUser(alpha.irc_port, "bot")
    try:
        bot.connection.names(["#lobby"])
        names = bot.wait(lambda e: e.type == "namreply")
        assert (names.arguments[1], names.arguments[2].split()) == ("#lobby", ["carol"])
        bot.wait(lambda e: e.type == "endofnames")
        bot.connection.who("#lobby")
        who = bot.wait(lambda e: e.type == "whoreply")
        assert who.arguments[:6] == ["#lobby", "carol", "chatcore", "beta.chatcore", "carol",
                                     "G"]
        bot.wait(lambda e: e.type == "endofwho")
        bot.connection.privmsg("carol", "are you there?")
        away = bot.wait(lambda e: e.type == "away")
        assert away.arguments == ["carol", "in a meeting"]
        assert carol.wait_for(ev.DirectMessage).text == "are you there?"
        assert not [e for e in bot.events if e.type in ("error", "unknowncommand")]
    finally:
        bot.close()


def test_library_clients_on_two_nodes_ctcp_each_other_and_whowas(start_node, irc_on):
    """The ``irc`` library on both ends: VERSION, PING and TIME from a bot on alpha to a bot
    on beta, each answered by the library's own CTCP reply, then WHOWAS of the bot that
    left beta, realname included."""
    from tests.test_irc_library import LibraryUser

    alpha, beta = _nodes(start_node)
    asker = LibraryUser(alpha.irc_port, "asker")
    answerer = LibraryUser(beta.irc_port, "answerer")
    replies = {"VERSION": "answerbot 1.0", "PING": None, "TIME": "Wed Dec  2 01:00:00 2026"}

    def answer(connection, event) -> None:
        what = event.arguments[0]
        reply = replies[what] if what != "PING" else event.arguments[1]
        connection.ctcp_reply(event.source.nick, f"{what} {reply}")

    answerer.reactor.add_global_handler("ctcp", answer)
    try:
        for what, args in (("VERSION", ""), ("PING", "1733101200"), ("TIME", "")):
            if args:
                asker.connection.ctcp(what, "answerer", args)
            else:       # irc 20.5's ctcp() sends a literal "{ctcptype}" without a parameter
                asker.connection.privmsg("answerer", f"\x01{what}\x01")
            request = answerer.wait(lambda e: e.type == "ctcp" and e.arguments[0] == what)
            assert request.source.nick == "asker"
            reply = asker.wait(lambda e: e.type == "ctcpreply")
            assert reply.source.nick == "answerer"
            assert reply.arguments == [what, replies[what] or args]
        answerer.connection.quit("done")
        answerer.close()
        deadline = time.monotonic() + 10
        while True:
            asker.connection.whowas("answerer")
            event = asker.wait(lambda e: e.type in ("whowasuser", "wasnosuchnick"))
            asker.wait(lambda e: e.type == "endofwhowas")
            if event.type == "whowasuser" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert event.arguments == ["answerer", "answerer", "chatcore", "*",
                                   "answerer the bot"]
        assert not [e for e in asker.events if e.type in ("error", "unknowncommand")]
    finally:
        asker.close()


def test_channel_ctcp_and_setname_reach_irc_users_of_other_nodes(start_node, clients, irc_on):
    """A channel CTCP goes to the channel's IRC members on every node (native members take
    none); a SETNAME reaches the setname clients of other nodes sharing a channel."""
    alpha, beta = _nodes(start_node)
    dave = irc_on(alpha, "dave", caps="setname")
    erin = irc_on(beta, "erin", caps="setname")
    frank = irc_on(beta, "frank")                       # no setname cap
    carol = clients(beta, "carol")
    for client in (dave, erin, frank):
        client.send("JOIN #shared")
        client.expect("366", "#shared")
    carol.join("shared")
    deadline = time.monotonic() + 10
    while True:                                         # beta's members, seen from alpha
        dave.send("NAMES #shared")
        names = dave.expect("353").params[-1].split()
        dave.expect("366")
        if len(names) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted(n.lstrip("@+") for n in names) == ["carol", "dave", "erin", "frank"]
    dave.send("PRIVMSG #shared :\x01TIME\x01")
    for client in (erin, frank):
        got = client.expect("PRIVMSG", "#shared")
        assert (got.source, got.params[-1]) == ("dave!dave@chatcore", "\x01TIME\x01")
    frank.send("NOTICE dave :\x01TIME Wed Dec  2 01:00:00 2026\x01")
    assert dave.expect("NOTICE", "dave").params[-1] == "\x01TIME Wed Dec  2 01:00:00 2026\x01"
    dave.sync()
    # carol (native, on beta) is dropped by beta, quietly; alpha has no native member.
    assert not [m for m in dave.drain() if m.command == "NOTICE"]
    erin.send("SETNAME :Erin Again")
    assert erin.expect("SETNAME").params == ["Erin Again"]      # her own echo
    got = dave.expect("SETNAME")
    assert (got.source, got.params) == ("erin!erin@chatcore", ["Erin Again"])
    frank.sync()
    assert not [m for m in frank.drain() if m.command == "SETNAME"]


def test_bad_cluster_ctcp_is_dropped(start_node, irc_on, redis_server, cluster_name):
    """What another node publishes on a user channel is checked like client input: a bad
    sender, a non-CTCP text, an ACTION, a channel the user is not in, CR/LF."""
    import json
    import socket

    alpha, _ = _nodes(start_node)
    dave = irc_on(alpha, "dave")
    prefix = f"{cluster_name}:v1"

    def publish(message: dict) -> None:
        body = json.dumps({"v": 1, "node": "evil", "instance": "i-evil", **message})
        command = ["PUBLISH", f"{prefix}:user:dave", body]
        raw = f"*{len(command)}\r\n" + "".join(
            f"${len(part.encode())}\r\n{part}\r\n" for part in command)
        with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
            sock.sendall(raw.encode())
            sock.recv(100)

    for message in ({"kind": "ctcp", "from": "bad name!", "target": "dave",
                     "text": "\x01VERSION\x01"},
                    {"kind": "ctcp", "from": "eve", "target": "dave", "text": "plain"},
                    {"kind": "ctcp", "from": "eve", "target": "dave",
                     "text": "\x01ACTION spoofs\x01"},
                    {"kind": "ctcp", "from": "eve", "target": "#notjoined",
                     "text": "\x01VERSION\x01"},
                    {"kind": "ctcp", "from": "eve", "target": 5, "text": None},
                    {"kind": "setname", "from": "eve", "realname": ["x"]},
                    {"kind": "ctcp", "from": "eve", "target": "dave",
                     "text": "\x01PING 1\r\nQUIT :injected\x01"}):
        publish(message)
    publish({"kind": "ctcp", "from": "eve", "target": "dave", "text": "\x01PING 2\x01"})
    last = dave.expect("PRIVMSG", "dave", "\x01PING 2\x01")
    assert last.source == "eve!eve@chatcore"
    lines = [m for m in dave.drain(0.2) if m.command in ("PRIVMSG", "QUIT", "SETNAME")]
    assert lines == []


def test_the_users_of_a_killed_node_are_in_whowas_once(start_node, irc_on):
    """gamma dies (SIGKILL): alpha and beta both notice, its users' records are forgotten
    by whichever runs the cleanup first, and each goes into WHOWAS exactly once."""
    alpha, beta = _nodes(start_node)
    gamma = start_node("gamma", "--irc-port", "0")
    gamma.irc_port = irc_port(gamma)
    erin = irc_on(gamma, "erin")
    erin.send("SETNAME :Erin of Gamma", "PING sync")
    erin.expect("PONG")
    dave, frank = irc_on(alpha, "dave"), irc_on(beta, "frank")
    dave.send("WHOIS erin")                         # her record is in Redis
    assert dave.expect("311", "erin").params[-1] == "Erin of Gamma"
    dave.expect("318")
    gamma.signal(signal.SIGKILL)
    for node in (alpha, beta):                      # both ran the cleanup; one found her
        node.wait_for_log("user record(s) of gone node instance", timeout=15)
    assert sorted(line.split("forgot ")[1].split()[0] for node in (alpha, beta)
                  for line in node.log.splitlines() if "of gone node instance" in line) \
        == ["0", "1"]
    for asker in (dave, frank):
        asker.send("WHOWAS erin")
        line = asker.expect("314", "erin")
        assert line.params[1:] == ["erin", "erin", "chatcore", "*", "Erin of Gamma"]
        assert asker.expect("312").params[2] == "gamma.chatcore"
        assert asker.expect_any("314", "369").command == "369"      # once, not twice
