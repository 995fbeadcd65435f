"""Unit tests of the CLI client's pure parts: command parsing, output formatting, config."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore import events as ev
from chatcore.cli.commands import (BY_NAME, COMMANDS, CommandError, Invocation, Text,
                                   help_lines, parse_line)
from chatcore.cli.config import ClientConfig, ConfigError, load_config
from chatcore.cli.formatting import format_json, format_text, record, rtt_ms

pytestmark = pytest.mark.timeout(30)


# -- commands -----------------------------------------------------------------------------------

def invocation(line: str) -> tuple[str, tuple[str, ...]]:
    parsed = parse_line(line)
    assert isinstance(parsed, Invocation)
    return parsed.command.name, parsed.args


@pytest.mark.parametrize("line, expected", [
    ("/chat bob", ("chat", ("bob",))),
    ("/query bob", ("chat", ("bob",))),
    ("/CHAT @bob", ("chat", ("bob",))),
    ("/msg bob hello   there ", ("msg", ("bob", "hello   there"))),
    ("/m  bob  hi", ("msg", ("bob", "hi"))),
    ("/close", ("close", ())),
    ("/close bob", ("close", ("bob",))),
    ("/join #lobby", ("join", ("lobby",))),
    ("/join lobby-2.b_c", ("join", ("lobby-2.b_c",))),
    ("/leave", ("leave", ())),
    ("/part #lobby", ("leave", ("lobby",))),
    ("/rooms", ("rooms", ())),
    ("/who", ("who", ())),
    ("/who #lobby", ("who", ("lobby",))),
    ("/servers", ("servers", ())),
    ("/ping", ("ping", ())),
    ("/help", ("help", ())),
    ("/quit", ("quit", ())),
    ("/quit see you later", ("quit", ("see you later",))),
    ("/exit\n", ("quit", ())),
])
def test_commands_parse(line, expected):
    assert invocation(line) == expected


@pytest.mark.parametrize("line, hint", [
    ("/nope", "unknown command /nope; type /help for the list"),
    ("/chat", "missing USER; usage: /chat USER"),
    ("/msg bob", "missing TEXT; usage: /msg USER TEXT"),
    ("/msg", "missing USER; usage: /msg USER TEXT"),
    ("/chat bob carol", "too many arguments; usage: /chat USER"),
    ("/rooms a b", "too many arguments; usage: /rooms [PATTERN]"),
    ("/chat 1bob", "not a user name: '1bob'"),
    ("/chat " + "a" * 33, "not a user name"),
    ("/join #", "not a room name: '#'"),
    ("/join a/b", "not a room name: 'a/b'"),
    ("/join " + "r" * 65, "not a room name"),
])
def test_bad_commands_get_one_line_hints(line, hint):
    with pytest.raises(CommandError) as info:
        parse_line(line)
    assert hint in str(info.value)
    assert "\n" not in str(info.value)


def test_text_lines():
    assert parse_line("hello") == Text("hello")
    assert parse_line("  indented stays") == Text("  indented stays")
    assert parse_line("//not a command") == Text("/not a command")
    assert parse_line("") is None
    assert parse_line("   \n") is None


@pytest.mark.timeout(120)     # 100 examples: 9 s on a busy machine, 30 s on one busier still
@given(st.text())
def test_any_line_parses_or_gives_a_hint(line):
    try:
        parse_line(line)
    except CommandError:
        pass


def test_the_table_has_every_issue_command_and_unique_aliases():
    names = {c.name for c in COMMANDS}
    assert names >= {"chat", "msg", "close", "join", "leave", "rooms", "who", "servers",
                     "ping", "help", "quit"}
    assert BY_NAME["query"].name == "chat" and BY_NAME["part"].name == "leave"
    assert len(BY_NAME) == sum(1 + len(c.aliases) for c in COMMANDS)
    lines = help_lines()
    assert len(lines) == len(COMMANDS) + 1
    assert any(line.startswith("/msg USER TEXT ") for line in lines)


# -- formatting ---------------------------------------------------------------------------------

TS = int(time.mktime((2026, 1, 2, 13, 14, 15, 0, 0, -1)) * 1000)


@pytest.mark.parametrize("rec, text", [
    (record("message", TS, **{"from": "bob"}, to="alice", text="hi", msg_id=1),
     "13:14:15 bob -> alice: hi"),
    (record("message", TS, **{"from": "bob"}, room="lobby", text="hi", msg_id=1),
     "13:14:15 bob -> #lobby: hi"),
    (record("sent", TS, **{"from": "alice"}, to="bob", text="yo", msg_id=2),
     "13:14:15 alice -> bob: yo"),
    (record("not_delivered", TS, to="ghost", text="yo", reason="no such user", code=""),
     "13:14:15 !! not delivered to ghost: yo (no such user)"),
    (record("queued", TS, room="lobby", text="later", why="not connected"),
     "13:14:15 -- offline: will send to #lobby after reconnecting: later"),
    (record("joined", TS, room="lobby", name="bob"), "13:14:15 -- bob joined #lobby"),
    (record("left", TS, room="lobby", name="bob", reason="timed out"),
     "13:14:15 -- bob left #lobby (timed out)"),
    (record("chat_closed", TS, peer="bob", reason="closed"),
     "13:14:15 -- bob closed the conversation"),
    (record("chat_closed", TS, peer="bob", reason="disconnected"),
     "13:14:15 -- conversation with bob ended (bob disconnected)"),
    (record("chat_closed", TS, peer="bob", reason="closed", by_you=True),
     "13:14:15 -- you closed the conversation with bob"),
    (record("users", TS, room="lobby", total=2, users=[
        {"name": "a", "rtt_ms": 0.25, "idle_seconds": 5, "server": "s"},
        {"name": "b", "rtt_ms": None, "idle_seconds": 125, "server": "s"}]),
     "13:14:15 -- 2 users in #lobby: a (rtt 0.25 ms, idle 5s), b (rtt ?, idle 2m)"),
    (record("servers", TS, total=1, servers=[
        {"name": "s1", "host": "h", "port": 1, "users": 3, "rtt_ms": 12.5, "current": True}]),
     "13:14:15 -- 1 server: s1 h:1 (3 users, rtt 12.5 ms, connected)"),
    (record("servers", TS, total=2, servers=[
        {"name": "alpha", "host": "h", "port": 1, "users": 3, "rtt_ms": 0.3,
         "node_rtt_ms": None, "current": True},
        {"name": "h:2", "host": "h", "port": 2, "users": None, "rtt_ms": None,
         "node_rtt_ms": 1.5, "current": False}]),
     "13:14:15 -- 2 servers: alpha h:1 (3 users, rtt 0.30 ms, connected), "
     "h:2 h:2 (unreachable, node rtt 1.5 ms)"),
    (record("measured", TS, using="h:1", servers=[
        {"host": "h", "port": 1, "rtt_ms": 0.5}, {"host": "::1", "port": 2, "rtt_ms": None}]),
     "13:14:15 -- rtt to h:1 0.50 ms, [::1]:2 unreachable: using h:1"),
    (record("moved", TS, name="alice", server="beta", host="h", port=2, rtt_ms=0.4,
            old_server="alpha", old_rtt_ms=201.0, why="closer", seconds=None,
            rooms=["lobby"], chats=["bob"]),
     "13:14:15 -- moved from alpha to the closer beta (h:2) (rtt 0.40 ms against 201.0 ms), "
     "with #lobby, bob"),
    (record("moved", TS, name="alice", server="beta", host="h", port=2, rtt_ms=None,
            old_server="alpha", old_rtt_ms=None, why="lost", seconds=1.04, rooms=[],
            chats=[]),
     "13:14:15 -- alpha was lost: now on beta (h:2) after 1.0s"),
    (record("pong", TS, server="s1", rtt_ms=0.123), "13:14:15 -- pong from s1: rtt 0.12 ms"),
    (record("hint", TS, text="unknown command /x"), "13:14:15 !! unknown command /x"),
])
def test_text_lines_show_time_sender_and_target(rec, text):
    assert format_text(rec) == text


def test_lists_are_one_line_or_a_table():
    rec = record("rooms", TS, total=2, rooms=[{"name": "a", "members": 1},
                                              {"name": "b", "members": 2}])
    assert format_text(rec) == "13:14:15 -- 2 rooms: #a (1), #b (2)"
    assert format_text(rec, multiline=True) == "13:14:15 -- 2 rooms:\n   #a (1)\n   #b (2)"


def test_json_lines_are_single_line_objects():
    rec = record("message", TS, **{"from": "bob"}, to="alice", text="two\nlines é", msg_id=1)
    line = format_json(rec)
    assert "\n" not in line
    assert json.loads(line) == rec


def test_rtt_unknown():
    assert rtt_ms(ev.UNKNOWN_RTT) is None
    assert rtt_ms(1500) == 1.5


# -- config -------------------------------------------------------------------------------------

def test_defaults():
    assert load_config([], environ={}) == ClientConfig()


def test_precedence_command_line_then_environment_then_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[client]\nhost = "filehost"\nport = 1000\nname = "filename"\n'
                    'local-port = 4000\nroom = "#fileroom"\n')
    environ = {"CHATCORE_PORT": "2000", "CHATCORE_NAME": "envname"}
    config = load_config(["--config", str(path), "--name", "cliname"], environ=environ)
    assert (config.host, config.port, config.name, config.local_port, config.room) == \
        ("filehost", 2000, "cliname", 4000, "fileroom")
    config = load_config(["--to", "bob"], environ={"CHATCORE_CONFIG": str(path)})
    assert (config.to, config.room) == ("bob", None)     # one target, the command line's


def test_send_arguments():
    assert load_config(["--send", "bob", "hi there"], environ={}).send == ("bob", "hi there")
    config = load_config(["--room", "#lobby", "--send", "hi"], environ={})
    assert (config.room, config.send) == ("lobby", ("hi",))
    with pytest.raises(SystemExit) as info:
        load_config(["--send", "hi"], environ={})
    assert info.value.code == 2


@pytest.mark.parametrize("content, message", [
    ("port = ", "not valid TOML"),
    ("colour = 'blue'", "unknown setting 'colour'"),
    ("port = 70000", "bad value for port"),
])
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", str(path)], environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", str(tmp_path / "nope.toml")], environ={})


def test_bad_port_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        load_config(["--port", "http"], environ={})
    assert "not a port number: 'http'" in capsys.readouterr().err


def test_servers_from_flags_environment_and_file(tmp_path):
    path = tmp_path / "client.toml"
    path.write_text('servers = ["a.example:7001", "[::1]:7002"]\nmove_sustain_seconds = 5\n')
    config = load_config(["--config", str(path)], environ={})
    assert config.server_list() == [("a.example", 7001), ("::1", 7002)]
    assert config.choice_policy().move_sustain_seconds == 5
    config = load_config(["--config", str(path)], environ={"CHATCORE_SERVERS": "b:1, c"})
    assert config.server_list() == [("b", 1), ("c", 7878)]
    config = load_config(["--config", str(path), "--server", "d:2", "--server", "e:3"],
                         environ={"CHATCORE_SERVERS": "b:1"})
    assert config.server_list() == [("d", 2), ("e", 3)]
    assert load_config(["--port", "9"], environ={}).server_list() == [("127.0.0.1", 9)]


@pytest.mark.parametrize("args, message", [
    (["--server", "a:notaport"], "bad server"),
    (["--server", ":7000"], "bad server"),
])
def test_bad_servers(args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(args, environ={})


def test_a_move_ratio_outside_0_1_is_refused(tmp_path):
    path = tmp_path / "client.toml"
    path.write_text("move_ratio = 1.5\n")
    with pytest.raises(ConfigError, match="move_ratio"):
        load_config(["--config", str(path)], environ={})


def test_every_reason_has_a_name_and_a_newer_one_is_shown_as_a_number():
    from chatcore import events as ev
    from chatcore.cli.formatting import reason_name
    assert reason_name(ev.Reason.SERVER_LOST) == "server lost"
    assert all(not reason_name(r).startswith("reason ") for r in ev.Reason)
    assert reason_name(200) == "reason 200"
