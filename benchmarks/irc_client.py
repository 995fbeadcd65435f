"""The load generator over IRC (``--proto irc``): the same scenarios and checks, spoken as an IRC
client to chatcore's IRC front end, ngIRCd or InspIRCd.

* Registration: ``NICK`` and ``USER``; 001 is the Welcome (its time is the name-claim latency),
  then ``JOIN #room``; the client is ready at 366 (end of NAMES) for its channel.
* Sending: ``PRIVMSG #room :TEXT`` (``dm``: ``PRIVMSG peer :TEXT``), TEXT stamped as in the native
  runs. IRC has no per-message acknowledgement, so a sender follows its messages with
  ``PING :N`` (N = messages sent so far, every ``PING_EVERY_MESSAGES`` and after each burst): a
  server handles one client's lines in order, so the PONG carrying N says that all N were
  handled. That drives the in-flight window and gives the expected deliveries, as Acks do.
* Receiving: ``verify.IrcStream`` (compiled in ``chatcore._loadgen``, its specification in
  ``benchmarks/_verify_py.py``) splits lines, checks every PRIVMSG text (per-sender order, loss,
  duplicates, latency) into the shared ``Tally``, counts PONGs as acknowledgements and hands
  every other line back.
* IRC servers do not echo a channel message to its sender, so a room message is expected by
  every other member (``scenarios.make_plan``).

The line counts appear in the result's ``frames`` under the native types: 0xa0 a channel
PRIVMSG, 0x90 a PRIVMSG to a nick, 0x82 a PONG, 0x00 any other line.
"""
from __future__ import annotations

import select

from . import verify
from .verify import stamp
from .worker import Client, Worker, _now_us

PING_EVERY_MESSAGES = 16          # at most this many messages before a PING asks for a PONG
BENIGN_ERRORS = frozenset({b"422"})   # ERR_NOMOTD: chatcore has no MOTD; not a failure


class IrcClient(Client):
    __slots__ = ("channel", "pinged")
    stream_class = verify.IrcStream

    def __init__(self, spec, tally):
        super().__init__(spec, tally)
        self.channel = b"#" + spec.room.encode() if spec.room is not None else None
        target = self.channel or (spec.peer.encode() if spec.peer is not None else None)
        self.prefix = b"PRIVMSG " + target + b" :" if target is not None else b""
        self.pinged = 0                  # messages sent when the last PING went out


class IrcWorker(Worker):
    """The native worker's loop, connections and phases, with IRC's handshake and lines."""

    client_class = IrcClient

    def say_hello(self, c: IrcClient) -> None:
        c.state = "handshake"
        self.ep.modify(c.fd, select.EPOLLIN)
        name = c.spec.name.encode()
        c.hello_us = _now_us()
        self.write(c, b"NICK %s\r\nUSER %s 0 * :chatcore-bench\r\n" % (name, name))

    def handle(self, c: IrcClient, lines, now_us: int) -> None:
        for line in lines:
            if line.startswith(b"PING"):
                self.write(c, b"PONG" + line[4:] + b"\r\n")
                continue
            if line.startswith(b"ERROR"):
                self.error(f"{c.spec.name}: {line.decode('utf-8', 'replace')}")
                if c.state == "handshake":
                    self.failures += 1
                    c.state = "failed"
                continue
            parts = line.split(b" ", 3)
            if len(parts) < 2 or not line.startswith(b":"):
                continue
            command = parts[1]
            if command == b"001":
                if c.state == "handshake":
                    self.welcomed(c, now_us)
                    if c.channel is None:
                        self.became_ready(c, now_us)
                    else:
                        self.write(c, b"JOIN " + c.channel + b"\r\n")
            elif command == b"366":
                if c.state == "handshake" and c.channel is not None and \
                        c.channel.lower() in line.lower():
                    self.became_ready(c, now_us)
            elif len(command) == 3 and command.isdigit() and command[0] in b"45" \
                    and command not in BENIGN_ERRORS:
                self.error(f"{c.spec.name}: {line.decode('utf-8', 'replace')}")
                if c.state == "handshake":
                    self.failures += 1
                    c.state = "failed"

    def send_messages(self, c: IrcClient, count: int, now_us: int) -> None:
        if count <= 0 or c.sock is None:
            return
        prefix, size, sender = c.prefix, self.plan.size, c.spec.index
        parts = []
        seq = c.seq
        for _ in range(count):
            parts.append(prefix)
            parts.append(stamp(sender, seq, now_us, size))
            parts.append(b"\r\n")
            seq += 1
            if seq - c.pinged >= PING_EVERY_MESSAGES:
                parts.append(b"PING :%d\r\n" % seq)
                c.pinged = seq
        if not self.plan.rate and c.pinged != seq:      # a burst: have it all acknowledged
            parts.append(b"PING :%d\r\n" % seq)
            c.pinged = seq
        c.seq = seq
        c.sent += count
        c.inflight += count
        self.write(c, b"".join(parts))

    def drain(self) -> None:
        for c in self.senders:           # --rate: ask for the last few messages' PONG
            if c.sock is not None and c.pinged != c.seq:
                self.write(c, b"PING :%d\r\n" % c.seq)
                c.pinged = c.seq
        super().drain()
