"""The IRC front end against a real server process, over raw sockets."""
from __future__ import annotations

import socket
import time

import pytest

from chatcore import events as ev
from chatcore.events import Reason

# -- registration ------------------------------------------------------------------------


@pytest.mark.parametrize("lines", [
    ["NICK alice", "USER a 0 * :Alice"],
    ["USER a 0 * :Alice", "NICK alice"],
    ["PASS secret", "NICK alice", "USER a 0 * :Alice"],
    ["CAP LS 302", "NICK alice", "USER a 0 * :Alice", "CAP END"],
    ["CAP LS", "CAP REQ :multi-prefix", "NICK alice", "USER a 0 * :Alice", "CAP END"],
    ["NICK alice", "CAP LS 302", "USER a 0 * :Alice", "CAP REQ :echo-message", "CAP END"],
])
def test_registration_in_every_order_clients_use(irc, lines):
    client = irc()
    client.send(*lines)
    welcome = client.expect("001")
    assert welcome.params[0] == "alice"
    assert "alice!alice@chatcore" in welcome.params[-1]
    for numeric in ("002", "003", "004", "005", "251", "255", "422"):
        client.expect(numeric)


def test_cap_negotiation_holds_registration_until_cap_end(irc):
    client = irc()
    client.send("CAP LS 302", "NICK alice", "USER a 0 * :Alice")
    ls = client.expect("CAP", "*", "LS")
    assert set(ls.params[-1].split()) == {
        "away-notify", "batch", "cap-notify", "echo-message", "labeled-response",
        "message-tags", "multi-prefix", "server-time", "setname", "userhost-in-names"}
    client.sync()
    assert not [m for m in client.seen if m.command == "001"]
    client.send("CAP REQ :multi-prefix bogus-cap")
    assert client.expect("CAP", "*", "NAK").params[-1] == "multi-prefix bogus-cap"
    client.send("CAP REQ :multi-prefix userhost-in-names", "CAP LIST")
    client.expect("CAP", "*", "ACK")
    assert set(client.expect("CAP", "*", "LIST").params[-1].split()) == {
        "cap-notify", "multi-prefix", "userhost-in-names"}
    client.send("CAP END")
    client.expect("001")
    client.send("CAP BOGUS")
    client.expect("410", "BOGUS")


def test_isupport_tells_the_truth(irc):
    client = irc()
    client.send("NICK alice", "USER a 0 * :Alice")
    tokens = {}
    client.expect("001")
    message = client.expect("005")
    for token in message.params[1:-1]:
        key, _, value = token.partition("=")
        tokens[key] = value
    assert tokens["CASEMAPPING"] == "ascii"
    assert tokens["CHANTYPES"] == "#"
    assert tokens["NICKLEN"] == "32"
    assert tokens["CHANNELLEN"] == "65"
    assert tokens["PREFIX"] == "(ov)@+"                   # room moderation: test_irc_moderation
    assert tokens["CHANMODES"] == "b,k,l,imnst"
    assert tokens["LINELEN"] == "512"
    assert "PRIVMSG:4" in tokens["TARGMAX"]


def test_nick_errors_before_registration(irc, native):
    native("taken")
    client = irc()
    client.send("NICK")
    client.expect("431")
    client.send("NICK 9lives")
    assert "start with a letter" in client.expect("432", "9lives").params[-1]
    client.send("NICK bad!nick")
    client.expect("432", "bad!nick")
    client.send("NICK TAKEN")
    client.expect("433", "TAKEN")
    client.send("NICK fresh", "USER u 0 * :x")
    client.expect("001")


def test_commands_before_registration_get_451_and_unknown_ones_421(irc):
    client = irc()
    client.send("JOIN #x", "FROB")
    client.expect("451", "You have not registered")
    client.expect("421", "FROB")


def test_reregistering_gets_462(irc):
    client = irc("alice")
    client.send("USER a 0 * :again", "PASS x")
    client.expect("462")
    client.expect("462")


def test_ping_pong_both_ways_and_rtt_in_whois(irc):
    client = irc("alice")
    client.send("PING :hello there")
    assert client.expect("PONG").params[-1] == "hello there"
    client.send("PING")
    client.expect("409")
    ping = client.expect("PING")             # the server pings every 0.2 s in the tests
    client.send(f"PONG :{ping.params[-1]}")
    deadline = time.monotonic() + 10
    while True:
        client.send("WHOIS alice")
        line = client.expect("320", "alice").params[-1]
        client.expect("318")
        if "ms" in line or time.monotonic() > deadline:
            break
        ping = client.expect("PING")
        client.send(f"PONG :{ping.params[-1]}")
    assert line.startswith("is connected with RTT ") and line.endswith(" ms")


