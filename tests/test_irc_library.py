"""End to end with a real IRC client library (the ``irc`` package), so the front end is
tested against someone else's reading of the protocol, not only ours."""
from __future__ import annotations

import time

import irc.client
import pytest

from chatcore import events as ev


class LibraryUser:
    """One ``irc`` library connection, driven by hand: ``wait`` pumps its reactor."""

    def __init__(self, port: int, nick: str):
        self.reactor = irc.client.Reactor()
        self.events: list[irc.client.Event] = []
        self.reactor.add_global_handler("all_events", self._record, -10)
        self.connection = self.reactor.server().connect("127.0.0.1", port, nick,
                                                        ircname=f"{nick} the bot")
        self.wait(lambda e: e.type == "welcome")

    def _record(self, connection, event) -> None:
        self.events.append(event)

    def wait(self, match, timeout: float = 10.0) -> irc.client.Event:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if match(event):
                    del self.events[i]
                    return event
            if time.monotonic() > deadline:
                kinds = [(e.type, e.source, e.arguments) for e in self.events]
                raise AssertionError(f"no matching event; got {kinds}")
            self.reactor.process_once(0.05)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def library_user(irc_server):
    users = []

    def make(nick: str) -> LibraryUser:
        user = LibraryUser(irc_server.irc_port, nick)
        users.append(user)
        return user

    yield make
    for user in users:
        user.close()


def test_library_registers_without_errors(library_user):
    bot = library_user("bot")
    isupport = bot.wait(lambda e: e.type == "featurelist")
    assert "CASEMAPPING=ascii" in isupport.arguments
    bot.wait(lambda e: e.type == "nomotd")
    errors = [e for e in bot.events if e.type in ("error", "unknowncommand")]
    assert errors == []


def test_library_users_chat_in_a_channel_and_directly(library_user):
    alice, bob = library_user("alice"), library_user("bob")
    alice.connection.join("#lobby")
    alice.wait(lambda e: e.type == "endofnames")
    bob.connection.join("#lobby")
    names = bob.wait(lambda e: e.type == "namreply")
    assert set(names.arguments[2].split()) == {"@alice", "bob"}     # the first joiner: op
    joined = alice.wait(lambda e: e.type == "join" and e.source.nick == "bob")
    assert joined.target == "#lobby"
    bob.connection.privmsg("#lobby", "hello from bob")
    said = alice.wait(lambda e: e.type == "pubmsg")
    assert (said.source.nick, said.target, said.arguments) == ("bob", "#lobby",
                                                               ["hello from bob"])
    alice.connection.privmsg("bob", "psst")
    private = bob.wait(lambda e: e.type == "privmsg")
    assert (private.source.nick, private.arguments) == ("alice", ["psst"])
    bob.connection.part("#lobby")
    assert alice.wait(lambda e: e.type == "part").source.nick == "bob"
    alice.connection.quit("done here")
    alice.wait(lambda e: e.type == "disconnect")


def test_library_user_and_native_user_share_a_room_and_a_chat(library_user, native):
    carol = native("carol")
    carol.join("lobby")
    bot = library_user("bot")
    bot.connection.join("#lobby")
    names = bot.wait(lambda e: e.type == "namreply")
    assert set(names.arguments[2].split()) == {"bot", "@carol"}
    carol.wait_for(lambda e: isinstance(e, ev.UserJoined) and e.name == "bot")
    carol.send_room("lobby", "hello bot")
    heard = bot.wait(lambda e: e.type == "pubmsg")
    assert (heard.source.nick, heard.arguments) == ("carol", ["hello bot"])
    bot.connection.privmsg("#lobby", "hello carol")
    got = carol.wait_for(lambda e: isinstance(e, ev.RoomMessage) and e.sender == "bot")
    assert got.text == "hello carol"
    carol.send_direct("bot", "just us")
    private = bot.wait(lambda e: e.type == "privmsg")
    assert (private.source.nick, private.arguments) == ("carol", ["just us"])
    bot.connection.privmsg("carol", "indeed")
    direct = carol.wait_for(ev.DirectMessage)
    assert (direct.sender, direct.text) == ("bot", "indeed")
    carol.quit("bye")
    gone = bot.wait(lambda e: e.type == "quit")
    assert gone.source.nick == "carol"


def test_library_sees_nick_collision_across_front_ends(library_user, native, irc_server):
    native("taken")
    reactor = irc.client.Reactor()
    seen = []
    reactor.add_global_handler("nicknameinuse", lambda c, e: seen.append(e))
    connection = reactor.server().connect("127.0.0.1", irc_server.irc_port, "taken")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        reactor.process_once(0.05)
    connection.close()
    assert seen and seen[0].arguments[0] == "taken"


def test_library_nick_topic_away_whois_and_actions_with_a_native_user(library_user, native):
    carol = native("carol")
    carol.join("lobby")
    bot = library_user("bot")
    bot.connection.join("#lobby")
    bot.wait(lambda e: e.type == "endofnames")
    bot.connection.nick("robot")
    assert bot.wait(lambda e: e.type == "nick").target == "robot"
    assert bot.connection.get_nickname() == "robot"
    renamed = carol.wait_for(ev.NameChanged)
    assert (renamed.old, renamed.new) == ("bot", "robot")
    bot.connection.topic("#lobby", "robots welcome")
    assert bot.wait(lambda e: e.type == "topic").arguments == ["robots welcome"]
    assert carol.wait_for(ev.TopicChanged).topic == "robots welcome"
    carol.set_away("tea")
    bot.connection.whois(["carol"])
    assert bot.wait(lambda e: e.type == "whoisuser").arguments[0] == "carol"
    assert bot.wait(lambda e: e.type == "away").arguments == ["carol", "tea"]
    assert "RTT" in bot.wait(lambda e: e.type == "320").arguments[-1]
    bot.wait(lambda e: e.type == "endofwhois")
    bot.connection.action("#lobby", "beeps")
    assert carol.wait_for(ev.RoomAction).text == "beeps"
    carol.send_direct_action("robot", "pats the robot")
    action = bot.wait(lambda e: e.type == "action" and e.target == "robot")
    assert (action.source.nick, action.arguments) == ("carol", ["pats the robot"])
    bot.connection.send_raw("AWAY :recharging")
    bot.wait(lambda e: e.type == "nowaway")
    carol.send_direct("robot", "hello?")
    assert carol.wait_for(ev.AwayReply).message == "recharging"
    errors = [e for e in bot.events if e.type in ("error", "unknowncommand")]
    assert errors == []
