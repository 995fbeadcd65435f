"""Room moderation over IRC against a real server process: MODE on channels, KICK, INVITE,
the JOIN refusals, @/+ prefixes, ISUPPORT, a secret channel, the last-operator rule, IRC and
native users moderating one room, and the `irc` library's reading of it all."""
from __future__ import annotations

import irc.client
import irc.modes

from chatcore import events as ev
from chatcore.events import Reason
from tests.test_irc_library import LibraryUser


def on_channel(irc, *nicks: str, caps: str = ""):
    """IRC clients that all joined #r in order (the first is its operator), welcomes read."""
    clients = []
    for nick in nicks:
        client = irc(nick, caps)
        client.send("JOIN #r")
        client.expect("366", "#r")
        clients.append(client)
    for client in clients:
        client.sync()
        client.seen.clear()
    return clients


def names(client, channel: str = "#r") -> list[str]:
    """The names a NAMES of ``channel`` lists (all its 353 lines come before its 366)."""
    client.send(f"NAMES {channel}")
    client.expect("366", channel)
    lines = [m for m in client.seen if m.command == "353" and m.params[2] == channel]
    for line in lines:
        client.seen.remove(line)
    return [name for line in lines for name in line.params[-1].split()]


# -- prefixes, ISUPPORT ----------------------------------------------------------------------

def test_isupport_and_myinfo_tell_the_modes(irc):
    client = irc()
    client.send("NICK alice", "USER a 0 * :Alice")
    myinfo = client.expect("004")
    assert myinfo.params[3:5] == ["i", "biklmnostv"]
    tokens = dict(token.partition("=")[::2] for token in client.expect("005").params[1:-1])
    assert tokens["PREFIX"] == "(ov)@+"
    assert tokens["CHANMODES"] == "b,k,l,imnst"
    assert tokens["MODES"] == "4"


def test_first_joiner_is_operator_in_names_and_who(irc):
    alice, bob = on_channel(irc, "alice", "bob")
    assert names(bob) == ["@alice", "bob"]
    alice.send("MODE #r +v alice")
    bob.expect("MODE", "#r", "+v", "alice")
    assert names(bob) == ["@alice", "bob"]                  # the highest prefix only
    carol, = on_channel(irc, "carol", caps="multi-prefix")
    assert names(carol) == ["@+alice", "bob", "carol"]
    carol.send("WHO #r")
    flags = {m.params[5]: m.params[6] for m in (carol.expect("352") for _ in range(3))}
    assert flags == {"alice": "H@+", "bob": "H", "carol": "H"}
    carol.expect("315")


# -- MODE ------------------------------------------------------------------------------------

def test_mode_query_and_changes_with_their_broadcasts_and_errors(irc):
    alice, bob = on_channel(irc, "alice", "bob")
    alice.send("MODE #r")
    assert alice.expect("324", "#r").params[2:] == ["+n"]
    assert int(alice.expect("329", "#r").params[2]) > 1_600_000_000
    alice.send("MODE #r +mtl 10")
    for client in (alice, bob):
        line = client.expect("MODE", "#r")
        assert line.source == "alice!alice@chatcore" and line.params[1:] == ["+mtl", "10"]
    bob.send("MODE #r")
    assert bob.expect("324", "#r").params[2:] == ["+lmnt", "10"]
    bob.send("MODE #r +i")
    bob.expect("482", "#r")
    alice.send("MODE #r +x", "MODE #r -n", "MODE #r +o ghost", "MODE #r +l many",
               "MODE #r +k a,b", "MODE #none", "MODE #none +m")
    alice.expect("472", "x")
    assert "cannot be unset" in alice.expect("696", "#r", "n").params[-1]
    alice.expect("401", "ghost")
    alice.expect("696", "#r", "l", "many")
    alice.expect("525", "#r")
    alice.expect("403", "#none")
    alice.expect("403", "#none")
    alice.sync()
    irc("carol")
    alice.send("MODE #r +o carol")
    alice.expect("441", "carol", "#r")
    alice.send("MODE #r +mi-t")                              # +m already set: not repeated
    assert bob.expect("MODE", "#r").params[1:] == ["+i-t"]