def test_unanswered_pings_end_in_a_ping_timeout_others_see(start_irc_server, irc_on):
    server = start_irc_server("--idle-timeout-seconds", "1")
    quiet, watcher = irc_on(server, "quiet"), irc_on(server, "watcher")
    quiet.send("JOIN #r")
    quiet.expect("366")
    watcher.send("JOIN #r")
    watcher.expect("366")
    # watcher answers pings; quiet stops reading and answering.
    deadline = time.monotonic() + 10
    while True:
        ping = watcher.expect("PING")
        watcher.send(f"PONG :{ping.params[-1]}")
        quits = [m for m in watcher.seen if m.command == "QUIT"]
        if quits or time.monotonic() > deadline:
            break
    assert quits and quits[0].source.startswith("quiet!")
    assert quits[0].params[-1] == "Ping timeout"


def test_registration_timeout(start_irc_server, irc_on):
    client = irc_on(start_irc_server("--handshake-timeout-seconds", "0.5"))
    client.send("NICK slow")
    assert "Registration timed out" in client.expect("ERROR").params[-1]
    client.expect_closed()


def test_too_many_lines_before_registration_close_the_connection(irc):
    client = irc()
    client.send(*["CAP LIST"] * 40)
    assert "Too many lines" in client.expect("ERROR").params[-1]
    client.expect_closed()


# -- channels and messages ---------------------------------------------------------------


def test_two_irc_users_in_a_channel(irc):
    alice, bob = irc("alice"), irc("bob")
    alice.send("JOIN #lobby")
    assert alice.expect("JOIN").source == "alice!alice@chatcore"
    assert alice.expect("353", "=", "#lobby").params[-1] == "@alice"
    alice.expect("366", "#lobby")
    bob.send("JOIN #Lobby")
    bob.expect("JOIN", "#lobby")
    assert set(bob.expect("353").params[-1].split()) == {"@alice", "bob"}
    assert alice.expect("JOIN", "#lobby").source.startswith("bob!")
    bob.send("PRIVMSG #lobby :hello, alice")
    message = alice.expect("PRIVMSG", "#lobby", "hello, alice")
    assert message.source == "bob!bob@chatcore"
    bob.sync()
    assert not [m for m in bob.seen if m.command == "PRIVMSG"]   # no echo without the cap
    bob.send("PART #lobby")
    bob.expect("PART", "#lobby")
    assert alice.expect("PART", "#lobby").source.startswith("bob!")


def test_echo_message_cap_echoes_own_messages(irc):
    alice = irc("alice", caps="echo-message")
    bob = irc("bob")
    alice.send("JOIN #r")
    alice.expect("366")
    alice.send("PRIVMSG #r :to the room", "PRIVMSG bob :to you")
    assert alice.expect("PRIVMSG", "#r", "to the room").source.startswith("alice!")
    assert alice.expect("PRIVMSG", "bob", "to you").source.startswith("alice!")
    bob.expect("PRIVMSG", "bob", "to you")


def test_privmsg_errors(irc, native):
    alice = irc("alice")
    native("carol").join("elsewhere")
    alice.send("PRIVMSG", "PRIVMSG #x", "PRIVMSG nobody :hi", "PRIVMSG #nowhere :hi",
               "PRIVMSG #elsewhere :hi", "PRIVMSG a,b,c,d,e :hi", "NOTICE nobody :hi")
    alice.expect("411")
    alice.expect("412")
    alice.expect("401", "nobody")
    alice.expect("403", "#nowhere")
    alice.expect("404", "#elsewhere")
    alice.expect("407")
    alice.sync()
    assert not [m for m in alice.seen if m.command.isdigit()]   # NOTICE is never answered


def test_message_to_yourself_comes_back(irc):
    alice = irc("alice")
    alice.send("PRIVMSG Alice :note to self")
    assert alice.expect("PRIVMSG", "alice", "note to self").source.startswith("alice!")


