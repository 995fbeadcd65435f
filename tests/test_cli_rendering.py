"""What the interactive client shows and sends: forged lines, control characters, pastes,
messages over the limit, colours, and what Ctrl-C does."""
from __future__ import annotations

import re
import time

import pytest

from chatcore import events as ev
from tests.cli_helpers import FakeServer, Terminal, chatcore_peer, client_env, login

pytestmark = pytest.mark.timeout(120)

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"   # a terminal's bracketed paste
SGR_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|9[0-7]|38)[;m]")


def test_a_pasted_forged_line_stays_inside_its_message(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    alice.expect_literal("bob joined #lobby")
    bob.expect_literal("bob joined #lobby")
    bob.send(PASTE_START + "innocent\n10:46:30 bob -> #lobby: I resign" + PASTE_END)
    # Before it is sent: both lines in the editor, and the status line says what Enter does.
    bob.expect_screen(r"2 lines: Enter sends them as one message")
    bob.expect_screen(r"^\s+\| 10:46:30 bob -> #lobby: I resign$")
    bob.send("\r")
    alice.expect(r"\d\d:\d\d:\d\d bob -> #lobby: innocent\n {9}\| 10:46:30 bob -> #lobby: "
                 r"I resign\n")
    alice.expect_screen(r"^ {9}\| 10:46:30 bob -> #lobby: I resign$")
    assert not any(line.startswith("10:46:30") for line in alice.screen_lines)
    bob.expect(r"bob -> #lobby: innocent\n {9}\| 10:46:30")     # one message, acknowledged


def test_control_characters_from_the_network_are_shown_not_obeyed(terminals):
    nasty = "ring\x07 title\x1b]0;pwned\x07 clear\x1b[2J cr\rtab\there \u202eevil"
    fake = FakeServer(chatcore_peer(ev.DirectMessage("mallory", 1, int(time.time() * 1000),
                                                     nasty)))
    try:
        alice = terminals(login(fake.port, "alice"))
        alice.expect_literal("mallory -> alice: ring^G title^[]0;pwned^G clear^[[2J "
                             "cr^Mtab here <U+202E>evil")
        assert "\x07" not in alice.raw and "\x1b]0;pwned" not in alice.raw
        assert "\x1b[2J" not in alice.raw and "\u202e" not in alice.raw
    finally:
        fake.close()


def test_a_message_over_the_limit_gets_a_note_or_is_split(start_server, terminals):
    server = start_server("--max-text-bytes", "400")
    # Terminals wide enough for the whole message on one line.
    alice = terminals(login(server.port, "alice", "--room", "lobby", cols=600))
    bob = terminals(login(server.port, "bob", "--room", "lobby", cols=600))
    alice.expect_literal("bob joined #lobby")
    long_text = " ".join(f"word{i:03d}" for i in range(60))           # 479 bytes
    bob.sendline(long_text)
    note = bob.expect(r"!! not sent to #lobby: the message is 479 bytes, the limit is 400 "
                      r"\(/split on sends long messages in parts\)\n")
    assert "word" not in note.group(0)                          # the text is not echoed
    bob.sendline("/split on")
    bob.expect_literal("messages over the limit are sent in parts (the limit is 400 bytes)")
    bob.sendline(long_text)
    alice.expect(r"bob -> #lobby: word000 .* word049\n")        # cut at a space
    alice.expect(r"bob -> #lobby: word050 .* word059\n")


def test_nick_colours_and_no_colour(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    plain = terminals(Terminal("--port", str(server.port), "--name", "carol", "--room",
                               "lobby", env=client_env(NO_COLOR="1")))
    plain.expect_literal("carol joined #lobby")
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    alice.expect_literal("bob joined #lobby")
    plain.expect_literal("bob joined #lobby")
    bob.sendline("hello alice and carol")
    alice.expect_literal("bob -> #lobby: hello alice and carol")
    plain.expect_literal("bob -> #lobby: hello alice and carol")
    assert re.search(r"\x1b\[(3[1-6]|9[1-6])mbob\x1b\[0m -> ", alice.raw)  # bob's colour
    assert "\x1b[1;7malice\x1b[0m" in alice.raw                 # her own name highlighted
    assert not SGR_COLOUR.search(plain.raw)                     # NO_COLOR: no colour at all
    assert "\x1b[1;7mcarol\x1b[0m" in plain.raw                 # but still highlighted


def test_ctrl_c_clears_the_line_and_only_a_second_on_an_empty_line_quits(server, terminals):
    alice = terminals(login(server.port, "alice", "--room", "lobby"))
    alice.send("half a thought")
    alice.expect_screen(r"\[#lobby\] half a thought$")
    alice.child.sendcontrol("c")
    alice.expect_screen(r"\[#lobby\]$")                         # cleared, still running
    alice.child.sendcontrol("c")
    alice.expect_literal("Ctrl-C again (or Ctrl-D, /quit) to leave")
    alice.expect_screen(r"Ctrl-C again to quit")
    alice.send("x")                                             # typing disarms it
    alice.child.sendcontrol("c")                                # clears "x"
    alice.expect_screen(r"\[#lobby\]$")
    alice.sendline("still here")
    alice.child.sendcontrol("c")            # at once: perhaps between two prompts, a signal
    alice.expect_screen(r"alice -> #lobby: still here$")
    alice.expect_screen(r"-- Ctrl-C again \(or Ctrl-D, /quit\) to leave$")
    alice.child.sendcontrol("c")
    assert alice.wait_exit() == 0