def test_ban_list(irc):
    alice, bob = on_channel(irc, "alice", "bob")
    alice.send("MODE #r b")
    alice.expect("368", "#r")
    alice.send("MODE #r +b eve")
    assert bob.expect("MODE", "#r").params[1:] == ["+b", "eve!*@*"]
    alice.send("MODE #r +b")
    ban = alice.expect("367", "#r")
    assert ban.params[2:4] == ["eve!*@*", "alice!alice@chatcore"]
    alice.expect("368", "#r")
    # No ban or invite exceptions (not in CHANMODES): their lists are unknown modes, to
    # operators and others alike, and +e/+I change nothing.
    alice.send("MODE #r e", "MODE #r I", "MODE #r +e bob")
    for letter in ("e", "I", "e"):
        alice.expect("472", letter)
    bob.send("MODE #r e")
    bob.expect("472", "e")
    alice.send("MODE #r -e+t")
    alice.expect("472", "e")
    assert bob.expect("MODE", "#r").params[1:] == ["+t"]
    eve = irc("eve")
    eve.send("JOIN #r")
    eve.expect("474", "#r")
    alice.send("MODE #r -b EVE!*@*")
    alice.expect("MODE", "#r", "-b", "eve!*@*")
    eve.send("JOIN #r")
    eve.expect("JOIN", "#r")


# -- KICK and INVITE -------------------------------------------------------------------------

def test_kick(irc):
    alice, bob, carol = on_channel(irc, "alice", "bob", "carol")
    alice.send("KICK #r bob :be nice")
    for client in (alice, bob, carol):
        kick = client.expect("KICK", "#r", "bob")
        assert kick.source == "alice!alice@chatcore" and kick.params[-1] == "be nice"
    carol.sync()
    assert [m for m in carol.seen if m.command in ("PART", "QUIT")] == []
    bob.send("PRIVMSG #r :still here?")
    bob.expect("404", "#r")
    carol.send("KICK #r alice")
    carol.expect("482", "#r")
    alice.send("KICK #r ghost", "KICK #r bob", "KICK #r", "KICK #none carol")
    alice.expect("401", "ghost")
    alice.expect("441", "bob", "#r")
    alice.expect("461", "KICK")
    alice.expect("403", "#none")
    alice.send("KICK #r carol")                         # the default reason: the kicker
    assert carol.expect("KICK", "#r", "carol").params[-1] == "alice"
    bob.send("KICK #r alice")
    bob.expect("442", "#r")


def test_invite_and_the_join_refusals(irc):
    alice, bob = on_channel(irc, "alice", "bob")
    dave = irc("dave")
    alice.send("MODE #r +i")
    bob.expect("MODE", "#r", "+i")
    dave.send("JOIN #r")
    dave.expect("473", "#r")
    bob.send("INVITE dave #r")
    bob.expect("482", "#r")
    alice.send("INVITE dave #r")
    alice.expect("341", "dave", "#r")
    invite = dave.expect("INVITE", "dave", "#r")
    assert invite.source == "alice!alice@chatcore"
    dave.send("JOIN #r")
    dave.expect("JOIN", "#r")
    alice.send("INVITE dave #r", "INVITE ghost #r", "INVITE dave #none", "INVITE dave")
    alice.expect("443", "dave", "#r")
    alice.expect("401", "ghost")
    alice.expect("403", "#none")
    alice.expect("461", "INVITE")
    dave.send("PART #r")
    alice.send("MODE #r -i+k sesame")
    alice.expect("MODE", "#r", "-i+k")
    dave.send("JOIN #r")
    dave.expect("475", "#r")
    dave.send("JOIN #r wrong")
    dave.expect("475", "#r")
    dave.send("JOIN #x,#r key,sesame")
    dave.expect("JOIN", "#x")
    dave.expect("JOIN", "#r")
    dave.send("PART #r")
    alice.send("MODE #r -k+l * 2")
    alice.expect("MODE", "#r", "-k+l")
    dave.send("JOIN #r")
    dave.expect("471", "#r")


def test_moderated_channel(irc):
    alice, bob, carol = on_channel(irc, "alice", "bob", "carol")
    alice.send("MODE #r +mv carol")
    bob.expect("MODE", "#r", "+mv", "carol")
    bob.send("PRIVMSG #r :hello?")
    assert "moderated" in bob.expect("404", "#r").params[-1]
    carol.send("PRIVMSG #r :I may")
    assert bob.expect("PRIVMSG", "#r").params[-1] == "I may"
    alice.send("MODE #r +t")
    bob.send("TOPIC #r :mine")
    bob.expect("482", "#r")


def test_secret_channel_is_hidden_from_non_members(irc):
    alice, = on_channel(irc, "alice")
    alice.send("MODE #r +s")
    alice.expect("MODE", "#r", "+s")
    eve = irc("eve")
    eve.send("LIST", "LIST #r", "NAMES #r", "WHO #r", "MODE #r")
    eve.expect("321")
    eve.expect("323")
    eve.expect("321")
    eve.expect("323")
    eve.expect("366", "#r")
    eve.expect("315", "#r")
    eve.expect("403", "#r")
    eve.sync()
    assert [m for m in eve.seen if m.command in ("322", "353", "352")] == []
    alice.send("MODE #r")
    assert alice.expect("324", "#r").params[2:] == ["+ns"]


