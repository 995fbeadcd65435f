"""Smoke test of an installed chatcore: start its server, chat one message, stop it.

    python scripts/smoke_test.py            # with the python of the environment to check

Starts the ``chatcore-server`` console script installed beside this interpreter on a free
loopback port, connects two library clients, sends one direct message and checks that it
arrives and is acknowledged, then stops the server with SIGTERM and expects exit status 0.
Prints one line and exits 0 when all is well; any failure raises. CI runs it against the
sdist installed in a fresh venv (scripts/check_install.sh).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from chatcore import events as ev
from chatcore.client import ChatClient

TIMEOUT_SECONDS = 30.0
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def start_server() -> tuple[subprocess.Popen, int]:
    command = [os.path.join(os.path.dirname(sys.executable), "chatcore-server"),
               "--host", "127.0.0.1", "--port", "0"]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    seen = []
    for line in server.stderr:              # the server logs its address once it listens
        seen.append(line)
        if match := LISTENING.search(line):
            # Keep reading its log so that the pipe never fills and blocks the server.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, int(match.group(2))
    server.wait(TIMEOUT_SECONDS)
    raise SystemExit(f"the server exited ({server.returncode}) before listening:\n"
                     + "".join(seen))


def main() -> int:
    server, port = start_server()
    try:
        with ChatClient("127.0.0.1", port, timeout=TIMEOUT_SECONDS) as alice, \
                ChatClient("127.0.0.1", port, timeout=TIMEOUT_SECONDS) as bob:
            alice.connect("alice")
            bob.connect("bob")
            ack = alice.send_direct("bob", "hello from the smoke test")
            message = bob.wait_for(ev.DirectMessage)
            assert (message.sender, message.text) == ("alice", "hello from the smoke test"), \
                message
            assert message.msg_id == ack.msg_id, (message, ack)
            alice.quit()
            bob.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(TIMEOUT_SECONDS)
    assert status == 0, f"the server exited {status} on SIGTERM"
    import chatcore.codec
    print(f"smoke test: ok (chatcore from {os.path.dirname(chatcore.codec.__file__)}, "
          f"hot path {chatcore.codec.IMPLEMENTATION}, server on port {port}, exit {status})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
