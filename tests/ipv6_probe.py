"""Per-address limits over IPv6, run inside a private network namespace (``unshare --net``,
started by tests/test_ipv6_limits.py) where this process may give loopback addresses of its
own: two /64s, and several addresses in the first for clients to connect from. Prints one JSON object of what it saw; the test asserts on it. Nothing here touches the
machine's own network: the namespace vanishes with this process."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

from chatcore import events as ev
from chatcore.client import ChatClient, ConnectionClosed
from tests.serverproc import ServerProcess

NET_A = "2001:db8:a:b::"        # one subscriber's /64 (documentation prefix, RFC 3849)
NET_B = "2001:db8:a:c::"        # the next /64: someone else


SOURCES_A = [0x100, 0x101, 0x102, 0x103, 0x200, 0x300, 0x301, 0x302, 0x303, 0x304]


def setup_namespace() -> None:
    commands = [["ip", "link", "set", "lo", "up"],
                ["ip", "-6", "addr", "add", f"{NET_A}1/64", "dev", "lo", "nodad"],
                ["ip", "-6", "addr", "add", f"{NET_B}1/64", "dev", "lo", "nodad"]]
    # The addresses clients of NET_A connect from: many hosts of one subscriber.
    commands += [["ip", "-6", "addr", "add", f"{NET_A}{host:x}/128", "dev", "lo", "nodad"]
                 for host in SOURCES_A]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True)


def client_from(source: str, port: int, name: str) -> tuple[str, object]:
    """Connect from ``source`` to the server on NET_A::1; ("ok", client) or ("refused", code)."""
    client = ChatClient(f"{NET_A}1", port, timeout=10)
    client.sock = socket.create_connection((f"{NET_A}1", port), timeout=10,
                                           source_address=(source, 0))
    try:
        client.hello(name)
    except ConnectionClosed as exc:
        client.close()
        return "refused", exc.error.code if exc.error else None
    return "ok", client


def main() -> int:
    setup_namespace()
    seen: dict = {}
    server = ServerProcess("--host", "::", "--max-connections-per-address", "3",
                           "--limit-exempt", "", "--log-level", "INFO").start()
    clients = []
    try:
        outcomes = []
        # Four different addresses of one /64: one subscriber, so the fourth is refused.
        for i in range(4):
            outcome, client = client_from(f"{NET_A}{0x100 + i:x}", server.port, f"a{i}")
            outcomes.append(outcome if outcome == "ok" else f"refused:{client}")
            if outcome == "ok":
                clients.append(client)
        seen["same_64"] = outcomes
        # The next /64 is someone else: counted apart.
        outcome, client = client_from(f"{NET_B}1", server.port, "b0")
        seen["other_64"] = outcome
        if outcome == "ok":
            clients.append(client)
        # A closed connection frees its place in its /64.
        clients.pop(0).quit()
        for _ in range(50):
            outcome, client = client_from(f"{NET_A}200", server.port, "a9")
            if outcome == "ok":
                clients.append(client)
                break
        seen["after_a_close"] = outcome
        seen["users"] = clients[0].list_users().total
        seen["log_refusal"] = any("connections from 2001:db8:a:b::/64 is the limit" in line
                                  for line in server.lines)
    finally:
        for client in clients:
            client.close()
        server.stop()
    # The /64 exempt: as many as it likes.
    exempt = ServerProcess("--host", "::", "--max-connections-per-address", "2",
                           "--limit-exempt", f"{NET_A}/64").start()
    try:
        outcomes = []
        for i in range(5):
            outcome, client = client_from(f"{NET_A}{0x300 + i:x}", exempt.port, f"e{i}")
            outcomes.append(outcome)
            if outcome == "ok":
                clients.append(client)
        seen["exempt_64"] = outcomes
    finally:
        for client in clients:
            client.close()
        exempt.stop()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
