"""TLS on the native listener, against real server processes: chat across a TLS and a plain
client, certificate checks, clients without TLS, stuck handshakes, the plain listener off,
and every Connection behaviour (limits, pings, lingering close) over TLS."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from chatcore.errors import ErrorCode
from chatcore.protocol import NEED_DATA, PROTOCOL_VERSION, NativeProtocol, Role, encode_event
from tests.serverproc import ROOT, SERVER_PY


@pytest.fixture
def tls_server(start_server, tls_files):
    """``tls_server(*flags)``: a server with a TLS listener beside the plain one."""
    def start(*flags):
        return start_server(*tls_files.server_flags, *flags)
    return start


@pytest.fixture
def clients():
    """``clients(port, name, **kwargs)``: connected ChatClients, closed after the test."""
    made = []

    def make(port: int, name: str, **kwargs) -> ChatClient:
        client = ChatClient("127.0.0.1", port, timeout=10, **kwargs)
        made.append(client)
        client.connect(name)
        return client
    yield make
    for client in made:
        client.close()


def room_messages(client: ChatClient, count: int) -> list:
    return [client.wait_for(ev.RoomMessage).text for _ in range(count)]


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sent until it closed ``sock``; fails if it stays open."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes a TLS client sends first, made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# -- chatting over TLS --------------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_and_plain_clients_chat(tls_server, tls_files, clients, version):
    server = tls_server()
    context = ssl.create_default_context(cafile=tls_files.ca)
    context.minimum_version = context.maximum_version = version
    alice = clients(server.tls_port, "alice", tls=context)
    bob = clients(server.port, "bob")
    assert alice.sock.version() == version.name.replace("v", "v").replace("_", ".")
    for client in (alice, bob):
        client.join("lobby")
    alice.send_room("lobby", "hello over TLS")
    bob.send_room("lobby", "hello in clear")
    assert room_messages(bob, 2) == ["hello over TLS", "hello in clear"]
    assert room_messages(alice, 2) == ["hello over TLS", "hello in clear"]
    bob.send_direct("alice", "just you")
    assert alice.wait_for(ev.DirectMessage).text == "just you"
    users = {u.name: u for u in bob.list_users("lobby").users}
    assert set(users) == {"alice", "bob"}


def test_hello_in_the_same_write_as_the_last_handshake_message(tls_server, tls_files):
    """TLS 1.3: the client's Finished and its first frame arrive in one read of the server."""
    server = tls_server()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=tls_files.ca).wrap_bio(
        incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(encode_event(ev.Hello(PROTOCOL_VERSION, "eager", request_id=1)))
        sock.sendall(outgoing.read())                 # Finished and Hello together
        protocol = NativeProtocol(Role.CLIENT)
        while not isinstance(event := protocol.next_event(), ev.Welcome):
            if event is NEED_DATA:
                incoming.write(sock.recv(65536))
                try:
                    protocol.receive_data(tls.read(65536))
                except ssl.SSLWantReadError:
                    pass
    assert event.name == "eager"


def test_large_output_crosses_many_records_and_partial_writes(tls_server, tls_files, clients):
    """800 KB queued for a TLS reader at once: more than the kernel takes in one write."""
    server = tls_server()
    reader = clients(server.tls_port, "reader", tls_ca=tls_files.ca)
    writer = clients(server.port, "writer")
    reader.join("bulk")
    writer.join("bulk")
    texts = [f"{i:04d}" + chr(0x41 + i % 26) * 7996 for i in range(100)]
    for text in texts:
        writer.send_room("bulk", text)
    assert room_messages(reader, 100) == texts


def test_pings_and_rtt_over_tls(tls_server, tls_files, clients):
    server = tls_server()          # the test flags ping every 0.2 s
    watcher = clients(server.tls_port, "watcher", tls_ca=tls_files.ca, auto_pong=False)
    assert watcher.wait_for(ev.Ping, timeout=5).token
    alice = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        me = next(u for u in alice.list_users().users if u.name == "alice")
        if me.rtt_us != 0xFFFFFFFF:
            break
    assert me.rtt_us < 1_000_000      # measured from our automatic pongs, over TLS


def test_output_limit_drops_a_tls_reader_that_stops_reading(tls_server, tls_files, clients):
    server = tls_server("--max-output-bytes", "65536", "--resume-grace-seconds", "0")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # the kernel holds little
    raw.connect(("127.0.0.1", server.tls_port))
    context = ssl.create_default_context(cafile=tls_files.ca)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as stalled:
        stalled.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, "stalled", request_id=1)) +
                        encode_event(ev.JoinRoom("busy", request_id=2)))
        writer = clients(server.port, "writer")
        bystander = clients(server.tls_port, "bystander", tls_ca=tls_files.ca)
        for client in (writer, bystander):
            client.join("busy")
        text = "x" * 8000
        left = None
        # Loopback kernel buffers take a few MB first (plain and TLS alike); up to 8 MB.
        for _ in range(1000):
            writer.send_room("busy", text)
            assert bystander.wait_for(ev.RoomMessage).text == text
            left = next((e for e in writer.drain() if type(e) is ev.UserLeft), None)
            if left is not None:
                break
        assert (left.name, left.reason) == ("stalled", ev.Reason.TOO_SLOW)
        server.wait_for_log("stalled: output queue passed 65536 bytes")