def test_join_several_and_part_errors(irc):
    alice = irc("alice")
    alice.send("JOIN #a,#b,nohash,#bad!name key1,key2")
    alice.expect("366", "#a")
    alice.expect("366", "#b")
    alice.expect("403", "nohash")
    assert "Illegal channel name" in alice.expect("403", "#bad!name").params[-1]
    alice.send("PART #zzz", "PART")
    alice.expect("403", "#zzz")
    alice.expect("461", "PART")
    bob = irc("bob")
    bob.send("PART #a")
    bob.expect("442", "#a")
    alice.send("JOIN 0")
    alice.expect("PART", "#a")
    alice.expect("PART", "#b")


def test_too_many_channels(start_irc_server, irc_on):
    client = irc_on(start_irc_server("--max-rooms-per-user", "2"), "alice")
    client.send("JOIN #a,#b,#c")
    client.expect("405", "#c")


def test_names_list_who_with_caps(irc):
    alice = irc("alice", caps="userhost-in-names")
    bob = irc("bob")
    bob.send("JOIN #r")
    bob.expect("366")
    alice.send("JOIN #r")
    assert set(alice.expect("353").params[-1].split()) == {"alice!alice@chatcore",
                                                           "@bob!bob@chatcore"}
    alice.send("NAMES #r,#none", "NAMES")
    alice.expect("353", "=", "#r")
    alice.expect("366", "#r")
    alice.expect("366", "#none")
    alice.expect("366", "*")
    alice.send("LIST", "LIST #r")
    alice.expect("321")
    assert alice.expect("322", "#r").params[2] == "2"
    alice.expect("323")
    alice.expect("322", "#r")
    alice.send("WHO #r")
    who = {alice.expect("352", "#r").params[5] for _ in range(2)}
    assert who == {"alice", "bob"}
    alice.expect("315", "#r")
    alice.send("WHO bob")
    assert alice.expect("352", "*").params[-1] == "0 Real Name"
    alice.expect("315", "bob")


def test_names_split_into_lines_that_fit_512_bytes(irc, native):
    members = [native(f"user{i:03d}-{'x' * 20}") for i in range(40)]
    for member in members:
        member.join("big")
    alice = irc("alice")
    alice.send("NAMES #big")
    names = []
    while True:
        message = alice.expect("353") if not names or len(names) < 40 else None
        if message is None:
            break
        names.extend(message.params[-1].split())
    alice.expect("366", "#big")
    assert len(names) == 40


def test_mode_queries_and_refusals(irc):
    alice = irc("alice")
    alice.send("JOIN #r")
    alice.expect("366")
    alice.send("MODE #r", "MODE #r +z", "MODE #r -n", "MODE alice", "MODE alice +i",
               "MODE alice", "MODE alice +x", "MODE #none")
    alice.expect("324", "#r", "+n")
    alice.expect("472", "z")
    alice.expect("696", "#r", "n")                    # +n is fixed (test_irc_moderation)
    alice.expect("221", "+")
    assert alice.expect("MODE", "alice", "+i").source.startswith("alice!")
    alice.expect("221", "+i")
    alice.expect("501")
    alice.expect("403", "#none")


def test_server_queries(irc):
    alice = irc("alice")
    alice.send("LUSERS", "TIME", "VERSION", "MOTD", "LINKS", "INFO", "ADMIN", "HELP",
               "HELP NOSUCH", "WHOWAS ghost", "ISON alice ghost", "USERHOST alice ghost")
    assert "1 users" in alice.expect("251").params[-1]
    alice.expect("391")
    assert alice.expect("351").params[1].startswith("chatcore-")
    alice.expect("005")
    alice.expect("422")
    alice.expect("364")
    alice.expect("365")
    alice.expect("371")
    alice.expect("374")
    alice.expect("256")
    alice.expect("704")
    alice.expect("706")
    alice.expect("524", "NOSUCH")
    alice.expect("406", "ghost")
    alice.expect("369")
    assert alice.expect("303").params[-1] == "alice"
    assert alice.expect("302").params[-1] == "alice=+alice@chatcore"


def test_whois_unknown_nick(irc):
    alice = irc("alice")
    alice.send("WHOIS ghost", "WHOIS")
    alice.expect("401", "ghost")
    alice.expect("318", "ghost")
    alice.expect("431")


