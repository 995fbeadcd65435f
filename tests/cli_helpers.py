"""Helpers for the CLI client's tests: the real client in a pseudo-terminal or a pipe.

``Terminal`` wraps a pexpect child and matches patterns against its output with the
terminal escape sequences removed, so a test can wait for "bob -> alice: hi" whatever
prompt_toolkit does to draw it. It also feeds the output to a terminal emulator (pyte), so a
test can wait for what the screen shows (``expect_screen``): the status line, which
prompt_toolkit redraws in place, one changed cell at a time. Servers come from the shared
``start_server`` fixture.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pexpect
import pyte

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT_PY = os.path.join(ROOT, "client.py")
EXPECT_TIMEOUT_SECONDS = 10.0

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), and two-byte ESC sequences.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -~]")


def strip_escapes(raw: str) -> str:
    return _ESCAPES.sub("", raw).replace("\r", "")


def client_env(**extra: str) -> dict:
    # Not COLUMNS and LINES either: the client's terminal is the pty's size, but
    # shutil.get_terminal_size prefers these, and pytest-xdist workers set them to 80x24.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHATCORE_") and k not in ("COLUMNS", "LINES")}
    # A terminal prompt_toolkit knows. Its cursor-position requests are answered by the
    # emulator in Terminal, as a real terminal does: without the answer prompt_toolkit does
    # not know the rows below the prompt and draws no status line there.
    env.update(TERM="xterm", PYTHONUNBUFFERED="1",
               XDG_CONFIG_HOME=os.path.join(ROOT, "tests", "no-such-config-dir"))
    env.update(extra)
    return env


class Terminal:
    """The interactive client in a pseudo-terminal."""

    def __init__(self, *args: str, env: dict | None = None, rows: int = 40, cols: int = 160):
        self.child = pexpect.spawn(sys.executable, [CLIENT_PY, *args], cwd=ROOT,
                                   env=env or client_env(), encoding="utf-8",
                                   codec_errors="replace", dimensions=(rows, cols),
                                   timeout=EXPECT_TIMEOUT_SECONDS)
        self.raw = ""
        self.pos = 0            # matches start after the previous match
        self.screen = pyte.Screen(cols, rows)
        self.screen.write_process_input = self.child.send      # answers "where is the cursor"
        self._stream = pyte.Stream(self.screen)

    def _read(self, timeout: float) -> None:
        """Read what the client wrote (raises pexpect.TIMEOUT or EOF)."""
        data = self.child.read_nonblocking(65536, timeout=timeout)
        self.raw += data
        self._stream.feed(data)

    @property
    def screen_lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def expect_screen(self, pattern: str, timeout: float = EXPECT_TIMEOUT_SECONDS) -> re.Match:
        """Wait until a line of the screen, as a terminal shows it now, matches ``pattern``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.screen_lines:
                match = compiled.search(line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r} on the screen:\n"
                                     + "\n".join(self.screen_lines))
            try:
                self._read(min(remaining, 0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"client exited before {pattern!r} was on the screen:\n"
                                     + "\n".join(self.screen_lines)) from None

    @property
    def text(self) -> str:
        return strip_escapes(self.raw)

    def expect(self, pattern: str, timeout: float = EXPECT_TIMEOUT_SECONDS) -> re.Match:
        """Wait until ``pattern`` (a regex) appears in the output after the last match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            match = compiled.search(text, self.pos)
            if match:
                self.pos = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output since the "
                                     f"last match:\n{text[self.pos:]}")
            try:
                self._read(min(remaining, 0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                match = compiled.search(self.text, self.pos)
                if match:
                    self.pos = match.end()
                    return match
                raise AssertionError(f"client exited before {pattern!r}; output since the "
                                     f"last match:\n{self.text[self.pos:]}") from None

    def expect_literal(self, text: str, timeout: float = EXPECT_TIMEOUT_SECONDS) -> re.Match:
        return self.expect(re.escape(text), timeout)

    def send(self, text: str) -> None:
        self.child.send(text)

    def sendline(self, text: str) -> None:
        self.child.send(text + "\r")

    def wait_exit(self, timeout: float = EXPECT_TIMEOUT_SECONDS) -> int:
        """Read to EOF; the exit status."""
        deadline = time.monotonic() + timeout
        while self.child.isalive() or not self.child.eof():
            try:
                self._read(0.2)
            except pexpect.TIMEOUT:
                if time.monotonic() > deadline:
                    raise AssertionError(f"client did not exit:\n{self.text[self.pos:]}")
            except pexpect.EOF:
                break
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else \
            128 + self.child.signalstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


def login(port: int, name: str, *args: str, cols: int = 160) -> Terminal:
    """An interactive client connected as ``name`` and showing its prompt."""
    term = Terminal("--port", str(port), "--name", name, *args, cols=cols)
    term.expect_literal(f"connected to ")
    term.expect(r"type /help")
    term.expect_screen(rf"^ {name} \|")                    # the status line is drawn
    return term


def run_client(*args: str, input: str = "", timeout: float = 30.0,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """The client with stdin and stdout as pipes (scriptable mode), to completion."""
    return subprocess.run([sys.executable, CLIENT_PY, *args], input=input, text=True,
                          capture_output=True, timeout=timeout, cwd=ROOT,
                          env=env or client_env())


def start_script(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The client in scriptable mode, still running: write to stdin, read stdout lines."""
    return subprocess.Popen([sys.executable, CLIENT_PY, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, cwd=ROOT, env=env or client_env())


class ScriptClient:
    """The client in scriptable mode, running: ``write`` lines, ``expect`` output lines."""

    def __init__(self, *args: str, env: dict | None = None):
        import queue
        import threading
        self.proc = start_script(*args, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def write(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = EXPECT_TIMEOUT_SECONDS) -> re.Match:
        """The next output line matching ``pattern`` (earlier lines are kept in ``lines``)."""
        import queue
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {pattern!r}; lines so far:\n"
                                     + "\n".join(self.lines)) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"client exited before {pattern!r}; lines:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            match = compiled.search(line)
            if match:
                return match

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Close stdin and wait: the exit status and stderr."""
        self.proc.stdin.close()
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5)
        while (line := self._queue.get()) is not None:
            self.lines.append(line)
        return status, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


class FakeServer:
    """A listening socket on 127.0.0.1 run by ``handle(sock)`` in a thread, once per
    connection: a port that says nothing, answers HTTP, or speaks chatcore with a script."""

    def __init__(self, handle):
        import socket
        import threading
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list = []
        self._handle = handle
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import threading
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(sock)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock) -> None:
        try:
            self._handle(sock)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for sock in self.connections:
            sock.close()


def chatcore_peer(*events_after_welcome):
    """A FakeServer handler: a minimal chatcore server that welcomes the client, sends
    ``events_after_welcome`` and then keeps the connection open until the client leaves."""
    def handle(sock) -> None:
        from chatcore import events as ev
        from chatcore.protocol import NEED_DATA, NativeProtocol, Role
        protocol = NativeProtocol(Role.SERVER)
        while True:
            data = sock.recv(65536)
            if not data:
                return
            protocol.receive_data(data)
            event = protocol.next_event()
            while event is not NEED_DATA:
                if type(event) is ev.Hello:
                    sock.sendall(protocol.send(ev.Welcome(
                        event.version, event.name or "guest", "fake@127.0.0.1", 0, 65536,
                        8192, 32, request_id=event.request_id)))
                    for later in events_after_welcome:
                        sock.sendall(protocol.send(later))
                event = protocol.next_event()
    return handle


class CuttableProxy:
    """A TCP relay from 127.0.0.1 to ``port``: ``cut()`` resets every relayed connection on
    both sides at once, as a network blip does (the server sees a reset, not a goodbye).

    One thread runs every socket through a selector; ``cut`` asks that thread to do it, so
    that no other thread holds a socket when it is closed (which would delay the reset).
    """

    def __init__(self, port: int):
        import selectors
        import socket
        import threading
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._peers: dict = {}                  # socket -> the socket it relays to
        self._cut = threading.Event()
        self._done = threading.Event()
        self._stop = False
        self.down = False               # while True, new connections are closed at once
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import selectors
        import socket
        import struct
        while not self._stop:
            for key, _ in self._selector.select(0.05):
                if key.fileobj is self.listener:
                    try:
                        client, _ = self.listener.accept()
                        if self.down:
                            client.close()
                            continue
                        server = socket.create_connection(("127.0.0.1", self.upstream))
                    except OSError:
                        continue
                    self._peers[client], self._peers[server] = server, client
                    for sock in (client, server):
                        self._selector.register(sock, selectors.EVENT_READ, None)
                    continue
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                    if data:
                        self._peers[sock].sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(sock, reset=False)
            if self._cut.is_set():
                for sock in list(self._peers):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._drop(sock, reset=True)
                self._cut.clear()
                self._done.set()

    def _drop(self, sock, reset: bool) -> None:
        if sock not in self._peers:
            return
        peer = self._peers.pop(sock)
        self._selector.unregister(sock)
        sock.close()
        if peer is not None and not reset:
            self._drop(peer, reset=False)

    def cut(self, timeout: float = 10.0, *, stay_down: bool = False) -> None:
        """Reset every relayed connection; ``stay_down``: refuse new ones until ``up()``."""
        self.down = stay_down
        self._done.clear()
        self._cut.set()
        assert self._done.wait(timeout), "the proxy did not cut its connections"

    def up(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self._stop = True
        self.listener.close()
