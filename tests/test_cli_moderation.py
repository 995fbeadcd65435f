"""Room moderation in the interactive client, end to end against a real server: /op,
/voice, /mode (show and change), /invite, /kick, and what the others are shown."""
from __future__ import annotations

import pytest

from tests.cli_helpers import login

pytestmark = pytest.mark.timeout(120)


def test_op_mode_invite_and_kick(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    alice.expect_literal("1 user in #lobby: alice")
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    bob.expect_literal("2 users in #lobby: alice bob")
    carol = terminals(login(server.port, "carol"))

    bob.sendline("/mode +m")
    bob.expect_literal("/mode #lobby: you are not an operator of room 'lobby'")
    alice.sendline("/op bob")
    bob.expect_literal("alice sets mode +o bob on #lobby")
    alice.expect_literal("alice sets mode +o bob on #lobby")
    bob.sendline("/mode +mk sesame")
    alice.expect_literal("bob sets mode +mk sesame on #lobby")
    alice.sendline("/mode")
    alice.expect_literal("modes of #lobby: +kmn sesame; operators: alice bob; voiced: none")
    alice.sendline("/voice bob")
    alice.expect_literal("alice sets mode +v bob on #lobby")

    carol.sendline("/join lobby")
    carol.expect_literal("/join")                   # refused: the room needs its key
    alice.sendline("/invite carol")
    alice.expect_literal("you invited carol to #lobby")
    carol.expect_literal("alice invites you to #lobby (/join #lobby to accept)")
    carol.sendline("/join lobby")
    carol.expect_literal("3 users in #lobby")

    alice.sendline("/kick bob enough")
    bob.expect_literal("bob was kicked from #lobby by alice: enough")
    carol.expect_literal("bob was kicked from #lobby by alice: enough")
    alice.sendline("/mode -k *")
    carol.expect_literal("alice sets mode -k sesame on #lobby")
    assert "bob left #lobby" not in carol.text