def test_fatal_error_reaches_the_tls_client_before_the_close(tls_server, tls_files, clients):
    """The lingering close works over TLS: the error frame is read, then close_notify."""
    server = tls_server()
    alice = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    alice.send_raw(b"\x00\x00\x00\x02xy")            # a length below the minimum
    error = alice.wait_for(ev.Error)
    assert (error.code, error.fatal) == (ErrorCode.BAD_FRAME, True)
    with pytest.raises(ConnectionClosed):
        alice.wait_for(ev.Pong)


# -- certificates ---------------------------------------------------------------------------------

def test_unknown_ca_is_refused_with_a_clear_client_error(tls_server, tls_files, clients):
    server = tls_server()
    stranger = ChatClient("127.0.0.1", server.tls_port, tls=True, timeout=10)  # system CAs
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        stranger.connect("mallory")
    assert stranger.sock is None
    server.wait_for_log("the client does not trust our certificate")
    ok = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    assert ok.ping() < 5


def test_cli_names_the_untrusted_certificate_and_the_remedy(tls_server, tls_files, clients):
    server = tls_server()
    receiver = clients(server.port, "bob")
    run = [sys.executable, os.path.join(ROOT, "client.py"), "--port", str(server.tls_port),
           "--name", "alice", "--send", "bob", "hi"]
    refused = subprocess.run([*run, "--tls"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 3, refused.stderr
    assert "TLS certificate is not trusted" in refused.stderr
    assert "--tls-ca" in refused.stderr
    sent = subprocess.run([*run, "--tls-ca", tls_files.ca], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert sent.returncode == 0, sent.stderr
    assert receiver.wait_for(ev.DirectMessage).text == "hi"
    insecure = subprocess.run([*run[:-1], "again", "--tls-insecure"], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert insecure.returncode == 0, insecure.stderr
    assert receiver.wait_for(ev.DirectMessage).text == "again"


def test_tls_client_on_the_plain_port_gets_a_clear_error(tls_server, tls_files):
    server = tls_server()
    client = ChatClient("127.0.0.1", server.port, tls_ca=tls_files.ca, timeout=10)
    with pytest.raises(ssl.SSLError):
        client.connect("alice")


# -- what is not a TLS client -------------------------------------------------------------------

@pytest.mark.parametrize("first_bytes", [
    encode_event(ev.Hello(PROTOCOL_VERSION, "plain", "test", request_id=1)),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\x20" + b"\xff" * 32,           # a handshake record full of garbage
], ids=["native-hello", "http", "garbage-handshake"])
def test_non_tls_input_on_the_tls_port_is_closed_at_once(tls_server, tls_files, clients,
                                                         first_bytes):
    server = tls_server()
    with socket.create_connection(("127.0.0.1", server.tls_port)) as sock:
        sock.sendall(first_bytes)
        closed_by_server(sock)
    line = server.wait_for_log("TLS handshake failed")
    assert "INFO" in line
    ok = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    assert ok.ping() < 5
    assert sum("TLS handshake failed" in line for line in server.lines) == 1
    assert "Traceback" not in server.log


def _hanging_handshakes(port: int, hello: bytes) -> list[socket.socket]:
    """20 connections that never start a handshake and 5 stuck after half a ClientHello."""
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    stuck = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    for sock in stuck:
        sock.sendall(hello[:len(hello) // 2])
    return silent + stuck


def test_chat_goes_on_while_handshakes_hang(tls_server, tls_files, clients):
    server = tls_server("--tls-handshake-timeout-seconds", "120")
    alice = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    bob = clients(server.port, "bob")
    for client in (alice, bob):
        client.join("lobby")
    hanging = _hanging_handshakes(server.tls_port,
                                  client_hello(ssl.create_default_context(cafile=tls_files.ca)))
    try:
        for i in range(20):
            alice.send_room("lobby", f"m{i}")
        assert room_messages(bob, 20) == [f"m{i}" for i in range(20)]
        assert clients(server.tls_port, "carol", tls_ca=tls_files.ca).ping() < 5
        # ... and all of that while every one of them was still hanging (not yet closed).
        for sock in hanging:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in hanging:
            sock.close()


def test_silent_and_stuck_handshakes_time_out(tls_server, tls_files, clients):
    server = tls_server("--tls-handshake-timeout-seconds", "0.5")
    hanging = _hanging_handshakes(server.tls_port,
                                  client_hello(ssl.create_default_context(cafile=tls_files.ca)))
    try:
        for sock in hanging:
            assert closed_by_server(sock, timeout=60) == b""
    finally:
        for sock in hanging:
            sock.close()
    seen = 0
    for _ in range(25):                 # one line each (the log is read by another thread)
        line = server.wait_for_log("no TLS handshake within 0.5s", start=seen, timeout=30)
        seen = server.lines.index(line, seen) + 1
    alice = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    assert alice.ping() < 5
    assert "Traceback" not in server.log


# -- listeners and configuration -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tls_only_switches_the_plain_listener_off(start_server, tls_files, clients):
    plain_port = free_port()
    server = start_server(*tls_files.server_flags, "--tls-only", port=plain_port)
    assert server.port == server.tls_port != plain_port
    assert "(TLS only)" in server.wait_for_log("listening on")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", plain_port), timeout=5).close()
    alice = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
    assert alice.welcome.name == "alice"


def server_exit(*flags: str) -> subprocess.CompletedProcess:
    """Run the server with ``flags``, expecting it to refuse to start."""
    return subprocess.run([sys.executable, SERVER_PY, "--port", "0", *flags],
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def test_certificate_without_key_is_refused_naming_the_file(tls_files):
    result = server_exit("--tls-port", "0", "--tls-cert", tls_files.cert)
    assert result.returncode == 2
    assert f"tls_cert {tls_files.cert} is set but tls_key is not" in result.stderr


@pytest.mark.parametrize("problem", ["missing cert", "garbage cert", "wrong key"])
def test_unusable_certificate_or_key_is_refused(tls_files, tmp_path, problem):
    cert, key = tls_files.cert, tls_files.key
    if problem == "missing cert":
        cert = str(tmp_path / "nowhere.pem")
        expected = f"tls_cert {cert}: cannot read it"
    elif problem == "garbage cert":
        cert = str(tmp_path / "garbage.pem")
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        expected = f"tls_cert {cert}: no PEM certificate in it"
    else:
        import trustme
        key = str(tmp_path / "other.key")
        trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(key)
        expected = f"tls_key {key}: not an unencrypted PEM private key of the certificate"
    result = server_exit("--tls-port", "0", "--tls-cert", cert, "--tls-key", key)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# -- input held inside TLS counts toward the held-input budget -------------------------------------

def test_record_tracker_follows_records_split_anywhere():
    from chatcore.tls import RecordTracker
    records = b"".join(b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body
                       for body in (b"a" * 300, b"", b"b" * 7))
    stream = records + b"\x17\x03\x03\x01\x00" + b"c" * 100      # 105 of a 261-byte record
    for cut in range(len(stream) + 1):
        tracker = RecordTracker()
        tracker.feed(stream[:cut])
        tracker.feed(stream[cut:])
        assert tracker.partial == 105, cut
    whole = RecordTracker()
    whole.feed(records)
    assert whole.partial == 0
    byte_by_byte = RecordTracker()
    for i in range(len(stream)):
        byte_by_byte.feed(stream[i:i + 1])
    assert byte_by_byte.partial == 105


class TlsPipe:
    """A TLS client over a plain socket with memory BIOs, so a test can send half a record."""

    def __init__(self, port: int, ca: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ssl.create_default_context(cafile=ca).wrap_bio(
            self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.protocol = NativeProtocol(Role.CLIENT)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    self.sock.sendall(self.outgoing.read())
                self.incoming.write(self.sock.recv(65536))
        self.sock.sendall(self.outgoing.read())

    def record(self, plaintext: bytes) -> bytes:
        self.tls.write(plaintext)
        return self.outgoing.read()

    def send(self, plaintext: bytes) -> None:
        self.sock.sendall(self.record(plaintext))

    def next_event(self):
        """The next event from the server; None once it closed the connection."""
        while (event := self.protocol.next_event()) is NEED_DATA:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.incoming.write(data)
            try:
                while chunk := self.tls.read(65536):
                    self.protocol.receive_data(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                pass
        return event

    def wait_for(self, kind):
        while (event := self.next_event()) is not None:
            if type(event) is kind:
                return event
        raise AssertionError(f"closed before a {kind.__name__} came")

    def close(self) -> None:
        self.sock.close()


def test_an_unfinished_tls_record_counts_toward_the_held_input_budget(tls_server, tls_files):
    # Each parked record holds about 8 KB inside the server's ssl object, which counts as
    # 2 x 8 KB + 4 KiB (its copies, as measured): two fit in 50 000 bytes, a third does not.
    server = tls_server("--max-held-input-bytes", "50000")
    frame = encode_event(ev.SendRoom("nowhere", "x" * 8000, request_id=7))
    pipes = []
    try:
        for i in range(3):
            pipe = TlsPipe(server.tls_port, tls_files.ca)
            pipes.append(pipe)
            pipe.send(encode_event(ev.Hello(PROTOCOL_VERSION, f"p{i}", request_id=1)))
            pipe.wait_for(ev.Welcome)
            record = pipe.record(frame)
            pipe.sock.sendall(record[:-5])              # all of it but its last 5 bytes
            pipe.rest = record[-5:]
        error = pipes[2].wait_for(ev.Error)
        assert (ErrorCode(error.code), error.fatal) == (ErrorCode.INPUT_BUDGET, True)
        assert pipes[2].next_event() is None
        # The two others were held, not dropped: the rest of the record makes the frame,
        # which the server answers (room "nowhere" is not one of ours).
        for pipe in pipes[:2]:
            pipe.sock.sendall(pipe.rest)
            reply = pipe.wait_for(ev.Error)
            assert (reply.request_id, reply.fatal) == (7, False)
        # What they held is released: another one may park now.
        again = TlsPipe(server.tls_port, tls_files.ca)
        pipes.append(again)
        again.send(encode_event(ev.Hello(PROTOCOL_VERSION, "p3", request_id=1)))
        again.wait_for(ev.Welcome)
        record = again.record(frame)
        again.sock.sendall(record[:-5])
        again.sock.sendall(record[-5:])
        assert again.wait_for(ev.Error).request_id == 7
    finally:
        for pipe in pipes:
            pipe.close()
    server.wait_for_log("p2: dropped, the server holds")


def test_tls_handshakes_count_toward_the_held_input_budget(tls_server, tls_files, clients):
    hello = client_hello(ssl.create_default_context(cafile=tls_files.ca))
    half = hello[:len(hello) // 2]
    # Two half ClientHellos fit in the budget, a third does not.
    server = tls_server("--max-held-input-bytes", str(len(half) * 3 - 1))
    stuck = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
            sock.sendall(half)
            stuck.append(sock)
        third = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
        stuck.append(third)
        third.sendall(half)
        assert closed_by_server(third) == b""
        server.wait_for_log("closed during the TLS handshake")
        # The first two were kept waiting for the rest of their handshakes; once they go,
        # their part of the budget is free again and a whole handshake gets through.
        for sock in stuck[:2]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):    # open, and nothing came: still waiting
                sock.recv(1)
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                ok = clients(server.tls_port, "alice", tls_ca=tls_files.ca)
                break
            except (OSError, ConnectionClosed):
                assert time.monotonic() < deadline, "the budget was never released"
        assert ok.ping() < 5
    finally:
        for sock in stuck:
            sock.close()


def test_tls_handshakes_past_the_limit_wait_in_the_backlog(tls_server, tls_files, clients):
    import threading
    server = tls_server("--max-tls-handshakes", "2")
    silent = [socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
              for _ in range(2)]
    try:
        server.wait_for_log("2 TLS handshakes in progress: accepting more once one ends")
        third = ChatClient("127.0.0.1", server.tls_port, tls_ca=tls_files.ca, timeout=30)
        done = threading.Event()

        def connect() -> None:
            third.connect("third")
            done.set()
        waiter = threading.Thread(target=connect, daemon=True)
        waiter.start()
        assert not done.wait(0.5), "a handshake past the limit was accepted"
        silent.pop().close()            # a handshake ends: the one waiting is accepted
        assert done.wait(20)
        assert third.ping() < 5
        third.quit()
        # Plain clients were never held up.
        assert clients(server.port, "plain").ping() < 5
    finally:
        for sock in silent:
            sock.close()
