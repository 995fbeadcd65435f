"""The IRC front end over TLS (irc_tls_port, 6697 by convention): the native TLS
listener's handshake, then an IRC connection."""
from __future__ import annotations

import socket
import ssl
import subprocess
import sys

import pytest

from chatcore import events as ev
from tests.irchelpers import RawIrc, irc_port, irc_tls_port
from tests.serverproc import ROOT, SERVER_PY


@pytest.fixture
def irc_tls_server(start_server, tls_files):
    def start(*flags):
        server = start_server("--irc-tls-port", "0", "--tls-cert", tls_files.cert,
                              "--tls-key", tls_files.key, *flags)
        server.irc_tls_port = irc_tls_port(server)
        return server
    return start


@pytest.fixture
def tls_client_context(tls_files) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=tls_files.ca)


def test_irc_over_tls_chats_with_plain_irc_and_native_users(irc_tls_server, tls_client_context):
    from chatcore.client import ChatClient
    server = irc_tls_server("--irc-port", "0")
    server.irc_port = irc_port(server)
    secure = RawIrc(server.irc_tls_port, tls=tls_client_context)
    plain = RawIrc(server.irc_port)
    carol = ChatClient("127.0.0.1", server.port, timeout=10)
    try:
        assert secure.register("alice").params[0] == "alice"
        assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")
        plain.register("bob")
        carol.connect("carol")
        for client in (secure, plain):
            client.send("JOIN #lobby")
            client.expect("366")
        carol.join("lobby")
        secure.send("PRIVMSG #lobby :over tls")
        assert plain.expect("PRIVMSG", "#lobby", "over tls").source == "alice!alice@chatcore"
        assert carol.wait_for(ev.RoomMessage).text == "over tls"
        carol.send_room("lobby", "x" * 4000)              # several lines, several records
        received = "".join(secure.expect("PRIVMSG", "#lobby").params[-1] for _ in range(9))
        assert received == "x" * 4000
        plain.send("WHOIS alice")
        plain.expect("671", "alice")                      # is using a secure connection
        plain.send("WHOIS bob")
        plain.expect("311", "bob")
        plain.expect("318", "bob")
        assert not [m for m in plain.seen if m.command == "671"]
        secure.send("QUIT :done")
        secure.expect("ERROR")
        assert plain.expect("QUIT").params[-1] == "Quit: done"
    finally:
        secure.close()
        plain.close()
        carol.close()


def test_irc_tls_port_alone_with_no_plain_irc_port(irc_tls_server, tls_client_context):
    server = irc_tls_server()
    assert not [line for line in server.lines if "irc front end on" in line]
    client = RawIrc(server.irc_tls_port, tls=tls_client_context)
    try:
        client.register("alice")
    finally:
        client.close()


def test_plain_text_on_the_tls_port_is_dropped(irc_tls_server):
    server = irc_tls_server()
    sock = socket.create_connection(("127.0.0.1", server.irc_tls_port), timeout=10)
    try:
        sock.sendall(b"NICK alice\r\nUSER a 0 * :A\r\n")
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert b" 001 " not in data
    except ConnectionResetError:
        pass
    finally:
        sock.close()


def test_irc_tls_port_needs_a_certificate():
    result = subprocess.run([sys.executable, SERVER_PY, "--port", "0", "--irc-tls-port", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "irc_tls_port is set but tls_cert is not" in result.stderr
