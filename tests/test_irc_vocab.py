"""The chat vocabulary over IRC: NICK changes, TOPIC, AWAY, WHOIS, WHOWAS, ISON, USERHOST,
WHO flags, quit reasons, CTCP ACTION and formatting codes, across both front ends."""
from __future__ import annotations

from chatcore import events as ev

# -- NICK ---------------------------------------------------------------------------------


def test_nick_change_is_seen_by_self_channel_members_and_chat_peers(irc, native):
    alice, bob = irc("alice"), irc("bob")
    carol = native("carol")
    dave = irc("dave")
    alice.send("JOIN #lobby")
    alice.expect("366")
    bob.send("JOIN #lobby")
    bob.expect("366")
    carol.join("lobby")
    dave.send("PRIVMSG alice :hello")         # a direct chat, no shared channel
    alice.expect("PRIVMSG", "alice", "hello")
    alice.send("NICK alicia")
    assert alice.expect("NICK", "alicia").source == "alice!alice@chatcore"
    assert bob.expect("NICK", "alicia").source == "alice!alice@chatcore"
    assert dave.expect("NICK", "alicia").source == "alice!alice@chatcore"
    changed = carol.wait_for(ev.NameChanged)
    assert (changed.old, changed.new) == ("alice", "alicia")
    # The new nick is the user's everywhere: messages, numerics, lookups.
    bob.send("PRIVMSG #lobby :hi alicia")
    assert alice.expect("PRIVMSG", "#lobby", "hi alicia").source == "bob!bob@chatcore"
    alice.send("WHOIS alicia")
    assert alice.expect("311", "alicia").params[0] == "alicia"
    carol.send_direct("alicia", "direct")
    assert alice.expect("PRIVMSG", "alicia", "direct").source == "carol!carol@chatcore"
    bob.send("ISON alice alicia")
    assert bob.expect("303").params[-1] == "alicia"
    # Only the case: still a NICK line.
    alice.send("NICK Alicia")
    alice.expect("NICK", "Alicia")


def test_nick_change_errors(irc, native):
    alice = irc("alice")
    irc("bob")
    native("carol")
    alice.send("NICK bob")
    alice.expect("433", "bob")
    alice.send("NICK carol")
    alice.expect("433", "carol")
    alice.send("NICK 9lives")
    alice.expect("432", "9lives")
    alice.send("NICK")
    alice.expect("431")
    alice.send("NICK alice")                  # no change: nothing said
    alice.sync()
    assert not [m for m in alice.seen if m.command == "NICK"]
    # A native user cannot take a name an IRC user has, nor the reverse.
    alice.send("NICK alice2")
    alice.expect("NICK", "alice2")
    other = irc()
    other.send("NICK alice2", "USER x 0 * :x")
    other.expect("433", "alice2")


# -- TOPIC --------------------------------------------------------------------------------


def test_topic_set_read_and_seen_across_front_ends(irc, native):
    alice, bob = irc("alice"), irc("bob")
    carol = native("carol")
    alice.send("JOIN #lobby")
    alice.expect("366")
    alice.send("TOPIC #lobby")
    alice.expect("331", "#lobby")
    alice.send("TOPIC #lobby :\x02bold\x02 plans")
    assert alice.expect("TOPIC", "#lobby").params[-1] == "bold plans"
    carol.join("lobby")
    bob.send("JOIN #lobby")
    assert bob.expect("332", "#lobby").params[-1] == "bold plans"
    who_time = bob.expect("333", "#lobby")
    assert who_time.params[2] == "alice!alice@chatcore" and int(who_time.params[3]) > 0
    bob.expect("366")
    carol.set_topic("lobby", "native topic")
    assert alice.expect("TOPIC", "#lobby").source == "carol!carol@chatcore"
    assert bob.expect("TOPIC", "#lobby").params[-1] == "native topic"
    bob.send("TOPIC #lobby :from bob")
    changed = carol.wait_for(lambda e: isinstance(e, ev.TopicChanged) and e.name == "bob")
    assert changed.topic == "from bob"
    bob.send("TOPIC #lobby")
    assert bob.expect("332", "#lobby").params[-1] == "from bob"
    alice.expect("TOPIC", "#lobby", "from bob")
    bob.expect("TOPIC", "#lobby", "from bob")           # his own, set above
    alice.send("TOPIC #lobby :from bob", "PING same")   # the same again: alice alone hears
    alice.expect("TOPIC", "#lobby", "from bob")
    alice.expect("PONG")
    bob.sync()
    assert not [m for m in bob.seen if m.command == "TOPIC"]
    bob.send("LIST #lobby")
    assert bob.expect("322", "#lobby").params[-1] == "from bob"
    bob.send("TOPIC #lobby :")                # clears it
    bob.expect("TOPIC", "#lobby", "")
    bob.send("TOPIC #lobby")
    bob.expect("331", "#lobby")
    bob.send("TOPIC #nowhere :x")
    bob.expect("403", "#nowhere")
    dave = irc("dave")
    dave.send("TOPIC #lobby :not a member")
    dave.expect("442", "#lobby")


