"""The load generator's scenarios and the plan of one run: who connects, joins, sends to whom.

``make_plan`` turns the parsed flags into one ``ClientSpec`` per client and, per sender, how many
clients receive each of its messages (what the verification expects).
"""
from __future__ import annotations

import dataclasses
import os

SCENARIOS = {
    # clients, rooms, senders, rate (aggregate msgs/s; 0 = window), size, duration (s)
    "fanout": dict(clients=200, rooms=1, senders=10, rate=0, size=100, duration=5.0),
    "rooms": dict(clients=2000, rooms=100, senders=100, rate=0, size=100, duration=5.0),
    "dm": dict(clients=200, rooms=0, senders=200, rate=0, size=100, duration=5.0),
    "connect": dict(clients=10000, rooms=0, senders=0, rate=0, size=100, duration=3.0),
    # 10 senders x 100 msgs/s into a room of 100: 100 000 deliveries/s.
    "latency": dict(clients=100, rooms=1, senders=10, rate=1000, size=100, duration=5.0),
}


# -- the plan: who is who ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class ClientSpec:
    index: int
    name: str
    room: str | None          # the room joined, if any
    peer: str | None          # dm: the peer written to
    sender: bool
    server: int = 0           # index into the run's server addresses (--servers)


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    scenario: str
    clients: tuple
    recipients: dict          # sender index -> how many clients receive each of its messages
    rate: float
    size: int
    duration: float
    window: int
    connect_window: int = 256     # handshakes in progress per process


def server_of(index: int, rooms: int, servers: int) -> int:
    """Round-robin over the servers so that every room's members (client ``index`` is member
    ``index // rooms`` of room ``index % rooms``) and the senders are spread over all of them;
    a dm pair (``i``, ``i ^ 1``) lands on two servers."""
    if servers <= 1:
        return 0
    if not rooms:
        return index % servers
    return (index // rooms + index % rooms) % servers


def make_plan(args) -> Plan:
    run = os.urandom(3).hex()
    n, s = args.clients, min(args.senders, args.clients)
    servers = len(getattr(args, "servers", None) or ()) or 1
    # IRC servers do not echo a channel message to its sender; chatcore's native protocol does.
    echo = getattr(args, "proto", "native") != "irc"
    specs = []
    recipients = {}
    if args.scenario == "dm":
        n -= n % 2
        s = min(s, n)
        for i in range(n):
            peer = i ^ 1
            specs.append(ClientSpec(i, f"b{run}n{i}", None, f"b{run}n{peer}", i < s,
                                    server_of(i, 0, servers)))
            if i < s:
                recipients[i] = 1
    else:
        rooms = args.rooms if args.scenario != "connect" else 0
        sizes = [0] * rooms
        for i in range(n):
            room = i % rooms if rooms else None
            if room is not None:
                sizes[room] += 1
            specs.append(ClientSpec(i, f"b{run}n{i}", None if room is None else f"b{run}r{room}",
                                    None, room is not None and i < s,
                                    server_of(i, rooms, servers)))
        for spec in specs:
            if spec.sender:
                recipients[spec.index] = sizes[spec.index % rooms] - (not echo)
    return Plan(args.scenario, tuple(specs), recipients, args.rate, args.size, args.duration,
                args.window, getattr(args, "connect_window", 256))