def test_quit_with_reason_reaches_others(irc):
    alice, bob = irc("alice"), irc("bob")
    for client in (alice, bob):
        client.send("JOIN #a,#b")
        client.expect("366", "#b")
    bob.send("QUIT :off to lunch")
    assert "off to lunch" in bob.expect("ERROR").params[-1]
    bob.expect_closed()
    quit_line = alice.expect("QUIT")
    assert quit_line.source.startswith("bob!")
    alice.sync()
    assert not [m for m in alice.seen if m.command == "QUIT"]    # once, not once per room


# -- the two front ends together ---------------------------------------------------------


def test_irc_and_native_users_share_a_room(irc, native):
    carol = native("carol")
    carol.join("lobby")
    alice = irc("alice")
    alice.send("JOIN #lobby")
    assert set(alice.expect("353").params[-1].split()) == {"alice", "@carol"}
    assert carol.wait_for(lambda e: isinstance(e, ev.UserJoined) and e.name == "alice")
    alice.send("PRIVMSG #lobby :hi carol")
    got = carol.wait_for(ev.RoomMessage)
    assert (got.room, got.sender, got.text) == ("lobby", "alice", "hi carol")
    carol.send_room("lobby", "hi alice\nsecond line")
    first = alice.expect("PRIVMSG", "#lobby", "hi alice")
    assert first.source == "carol!carol@chatcore"
    alice.expect("PRIVMSG", "#lobby", "second line")
    carol.leave("lobby")
    alice.expect("PART", "#lobby")
    carol.join("lobby")
    alice.expect("JOIN", "#lobby")
    carol.close()
    assert alice.expect("QUIT").source.startswith("carol!")
    alice.send("PART #lobby")
    alice.expect("PART")


def test_irc_and_native_users_chat_directly(irc, native):
    carol = native("carol")
    alice = irc("alice")
    alice.send("PRIVMSG Carol :psst")
    got = carol.wait_for(ev.DirectMessage)
    assert (got.sender, got.text) == ("alice", "psst")
    carol.send_direct("alice", "what?")
    message = alice.expect("PRIVMSG", "alice", "what?")
    assert message.source.startswith("carol!")
    alice.send("QUIT :bye")
    closed = carol.wait_for(ev.ChatClosed)
    assert (closed.peer, closed.reason) == ("alice", Reason.QUIT)


def test_nicks_are_unique_across_front_ends(irc, native, irc_server):
    from chatcore.client import ChatClient
    from chatcore.errors import ChatError, ErrorCode
    alice = irc("Alice")
    with ChatClient("127.0.0.1", irc_server.port) as client:
        with pytest.raises(ChatError) as refused:
            client.connect("alice")
        assert refused.value.code == ErrorCode.NAME_TAKEN
    native("bob")
    other = irc()
    other.send("NICK BOB")
    other.expect("433", "BOB")
    alice.send("WHOIS bob")
    assert alice.expect("311", "bob").params[-1] == "bob"


def test_a_native_user_taking_the_nick_between_nick_and_user_gets_433(irc, native):
    client = irc()
    client.send("NICK dana")
    client.sync()
    native("dana")
    client.send("USER d 0 * :Dana")
    client.expect("433", "dana")
    client.send("NICK dana2")
    assert client.expect("001").params[0] == "dana2"


# -- bad input ---------------------------------------------------------------------------


def test_a_line_split_at_every_byte_is_one_line(irc):
    alice = irc("alice")
    bob = irc("bob")
    bob.send("JOIN #r")
    bob.expect("366")
    alice.send("JOIN #r")
    alice.expect("366")
    alice.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in b"PRIVMSG #r :slowly, byte by byte\r\n":
        alice.sock.send(bytes([byte]))
        time.sleep(0.001)
    bob.expect("PRIVMSG", "#r", "slowly, byte by byte")


def test_cr_lf_and_crlf_line_ends(irc):
    alice = irc("alice")
    alice.send(b"PING a\rPING b\nPING c\r\n")
    for token in "abc":
        assert alice.expect("PONG").params[-1] == token


def test_long_lines_get_417_and_the_connection_stays(irc):
    alice = irc("alice")
    alice.send("PRIVMSG alice :" + "x" * 600)
    alice.expect("417")
    tags = "@" + "a=" + "b" * 8000
    alice.send(tags + " PING fits")
    assert alice.expect("PONG").params[-1] == "fits"
    alice.send("PRIVMSG alice :" + "y" * (510 - len("PRIVMSG alice :")))
    alice.expect("PRIVMSG", "alice")