def test_the_last_operator_leaving_makes_the_longest_present_operator(irc):
    alice, bob, carol = on_channel(irc, "alice", "bob", "carol")
    alice.send("QUIT :bye")
    mode = carol.expect("MODE", "#r", "+o", "bob")
    assert "!" not in mode.source                       # the server made the change
    bob.send("MODE #r +m")
    carol.expect("MODE", "#r", "+m")


# -- IRC and native users in one room ---------------------------------------------------------

def test_native_and_irc_users_moderate_one_room(irc, native):
    alice = native("alice")
    alice.join("mixed")
    bob = irc("bob")
    bob.send("JOIN #mixed")
    bob.expect("366", "#mixed")
    bob.seen.clear()
    assert names(bob, "#mixed") == ["@alice", "bob"]
    alice.set_room_mode("mixed", "+o bob")
    mode = bob.expect("MODE", "#mixed", "+o", "bob")
    assert mode.source == "alice!alice@chatcore"
    bob.send("MODE #mixed +mk sesame")
    changed = alice.wait_for(lambda e: type(e) is ev.RoomModeChanged and e.name == "bob")
    assert changed == ev.RoomModeChanged("mixed", "bob", (
        ev.ModeChange(True, "m"), ev.ModeChange(True, "k", "sesame")))
    carol = native("carol")
    carol.send(ev.JoinRoomKey("mixed", "sesame"))
    carol.wait_for(ev.RoomJoined)
    bob.send("KICK #mixed carol :native kicked from IRC")
    assert carol.wait_for(ev.Kicked) == ev.Kicked("mixed", "carol", "bob",
                                                  "native kicked from IRC")
    left = carol.wait_for(ev.UserLeft)
    assert (left.name, left.reason) == ("carol", Reason.KICKED)
    dave = irc("dave")
    alice.invite("mixed", "dave")
    assert dave.expect("INVITE", "dave", "#mixed").source == "alice!alice@chatcore"
    alice.kick("mixed", "bob", "")
    assert bob.expect("KICK", "#mixed", "bob").params[-1] == "alice"


# -- the irc library ---------------------------------------------------------------------------

def test_the_irc_library_reads_modes_kicks_and_invites(irc_server):
    alice = LibraryUser(irc_server.irc_port, "alice")
    bob = LibraryUser(irc_server.irc_port, "bob")
    carol = LibraryUser(irc_server.irc_port, "carol")
    try:
        assert dict(alice.connection.features.prefix) == {"@": "o", "+": "v"}
        alice.connection.join("#lib")
        alice.wait(lambda e: e.type == "endofnames")
        bob.connection.join("#lib")
        bob.wait(lambda e: e.type == "endofnames")
        alice.connection.mode("#lib", "+o bob")
        mode = bob.wait(lambda e: e.type == "mode")
        assert mode.arguments == ["+o", "bob"]
        assert irc.modes.parse_channel_modes(" ".join(mode.arguments)) == [["+", "o", "bob"]]
        bob.connection.invite("carol", "#lib")
        invited = carol.wait(lambda e: e.type == "invite")
        assert (invited.source.nick, invited.arguments) == ("bob", ["#lib"])
        carol.connection.join("#lib")
        carol.wait(lambda e: e.type == "endofnames")
        bob.connection.kick("#lib", "carol", "bye")
        kick = carol.wait(lambda e: e.type == "kick")
        assert (kick.source.nick, kick.arguments) == ("bob", ["carol", "bye"])
        errors = [e for e in alice.events + bob.events + carol.events
                  if e.type in ("error", "unknowncommand", "unknownmode")]
        assert errors == []
    finally:
        for user in (alice, bob, carol):
            user.close()


def test_configured_ban_and_invite_limits_hold_and_maxlist_tells_them(start_irc_server, irc_on):
    server = start_irc_server("--max-bans-per-room", "2", "--max-invites-per-room", "1")
    alice = irc_on(server)
    alice.send("NICK alice", "USER a 0 * :Alice")
    alice.expect("422")
    tokens = dict(token.partition("=")[::2] for line in alice.seen if line.command == "005"
                  for token in line.params[1:-1])
    assert tokens["MAXLIST"] == "b:2"
    alice.send("JOIN #r")
    alice.expect("366", "#r")
    alice.send("MODE #r +bb x!*@* y!*@*")
    alice.expect("MODE", "#r", "+bb")
    alice.send("MODE #r +b z!*@*")
    alice.expect("478", "#r")                       # ERR_BANLISTFULL
    bob, carol = irc_on(server, "bob"), irc_on(server, "carol")
    alice.send("INVITE bob #r", "INVITE carol #r", "MODE #r +i")
    alice.expect("MODE", "#r", "+i")
    bob.send("JOIN #r")
    bob.expect("473", "#r")                         # the oldest invitation went
    carol.send("JOIN #r")
    carol.expect("366", "#r")
