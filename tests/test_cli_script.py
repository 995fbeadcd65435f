"""Scriptable mode (stdin not a terminal) and ``--send``: output lines, exit statuses, stderr."""
from __future__ import annotations

import json
import re
import socket

import pytest

from chatcore.cli import exitcodes
from tests.cli_helpers import ScriptClient, run_client

pytestmark = pytest.mark.timeout(60)

TIME = r"\d\d:\d\d:\d\d"


@pytest.fixture
def scripts():
    started: list[ScriptClient] = []

    def start(*args: str) -> ScriptClient:
        client = ScriptClient(*args)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()


def free_port() -> int:
    """A port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lines_go_to_the_target_and_every_event_is_one_line(server, scripts):
    bob = scripts("--port", str(server.port), "--name", "bob")
    bob.expect(rf"^{TIME} -- connected to \S+ as bob$")
    result = run_client("--port", str(server.port), "--name", "alice", "--to", "bob",
                        input="hello bob\n/join #lobby\nin the room\n/who\n/msg bob bye\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [re.sub(rf"^{TIME} ", "", line) for line in lines] == [
        "-- connected to %s as alice" % lines[0].split()[4],
        "-- talking to bob now",
        "alice -> bob: hello bob",
        "-- alice joined #lobby",
        "-- 1 user in #lobby: alice",                   # the names, on joining
        "alice -> #lobby: in the room",
        lines[6][9:],
        "alice -> bob: bye",
    ]
    assert re.fullmatch(r"-- 1 user in #lobby: alice \(rtt (\?|[\d.]+ ms), idle \d+s\)",
                        lines[6][9:])
    bob.expect(rf"^{TIME} -- alice opened a conversation with you$")
    bob.expect(rf"^{TIME} alice -> bob: hello bob$")
    bob.expect(rf"^{TIME} alice -> bob: bye$")
    status, stderr = bob.finish()
    assert (status, stderr) == (0, "")


def test_json_lines(server, scripts):
    bob = scripts("--port", str(server.port), "--name", "bob", "--json")
    connected = json.loads(bob.expect(r"connected").string)
    assert connected["name"] == "bob" and connected["port"] == server.port
    result = run_client("--port", str(server.port), "--name", "alice", "--json",
                        "--room", "lobby", input="/msg bob psst\n/msg nobody x\n")
    assert result.returncode == exitcodes.NOT_DELIVERED
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["type"] for r in records] == ["connected", "joined", "names", "sent",
                                            "not_delivered"]
    assert records[2]["members"] == [{"name": "alice", "away": False}]
    sent = records[3]
    assert sent["from"] == "alice" and sent["to"] == "bob" and sent["text"] == "psst"
    assert isinstance(sent["msg_id"], int) and isinstance(sent["ts"], int)
    assert records[4]["to"] == "nobody" and records[4]["code"] == "NO_SUCH_USER"
    message = json.loads(bob.expect(r'"type":"message"').string)
    assert (message["from"], message["to"], message["text"]) == ("alice", "bob", "psst")
    assert message["msg_id"] == sent["msg_id"] and message["ts"] == sent["ts"]
    bob.write("/who")
    users = json.loads(bob.expect(r'"type":"users"').string)
    assert users["room"] is None and {u["name"] for u in users["users"]} == {"bob"}
    status, _ = bob.finish()
    assert status == 0


def test_room_messages_reach_a_listening_script(server, scripts):
    listener = scripts("--port", str(server.port), "--name", "carol", "--room", "#lobby")
    listener.expect(r"carol joined #lobby")
    result = run_client("--port", str(server.port), "--name", "dave", "--room", "lobby",
                        input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    listener.expect(r"dave joined #lobby")
    listener.expect(rf"^{TIME} dave -> #lobby: one$")
    listener.expect(rf"^{TIME} dave -> #lobby: two$")
    listener.expect(r"dave left #lobby \(quit\)")
    listener.write("/quit")
    status, _ = listener.finish()
    assert status == 0


def test_exit_status_when_the_server_is_down():
    result = run_client("--port", str(free_port()), "--name", "alice", input="hi\n")
    assert result.returncode == exitcodes.UNAVAILABLE
    assert result.stdout == ""
    assert re.fullmatch(r"chatcore-client: cannot connect to 127\.0\.0\.1:\d+: "
                        r"Connection refused\n", result.stderr)


def test_exit_status_when_the_name_is_taken(server, connect):
    connect("alice")
    result = run_client("--port", str(server.port), "--name", "ALICE", input="hi\n")
    assert result.returncode == exitcodes.NAME_REFUSED
    assert "refused the name 'ALICE'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_commands_in_a_script_are_hints(server):
    result = run_client("--port", str(server.port), "--name", "alice",
                        input="/nope\nno target yet\n/ping\n")
    assert result.returncode == 0
    assert "!! unknown command /nope; type /help for the list" in result.stdout
    assert "!! nobody to send to" in result.stdout
    assert re.search(r"pong from \S+: rtt [\d.]+ ms", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


# -- --send -------------------------------------------------------------------------------------

def test_send_one_message(server, connect):
    bob = connect("bob")
    result = run_client("--port", str(server.port), "--name", "alice", "--send", "bob",
                        "hello there")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    from chatcore import events as ev
    message = bob.wait_for(ev.DirectMessage)
    assert (message.sender, message.text) == ("alice", "hello there")


def test_send_to_a_room(server, connect):
    bob = connect("bob")
    bob.join("lobby")
    result = run_client("--port", str(server.port), "--name", "alice", "--room", "#lobby",
                        "--send", "hi all")
    assert (result.returncode, result.stderr) == (0, "")
    from chatcore import events as ev
    message = bob.wait_for(ev.RoomMessage)
    assert (message.room, message.sender, message.text) == ("lobby", "alice", "hi all")


def test_send_to_an_unknown_user(server):
    result = run_client("--port", str(server.port), "--name", "alice", "--send", "ghost", "hi")
    assert result.returncode == exitcodes.NOT_DELIVERED
    assert result.stderr.startswith("chatcore-client: not delivered to ghost: ")
    assert "ghost" in result.stderr.splitlines()[0][40:]


def test_send_when_the_server_is_down():
    result = run_client("--port", str(free_port()), "--name", "alice", "--send", "bob", "hi")
    assert result.returncode == exitcodes.UNAVAILABLE
    assert re.fullmatch(r"chatcore-client: cannot connect to 127\.0\.0\.1:\d+: "
                        r"Connection refused\n", result.stderr)


def test_send_with_a_taken_name(server, connect):
    connect("alice")
    connect("bob")
    result = run_client("--port", str(server.port), "--name", "alice", "--send", "bob", "hi")
    assert result.returncode == exitcodes.NAME_REFUSED
    assert result.stderr.startswith("chatcore-client: the server refused the name 'alice': ")


@pytest.mark.parametrize("args", [["--send", "bob"], ["--send", "bob", "hi", "extra"],
                                  ["--room", "x", "--send", "bob", "hi"]])
def test_send_usage_errors(args):
    result = run_client("--name", "alice", *args)
    assert result.returncode == exitcodes.USAGE
    assert "use --send PEER TEXT, or --room ROOM --send TEXT" in result.stderr


def test_environment_and_config_file(server, connect, tmp_path):
    bob = connect("bob")
    config = tmp_path / "client.toml"
    config.write_text('host = "127.0.0.1"\nport = 1\nname = "fromfile"\n')
    from tests.cli_helpers import client_env
    env = client_env(CHATCORE_PORT=str(server.port))
    result = run_client("--config", str(config), "--send", "bob", "via env", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    from chatcore import events as ev
    message = bob.wait_for(ev.DirectMessage)
    assert (message.sender, message.text) == ("fromfile", "via env")


def test_a_script_survives_a_server_restart_and_waits_for_its_acks(server, scripts, tmp_path):
    config = tmp_path / "client.toml"
    config.write_text("reconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n")
    alice = scripts("--port", str(server.port), "--name", "alice", "--room", "lobby",
                    "--config", str(config))
    alice.expect(r"alice joined #lobby")
    server.stop()
    alice.expect(r"!! lost the server")
    alice.write("sent while the server was down")
    alice.expect(r"offline: will send to #lobby after reconnecting: sent while")
    server.start()
    alice.expect(r"connected to \S+ as alice")
    alice.expect(r"alice joined #lobby")
    alice.expect(rf"^{TIME} alice -> #lobby: sent while the server was down$")
    status, stderr = alice.finish()
    assert (status, stderr) == (0, "")


def test_stdin_closing_while_the_server_is_away_reports_what_was_not_sent(server, tmp_path):
    config = tmp_path / "client.toml"
    config.write_text("reconnect_initial_seconds = 0.1\nreconnect_max_seconds = 0.2\n"
                      "drain_timeout_seconds = 1\n")
    alice = ScriptClient("--port", str(server.port), "--name", "alice", "--room", "lobby",
                         "--config", str(config))
    try:
        alice.expect(r"alice joined #lobby")
        server.stop()
        alice.expect(r"!! lost the server")
        alice.write("nobody will see this")
        status, _ = alice.finish()
    finally:
        alice.close()
    assert status == exitcodes.UNAVAILABLE
    assert any(re.search(r"!! not delivered to #lobby: nobody will see this \(not connected",
                         line) for line in alice.lines), alice.lines


def test_local_port_is_the_source_port(server, connect):
    connect("bob")
    port = free_port()
    result = run_client("--port", str(server.port), "--local-port", str(port), "--name",
                        "alice", "--send", "bob", "from a fixed port")
    assert (result.returncode, result.stderr) == (0, "")
    server.wait_for_log(f"127.0.0.1:{port} is alice")


def test_a_script_reads_every_page_of_a_list(start_server, scripts):
    server = start_server("--max-list-page-entries", "2")
    owner = scripts("--port", str(server.port), "--name", "owner")
    for room in ("a", "b", "c", "d", "e"):
        owner.write(f"/join {room}")
        owner.expect(rf"owner joined #{room}$")
    result = run_client("--port", str(server.port), "--name", "alice", "--json",
                        input="/rooms\n")
    assert result.returncode == 0, result.stderr
    pages = [r for r in map(json.loads, result.stdout.splitlines()) if r["type"] == "rooms"]
    assert [[room["name"] for room in page["rooms"]] for page in pages] == [
        ["a", "b"], ["c", "d"], ["e"]]
    assert [page["start"] for page in pages] == [1, 3, 5]
    assert [page["more"] for page in pages] == [True, True, False]