def test_long_topics_are_cut_to_topiclen(irc):
    alice = irc("alice")
    alice.send("JOIN #lobby")
    alice.expect("366")
    alice.send("TOPIC #lobby :" + "é" * 240)         # 480 bytes; TOPICLEN=390
    topic = alice.expect("TOPIC", "#lobby").params[-1]
    assert topic == "é" * 195


# -- AWAY ---------------------------------------------------------------------------------


def test_away_replies_and_whois(irc, native):
    alice, bob = irc("alice"), irc("bob")
    carol = native("carol")
    alice.send("AWAY :gone \x0304fishing")
    alice.expect("306")
    bob.send("PRIVMSG alice :are you there?")
    assert bob.expect("301", "alice").params[-1] == "gone fishing"
    bob.send("WHOIS alice")
    bob.expect("311", "alice")
    assert bob.expect("301", "alice").params[-1] == "gone fishing"
    bob.expect("318", "alice")
    bob.send("USERHOST alice bob")
    assert bob.expect("302").params[-1] == "alice=-alice@chatcore bob=+bob@chatcore"
    bob.send("NOTICE alice :a notice is never answered, not even with 301")
    bob.sync()
    assert not [m for m in bob.drain() if m.command == "301"]
    carol.send_direct("alice", "hello?")
    assert carol.wait_for(ev.AwayReply).message == "gone fishing"
    carol.set_away("lunch")
    alice.send("PRIVMSG carol :hi")
    assert alice.expect("301", "carol").params[-1] == "lunch"
    alice.send("AWAY")
    alice.expect("305")
    bob.send("WHOIS alice")
    bob.expect("311", "alice")
    bob.sync()
    assert not [m for m in bob.seen if m.command == "301"]


def test_who_flags_say_here_or_gone(irc, native):
    alice, bob = irc("alice"), irc("bob")
    carol = native("carol")
    for client in (alice, bob):
        client.send("JOIN #lobby")
        client.expect("366")
    carol.join("lobby")
    bob.send("AWAY :brb")
    bob.expect("306")
    carol.set_away("out")
    alice.send("WHO #lobby")
    flags = {}
    for _ in range(3):
        reply = alice.expect("352", "#lobby")
        flags[reply.params[5]] = reply.params[6]
    alice.expect("315", "#lobby")
    assert flags == {"alice": "H@", "bob": "G", "carol": "G"}     # alice joined first: op
    alice.send("WHO bob")
    assert alice.expect("352", "*", None, None, None, "bob").params[6] == "G"
    alice.expect("315")


# -- WHOIS, WHOWAS, ISON --------------------------------------------------------------------


def test_whois_of_a_native_user_from_irc(irc, native):
    carol = native("carol")
    carol.join("lobby")
    carol.join("kitchen")
    alice = irc("alice")
    alice.send("JOIN #lobby")
    alice.expect("366")
    alice.send("WHOIS carol")
    user = alice.expect("311", "carol")
    assert user.params[2:4] == ["carol", "chatcore"]
    server = alice.expect("312", "carol")
    assert server.params[3].startswith("chatcore@")
    # Channels in common only, with her prefix there (she made #lobby: its operator).
    assert alice.expect("319", "carol").params[-1] == "@#lobby"
    assert "RTT" in alice.expect("320", "carol").params[-1]
    idle = alice.expect("317", "carol")
    assert int(idle.params[2]) >= 0 and int(idle.params[3]) > 1_600_000_000
    alice.expect("318", "carol")
    alice.send("WHOIS nobody")
    alice.expect("401", "nobody")
    alice.expect("318", "nobody")


def test_whowas_of_nicks_never_seen_is_a_clean_406(irc):
    alice = irc("alice")
    alice.send("WHOWAS ghost,spook")
    alice.expect("406", "ghost")
    alice.expect("406", "spook")
    alice.expect("369", "ghost,spook")
    alice.send("WHOWAS")
    alice.expect("431")


def test_ison_and_userhost_cover_both_front_ends(irc, native):
    native("carol")
    alice = irc("alice")
    alice.send("ISON carol CAROL nobody alice")
    assert alice.expect("303").params[-1] == "carol carol alice"
    alice.send("USERHOST carol nobody")
    assert alice.expect("302").params[-1] == "carol=+carol@chatcore"


# -- quits --------------------------------------------------------------------------------


def test_quit_reasons_cross_front_ends(irc, native):
    alice, bob = irc("alice"), irc("bob")
    carol = native("carol")
    for client in (alice, bob):
        client.send("JOIN #lobby")
        client.expect("366")
    carol.join("lobby")
    bob.send("QUIT :off to \x02bed\x02")
    bob.expect("ERROR")
    assert alice.expect("QUIT").params[-1] == "Quit: off to bed"
    left = carol.wait_for(lambda e: isinstance(e, ev.UserLeft) and e.name == "bob")
    assert (left.reason, left.message) == (ev.Reason.QUIT, "off to bed")
    carol.quit("see you")
    quit_line = alice.expect("QUIT")
    assert quit_line.source == "carol!carol@chatcore"
    assert quit_line.params[-1] == "Quit: see you"


