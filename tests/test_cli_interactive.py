"""The interactive client in a pseudo-terminal against a real server."""
from __future__ import annotations

import pytest

from tests.cli_helpers import Terminal, client_env, login

pytestmark = pytest.mark.timeout(60)


def test_two_users_chat_and_one_closes(server, terminals):
    alice = terminals(login(server.port, "alice"))
    bob = terminals(login(server.port, "bob"))
    alice.sendline("/chat bob")
    alice.expect_literal("talking to bob now")
    alice.expect_literal("[bob]")                       # the prompt shows the target
    bob.expect_literal("alice opened a conversation with you")
    alice.sendline("hello bob")
    bob.expect(r"\d\d:\d\d:\d\d alice -> bob: hello bob")
    alice.expect(r"\d\d:\d\d:\d\d alice -> bob: hello bob")   # shown once acknowledged
    bob.sendline("/msg alice hi alice, how are you?")
    alice.expect_literal("bob -> alice: hi alice, how are you?")
    bob.expect_literal("bob -> alice: hi alice, how are you?")
    bob.sendline("/close alice")
    bob.expect_literal("you closed the conversation with alice")
    alice.expect_literal("bob closed the conversation")
    alice.sendline("/quit")
    assert alice.wait_exit() == 0
    bob.sendline("/quit")
    assert bob.wait_exit() == 0


def test_rooms_and_who_with_rtt(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "#lobby"))
    alice.expect_literal("alice joined #lobby")
    alice.expect_literal("[#lobby]")
    bob = terminals(login(server.port, "bob"))
    bob.sendline("/join #lobby")
    bob.expect_literal("bob joined #lobby")
    alice.expect_literal("bob joined #lobby")
    bob.sendline("hi room")
    alice.expect(r"\d\d:\d\d:\d\d bob -> #lobby: hi room")
    bob.expect_literal("bob -> #lobby: hi room")
    bob.sendline("/rooms")
    bob.expect_literal("1 room")
    bob.expect_literal("#lobby (2)")
    # The server pings every 0.2s in tests; ask until both RTTs are measured.
    for _ in range(50):
        bob.sendline("/who")
        match = bob.expect(r"2 users in #lobby:\s+(.*)\n\s+(.*)\n")
        if "rtt ?" not in match.group(0):
            break
    assert "alice (rtt " in match.group(0) and " ms, idle " in match.group(0)
    assert "bob (rtt " in match.group(0)
    bob.sendline("/ping")
    bob.expect(r"pong from \S+: rtt [\d.]+ ms")
    bob.sendline("/servers")
    bob.expect(r"1 server:\s+\S+ 127\.0\.0\.1:%d \(2 users, rtt [\d.]+ ms, connected\)"
               % server.port)
    bob.sendline("/leave")
    bob.expect_literal("bob left #lobby")
    alice.expect_literal("bob left #lobby (closed)")
    bob.expect_literal("[(none)]")                      # nowhere: the room was the target
    bob.sendline("/join lobby")
    alice.expect_literal("bob joined #lobby")
    bob.expect_literal("bob joined #lobby")
    bob.expect_literal("[#lobby]")          # the editor is back (raw mode): Ctrl-D is a key
    bob.child.sendcontrol("d")                          # Ctrl-D quits, saying goodbye
    assert bob.wait_exit() == 0
    alice.expect_literal("bob left #lobby (quit)")
    alice.child.sendcontrol("c")                        # so do two Ctrl-C on an empty line
    alice.expect_literal("Ctrl-C again")
    alice.child.sendcontrol("c")
    assert alice.wait_exit() == 0


def test_incoming_message_leaves_a_half_typed_line_intact(server, terminals):
    alice = terminals(login(server.port, "alice", "--to", "bob"))
    bob = terminals(login(server.port, "bob", "--to", "alice"))
    alice.expect_literal("bob opened a conversation with you")
    alice.send("half a li")
    alice.expect_literal("half a li")
    bob.sendline("interrupting you")
    alice.expect_literal("bob -> alice: interrupting you")
    alice.expect_literal("[bob] half a li")             # the line is drawn again below it
    alice.sendline("ne, finished")
    bob.expect_literal("alice -> bob: half a line, finished")
    alice.expect_literal("alice -> bob: half a line, finished")


