"""The interactive client with several conversations: where lines go, unread and mention
indicators, switching, /reply, /log and Tab completion; three users against a real server."""
from __future__ import annotations

import pytest

from tests.cli_helpers import login

pytestmark = pytest.mark.timeout(120)

ALT = "\x1b"


def test_two_rooms_two_chats_switching_unread_and_mentions(server, terminals):
    alice = terminals(login(server.port, "alice"))
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    carol = terminals(login(server.port, "carol", "--room", "dev"))
    bob.expect_literal("bob joined #lobby")
    carol.expect_literal("carol joined #dev")
    alice.sendline("/join #lobby")
    alice.expect_literal("alice joined #lobby")
    alice.sendline("/join #dev")
    alice.expect_literal("alice joined #dev")
    alice.expect_screen(r"alice \| 1:#lobby \[2:#dev\]$")       # the status line
    bob.expect_literal("alice joined #lobby")
    carol.expect_literal("alice joined #dev")

    # Two direct messages arrive while alice is in #dev: they are counted, not switched to.
    bob.sendline("/msg alice psst, alice")
    bob.expect_literal("bob -> alice: psst, alice")
    alice.expect_literal("bob -> alice: psst, alice")
    alice.expect_screen(r"\[2:#dev\] 3:bob\(1!\)$")              # unread, and it names her
    carol.sendline("/msg alice a word?")
    alice.expect_literal("carol -> alice: a word?")
    alice.expect_screen(r"\[2:#dev\] 3:bob\(1!\) 4:carol\(1\)$")
    bob.sendline("anyone seen the build?")
    alice.expect_literal("bob -> #lobby: anyone seen the build?")
    alice.expect_screen(r"1:#lobby\(1\) \[2:#dev\]")
    alice.expect_literal("[#dev]")                              # still where her lines go

    # Her next line goes to #dev, where the prompt said, not to whoever wrote last.
    alice.sendline("typed in dev")
    carol.expect_literal("alice -> #dev: typed in dev")
    alice.expect_literal("alice -> #dev: typed in dev")

    # Alt-3 goes to bob; the line read there is no longer unread.
    alice.send(ALT + "3")
    alice.expect_literal("now talking in bob (1 unread: /log shows them)")
    alice.expect_screen(r"2:#dev \[3:bob\] 4:carol\(1\)$")
    alice.sendline("hi bob")
    bob.expect_literal("alice -> bob: hi bob")
    # Ctrl-N / Ctrl-P step through the conversations.
    alice.child.sendcontrol("n")
    alice.expect_literal("now talking in carol (1 unread")
    alice.expect_literal("[carol]")
    alice.child.sendcontrol("n")
    alice.expect_literal("now talking in #lobby (1 unread")
    alice.child.sendcontrol("p")
    alice.expect_literal("now talking in carol")
    alice.expect_screen(r"alice \| 1:#lobby 2:#dev 3:bob \[4:carol\]$")    # all read

    # /switch by name, /reply to the last direct message (carol's) from anywhere.
    alice.sendline("/switch #dev")
    alice.expect_literal("now talking in #dev")
    alice.sendline("/r yes, go ahead")
    carol.expect_literal("alice -> carol: yes, go ahead")
    alice.expect_literal("alice -> carol: yes, go ahead")
    alice.expect_literal("[#dev]")                              # /r did not move her

    # One conversation's recent lines alone.
    alice.sendline("/log bob")
    alice.expect_literal("the last 3 lines of bob:")
    alice.expect(r"\n\d\d:\d\d:\d\d -- bob opened a conversation with you\n"
                 r"\d\d:\d\d:\d\d bob -> alice: psst, alice\n"
                 r"\d\d:\d\d:\d\d alice -> bob: hi bob\n"
                 r"\d\d:\d\d:\d\d -- end of bob")
    alice.sendline("/quit")
    assert alice.wait_exit() == 0


def test_tab_completes_commands_names_and_rooms(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    bob.expect_literal("bob joined #lobby")
    alice.expect_literal("bob joined #lobby")
    alice.send("/swi\t")                                        # a command
    alice.expect_screen(r"\[#lobby\] /switch$")
    alice.send("#lo\t")                                         # a room
    alice.expect_screen(r"\[#lobby\] /switch #lobby$")
    alice.child.sendcontrol("c")                                # clears the line
    alice.expect_screen(r"\[#lobby\]$")
    alice.send("/chat b\t")                                     # a user
    alice.expect_screen(r"\[#lobby\] /chat bob$")
    alice.send("\r")
    alice.expect_literal("talking to bob now")
    alice.send("bo\t")                                          # a name first on a line
    alice.expect_screen(r"\[bob\] bob:$")
    alice.sendline("you there?")
    bob.expect_literal("alice -> bob: bob: you there?")


def test_a_direct_message_with_no_conversation_open_becomes_current(server, terminals):
    alice = terminals(login(server.port, "alice"))
    bob = terminals(login(server.port, "bob"))
    alice.expect_literal("[(none)]")
    alice.sendline("hello?")
    alice.expect_literal("nobody to send to")
    bob.sendline("/msg alice ping")
    alice.expect_literal("bob -> alice: ping")
    alice.expect_literal("[bob]")
    alice.sendline("pong")
    bob.expect_literal("alice -> bob: pong")