# -- CTCP and formatting ----------------------------------------------------------------------


def test_actions_cross_front_ends(irc, native):
    alice = irc("alice")
    carol = native("carol")
    alice.send("JOIN #lobby")
    alice.expect("366")
    carol.join("lobby")
    alice.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    action = carol.wait_for(ev.RoomAction)
    assert (action.room, action.sender, action.text) == ("lobby", "alice", "waves")
    carol.send_room_action("lobby", "waves back")
    line = alice.expect("PRIVMSG", "#lobby")
    assert line.params[-1] == "\x01ACTION waves back\x01"
    assert line.source == "carol!carol@chatcore"
    alice.send("PRIVMSG carol :\x01ACTION pokes\x01")
    direct = carol.wait_for(ev.DirectAction)
    assert (direct.sender, direct.text) == ("alice", "pokes")
    carol.send_direct_action("alice", "pokes back")
    assert alice.expect("PRIVMSG", "alice").params[-1] == "\x01ACTION pokes back\x01"


def test_actions_between_irc_users(irc):
    alice, bob = irc("alice"), irc("bob", caps="echo-message")
    for client in (alice, bob):
        client.send("JOIN #lobby")
        client.expect("366")
    bob.send("PRIVMSG #lobby :\x01ACTION dances")         # the closing \x01 is optional
    assert alice.expect("PRIVMSG", "#lobby").params[-1] == "\x01ACTION dances\x01"
    assert bob.expect("PRIVMSG", "#lobby").params[-1] == "\x01ACTION dances\x01"


def test_other_ctcp_is_relayed_between_irc_users_and_refused_for_native_ones(irc, native):
    alice, bob = irc("alice"), irc("bob")
    native("carol")
    alice.send("PRIVMSG bob :\x01VERSION\x01")
    assert bob.expect("PRIVMSG", "bob").params[-1] == "\x01VERSION\x01"
    bob.send("NOTICE alice :\x01VERSION irssi 1.4\x01")
    reply = alice.expect("NOTICE", "alice")
    assert (reply.source, reply.params[-1]) == ("bob!bob@chatcore", "\x01VERSION irssi 1.4\x01")
    # A native user's client cannot take CTCP: the server says so, and answers nothing
    # in its name.
    alice.send("PRIVMSG carol :\x01PING 12345\x01", "PRIVMSG carol :\x01VERSION\x01",
               "PRIVMSG carol :\x01DCC SEND x 1 2 3\x01")
    for what in ("PING", "VERSION", "DCC"):
        refusal = alice.expect("NOTICE", "alice")
        assert "!" not in refusal.source                # the server's, not carol's
        assert refusal.params[-1].startswith(f"CTCP {what} not delivered to carol: carol "
                                             f"uses the native protocol")
    alice.send("NOTICE carol :\x01VERSION x\x01")         # a reply: dropped, no answer
    alice.send("PRIVMSG nobody :\x01VERSION\x01")
    alice.expect("401", "nobody")
    alice.send("JOIN #lobby")
    alice.expect("366")
    bob.send("JOIN #lobby")
    bob.expect("366")
    alice.send("PRIVMSG #lobby :\x01VERSION\x01")
    assert bob.expect("PRIVMSG", "#lobby").params[-1] == "\x01VERSION\x01"
    alice.sync()
    assert not [m for m in alice.drain() if m.command == "NOTICE"]
    carol = native("carol2")
    carol.join("lobby")
    alice.send("PRIVMSG #lobby :\x01TIME\x01")
    assert bob.expect("PRIVMSG", "#lobby").params[-1] == "\x01TIME\x01"
    assert alice.expect("NOTICE", "alice").params[-1] == (
        "CTCP TIME not delivered to #lobby: 1 of its members on this server use the native "
        "protocol, and only IRC users can take CTCP requests")


def test_formatting_codes_are_stripped_so_coloured_text_is_delivered(irc, native):
    alice = irc("alice")
    carol = native("carol")
    alice.send("JOIN #lobby")
    alice.expect("366")
    carol.join("lobby")
    alice.send("PRIVMSG #lobby :\x02bold\x02 \x034,12red on blue\x03 \x1ditalic\x1d "
               "\x1funder\x1f \x1estrike\x1e \x16rev\x16 \x11mono\x11 \x04ff0000hex\x0f end")
    got = carol.wait_for(ev.RoomMessage)
    assert got.text == "bold red on blue italic under strike rev mono hex end"
    alice.send("PRIVMSG carol :bell\x07 tab\there")
    assert carol.wait_for(ev.DirectMessage).text == "bell\ufffd tab\there"