def test_junk_without_a_line_end_is_dropped_promptly(irc, native):
    survivor = native("carol")
    alice = irc("alice")
    try:
        alice.sock.sendall(b"x" * 20000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert "Input line too long" in alice.expect("ERROR").params[-1]
    alice.expect_closed()
    assert survivor.ping() >= 0


def test_nul_invalid_utf8_and_garbage(irc):
    alice = irc("alice")
    alice.send(b"PRIVMSG alice :a\x00b\r\n", b"PRIVMSG alice :\xff\xfe\r\n",
               b"\x01\x02\x03 \x7f\r\n", b":onlysource\r\n", b"@tagsonly\r\n")
    assert "NUL" in alice.expect("400", "PRIVMSG").params[-1]
    # IRCv3 UTF8ONLY: a standard reply, FAIL <command> INVALID_UTF8, not 400.
    fail = alice.expect("FAIL")
    assert fail.params[:2] == ["PRIVMSG", "INVALID_UTF8"] and "UTF-8" in fail.params[-1]
    alice.expect("421")
    alice.send("PING alive")
    assert alice.expect("PONG").params[-1] == "alive"


def test_ten_thousand_lines_pipelined_without_reading(irc, native):
    survivor = native("carol")
    alice = irc("alice")
    lines = b"".join(b"PING :token-%d\r\n" % i for i in range(10_000))
    alice.sock.settimeout(10)
    alice.sock.sendall(lines)
    last = None
    while last is None or last.params[-1] != "token-9999":
        last = alice.expect("PONG")
    assert survivor.ping() >= 0


def test_a_reader_that_never_reads_is_dropped_with_sendq_exceeded(start_irc_server, irc_on):
    server = start_irc_server("--max-output-bytes", "65536")
    slow, watcher = irc_on(server), irc_on(server, "watcher")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.register("slow")
    for client in (slow, watcher):
        client.send("JOIN #r")
        client.expect("366")
    text = "z" * 400
    deadline = time.monotonic() + 20
    quit_line = None
    while quit_line is None and time.monotonic() < deadline:
        watcher.send(*[f"PRIVMSG #r :{text}"] * 200)
        watcher.sync()
        quit_line = next((m for m in watcher.seen if m.command == "QUIT"), None)
    assert quit_line is not None and quit_line.source.startswith("slow!")
    assert quit_line.params[-1] == "SendQ exceeded"


# -- in a cluster ------------------------------------------------------------------------


def test_irc_nicks_are_unique_across_cluster_nodes(start_node, clients, irc_on):
    from tests.irchelpers import irc_port
    alpha = start_node("alpha", "--irc-port", "0")
    beta = start_node("beta", "--irc-port", "0")
    alpha.irc_port, beta.irc_port = irc_port(alpha), irc_port(beta)
    clients(beta, "carol")
    on_alpha = irc_on(alpha)
    on_alpha.send("NICK carol", "USER c 0 * :Carol", "PING early")
    on_alpha.expect("433", "carol")
    on_alpha.send("NICK dave")
    assert on_alpha.expect("001").params[0] == "dave"
    on_alpha.expect("PONG")             # the lines after the claim were kept, in order
    on_beta = irc_on(beta)
    on_beta.send("NICK DAVE", "USER d 0 * :Dave")
    on_beta.expect("433", "DAVE")


def test_flood_control_delays_then_drops_an_irc_flooder(start_irc_server, irc_on):
    server = start_irc_server("--limit-exempt", "", "--max-flood-lag-seconds", "1")
    flooder, watcher = irc_on(server, "flooder"), irc_on(server, "watcher")
    for client in (flooder, watcher):
        client.send("JOIN #r")
        client.expect("366")
    flooder.send(*[f"PRIVMSG #r :line {i}" for i in range(200)])
    assert "excess flood" in flooder.expect("ERROR").params[-1]
    quit_line = watcher.expect("QUIT")
    assert quit_line.source.startswith("flooder!")
    assert quit_line.params[-1] == "Excess Flood"
    said = [m.params[-1] for m in watcher.seen if m.command == "PRIVMSG"]
    assert said == [f"line {i}" for i in range(len(said))]      # in order, then cut off
    assert 10 <= len(said) < 200