def test_unknown_commands_and_bad_arguments_get_a_hint(server, terminals):
    alice = terminals(login(server.port, "alice"))
    for line, hint in [("/frobnicate", "unknown command /frobnicate; type /help"),
                       ("/msg bob", "missing TEXT; usage: /msg USER TEXT"),
                       ("/join #no spaces", "too many arguments; usage: /join ROOM"),
                       ("/join #bad!room", "not a room name"),
                       ("/chat 9lives", "not a user name"),
                       ("hello?", "nobody to send to"),
                       ("/leave", "which room?"),
                       ("/chat ghost", "cannot talk to ghost: ")]:
        alice.sendline(line)
        alice.expect_literal(hint)
    alice.sendline("/help")
    alice.expect_literal("/chat USER")
    alice.expect_literal("/quit [TEXT]")
    assert "Traceback" not in alice.text
    alice.sendline("/quit")
    assert alice.wait_exit() == 0


def test_asks_for_a_username_and_again_when_taken(server, terminals):
    bob = terminals(login(server.port, "bob"))
    newcomer = terminals(Terminal("--port", str(server.port), env=client_env()))
    newcomer.expect_literal("Username:")
    newcomer.sendline("BOB")
    newcomer.expect_literal("refused the name 'BOB'")
    newcomer.expect_literal("Username:")
    newcomer.sendline("carol")
    newcomer.expect_literal("as carol")
    newcomer.sendline("/msg bob hi")
    bob.expect_literal("carol -> bob: hi")


def test_reconnects_after_the_server_restarts(server, terminals, tmp_path):
    config = tmp_path / "client.toml"
    config.write_text("[client]\nreconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n")
    alice = terminals(login(server.port, "alice", "--config", str(config), "--room", "lobby"))
    alice.expect_literal("alice joined #lobby")
    server.stop()
    alice.expect_literal("lost the server")
    alice.expect_literal("reconnecting in")
    alice.expect_literal("(offline) [#lobby]")
    alice.sendline("typed while away")
    alice.expect_literal("offline: will send to #lobby after reconnecting: typed while away")
    alice.sendline("/msg bob are you back?")
    server.start()                                      # the same port as before
    alice.expect_literal("connected to ")
    alice.expect_literal("as alice")                    # the name reclaimed
    alice.expect_literal("alice joined #lobby")         # the room rejoined
    alice.expect_literal("alice -> #lobby: typed while away")
    alice.expect_literal("not delivered to bob: are you back? (no user named 'bob'")
    bob = terminals(login(server.port, "bob"))
    bob.sendline("/who lobby")
    bob.expect(r"1 user in #lobby:\s+alice")
    alice.sendline("/quit")
    assert alice.wait_exit() == 0


def test_long_lists_come_a_page_at_a_time(start_server, terminals):
    server = start_server("--max-list-page-entries", "3")
    owner = terminals(login(server.port, "owner"))
    for room in ("a", "b", "c", "d", "dev2", "devops", "e"):
        owner.sendline(f"/join {room}")
        owner.expect_literal(f"owner joined #{room}")
    alice = terminals(login(server.port, "alice"))
    alice.sendline("/rooms")
    alice.expect(r"7 rooms \(1-3\):\s+#a \(1\)\s+#b \(1\)\s+#c \(1\)\s+\.\.\. more: /more")
    alice.sendline("/more")
    alice.expect(r"7 rooms \(4-6\):\s+#d \(1\)\s+#dev2 \(1\)\s+#devops \(1\)\s+\.\.\. more")
    alice.sendline("/more")
    alice.expect(r"7 rooms \(7-7\):\s+#e \(1\)\n")
    alice.sendline("/more")
    alice.expect_literal("no more to show")
    alice.sendline("/rooms dev")                            # a name start, as in irssi
    alice.expect(r"2 rooms matching dev\*:\s+#dev2 \(1\)\s+#devops \(1\)\n")
    alice.sendline("/rooms *v*")                            # a glob as typed
    alice.expect(r"at most 7 rooms matching \*v\*:\s+#dev2 \(1\)\s+#devops \(1\)\n")
