"""The chat vocabulary in the interactive client, end to end against a real server: /topic
(shown on join), names on join, /me, /away (auto-reply) and /back, /nick (others told),
/whois, /quit with a message."""
from __future__ import annotations

import pytest

from tests.cli_helpers import login

pytestmark = pytest.mark.timeout(120)

TIME = r"\d\d:\d\d:\d\d"


def test_topic_names_action_nick_whois_and_quit_message(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    alice.expect_literal("1 user in #lobby: alice")            # the names, on joining
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    bob.expect_literal("2 users in #lobby: alice bob")
    alice.expect_literal("bob joined #lobby")

    alice.sendline("/topic release on friday")
    bob.expect_literal("alice set the topic of #lobby: release on friday")
    alice.expect_literal("alice set the topic of #lobby: release on friday")
    carol = terminals(login(server.port, "carol", "--room", "lobby"))
    carol.expect(r"topic of #lobby: release on friday \(set by alice, \d{4}-\d\d-\d\d "
                 r"\d\d:\d\d\)")
    carol.expect_literal("3 users in #lobby: alice bob carol")
    carol.sendline("/topic")
    carol.expect_literal("topic of #lobby: release on friday")

    bob.sendline("/me waves")
    alice.expect(rf"{TIME} \* bob -> #lobby: waves")
    carol.expect(rf"{TIME} \* bob -> #lobby: waves")
    bob.expect(rf"{TIME} \* bob -> #lobby: waves")              # acknowledged

    bob.sendline("/nick robert")
    bob.expect_literal("you are now known as robert")
    bob.expect_screen(r"^ robert \| \[1:#lobby\]")
    alice.expect_literal("bob is now known as robert")
    carol.expect_literal("bob is now known as robert")
    alice.sendline("/msg robert still you?")
    bob.expect_literal("alice -> robert: still you?")

    alice.sendline("/whois carol")
    alice.expect(r"-- carol:\n\s+server: \S+\n\s+connected since \d{4}-\d\d-\d\d \d\d:\d\d "
                 r"\(\d+s ago\)\n\s+idle \d+s, rtt .*\n\s+rooms in common: #lobby")
    alice.sendline("/whois nobody")
    alice.expect_literal("/whois nobody: ")                     # the server's reason follows

    carol.sendline("/quit gone home")
    assert carol.wait_exit() == 0
    alice.expect_literal("carol left #lobby (quit: gone home)")
    bob.expect_literal("carol left #lobby (quit: gone home)")


def test_away_answers_direct_messages_once_and_back(server, terminals):
    alice = terminals(login(server.port, "alice"))
    bob = terminals(login(server.port, "bob"))
    alice.sendline("/away at lunch")
    alice.expect_literal("you are away: at lunch")
    alice.expect_screen(r"^ alice \(away\) \|")
    bob.sendline("/msg alice are you there?")
    bob.expect_literal("alice is away: at lunch")
    alice.expect_literal("bob -> alice: are you there?")
    bob.sendline("/msg alice hello?")
    alice.expect_literal("bob -> alice: hello?")
    bob.expect_literal("bob -> alice: hello?")
    bob.sendline("/who")
    bob.expect(r"alice \(rtt [^)]*, away: at lunch\)")
    assert bob.text.count("alice is away") == 1                # once per away period
    alice.sendline("/back")
    alice.expect_literal("you are back")
    alice.expect_screen(r"^ alice \|")
    bob.sendline("/msg alice back now?")
    alice.expect_literal("bob -> alice: back now?")
    bob.expect_literal("bob -> alice: back now?")
    assert bob.text.count("alice is away") == 1


def test_direct_action(server, terminals):
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    alice = terminals(login(server.port, "alice"))
    alice.sendline("/chat bob")
    alice.expect_literal("talking to bob now")
    alice.sendline("/me nods")
    bob.expect(rf"{TIME} \* alice -> bob: nods")
    alice.expect(rf"{TIME} \* alice -> bob: nods")
    bob.expect_screen(r"\[1:#lobby\] 2:alice\(1\)$")               # an action is unread too
