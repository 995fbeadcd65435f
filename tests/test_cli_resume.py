"""A network blip: the interactive client resumes its session with the server's token and
keeps its name, rooms and chats; nobody sees it leave."""
from __future__ import annotations

import pytest

from tests.cli_helpers import CuttableProxy, login

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def proxy(server):
    relay = CuttableProxy(server.port)
    yield relay
    relay.close()


def test_a_blip_keeps_name_rooms_and_chats(server, proxy, terminals, tmp_path):
    config = tmp_path / "client.toml"
    config.write_text("reconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n")
    bob = terminals(login(server.port, "bob", "--room", "lobby"))
    alice = terminals(login(proxy.port, "alice", "--config", str(config), "--room", "lobby"))
    alice.expect_literal("alice joined #lobby")
    bob.expect_literal("alice joined #lobby")
    alice.sendline("/chat bob")
    alice.expect_literal("talking to bob now")
    alice.sendline("/join dev")
    alice.expect_literal("alice joined #dev")

    proxy.cut(stay_down=True)
    alice.expect_literal("lost the server")
    alice.expect_literal("(offline) [#dev]")
    alice.sendline("typed during the blip")
    alice.expect_literal("offline: will send to #dev after reconnecting")
    proxy.up()
    alice.expect_literal("connected to ")
    alice.expect_literal("resumed: your name, #lobby, #dev, bob kept while you were away")
    alice.expect_literal("alice -> #dev: typed during the blip")
    alice.expect_screen(r"^ alice \| 1:#lobby 2:bob \[3:#dev\]$")

    bob.sendline("/msg alice welcome back")
    alice.expect_literal("bob -> alice: welcome back")
    bob.sendline("/who lobby")
    bob.expect(r"2 users in #lobby:\s+alice")
    assert "alice left" not in bob.text                 # nobody saw her go
    assert bob.text.count("alice joined #lobby") == 1
    alice.sendline("/quit")
    assert alice.wait_exit() == 0
    bob.expect_literal("alice left #lobby (quit)")


def test_after_the_grace_period_it_rejoins_as_before(start_server, terminals, tmp_path):
    server = start_server("--resume-grace-seconds", "0")
    relay = CuttableProxy(server.port)
    try:
        config = tmp_path / "client.toml"
        config.write_text("reconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n")
        bob = terminals(login(server.port, "bob", "--room", "lobby"))
        alice = terminals(login(relay.port, "alice", "--config", str(config), "--room",
                                "lobby"))
        bob.expect_literal("alice joined #lobby")
        relay.cut()
        bob.expect_literal("alice left #lobby (disconnected)")     # no session held
        alice.expect_literal("connected to ")                      # refused resume, Hello
        alice.expect_literal("alice joined #lobby")
        bob.expect_literal("alice joined #lobby")
        assert "resumed" not in alice.text
    finally:
        relay.close()
