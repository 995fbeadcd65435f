"""The load generator over IRC (``--proto irc``): the same scenarios and checks, spoken as an IRC
client to chatcore's IRC front end, ngIRCd or InspIRCd.

* Registration: ``NICK`` and ``USER``; 001 is the Welcome (its time is the name-claim latency),
  then ``JOIN #room``; the client is ready at 366 (end of NAMES) for its channel.
* Sending: ``PRIVMSG #room :TEXT`` (``dm``: ``PRIVMSG peer :TEXT``), TEXT stamped as in the native
  runs. IRC has no per-message acknowledgement, so a sender follows its messages with
  ``PING :N`` (N = messages sent so far, every ``PING_EVERY_MESSAGES`` and after each burst): a
  server handles one client's lines in order, so the PONG carrying N says that all N were
  handled. That drives the in-flight window and gives the expected deliveries, as Acks do.
* Receiving: ``IrcStream`` splits lines, checks every PRIVMSG text (per-sender order, loss,
  duplicates, latency) into a ``Tally`` (the pure-Python one: there is no compiled IRC
  verifier), counts PONGs as acknowledgements and hands every other line back.
* IRC servers do not echo a channel message to its sender, so a room message is expected by
  every other member (``scenarios.make_plan``).

The line counts appear in the result's ``frames`` under the native types: 0xa0 a channel
PRIVMSG, 0x90 a PRIVMSG to a nick, 0x82 a PONG, 0x00 any other line.
"""
from __future__ import annotations

import select

from . import _verify_py as verify_py
from ._verify_py import TEXT_HEADER_BYTES, bucket_of
from .worker import Client, Worker, _now_us

PING_EVERY_MESSAGES = 16          # at most this many messages before a PING asks for a PONG
MAX_LINE_BYTES = 64 * 1024        # an unterminated line longer than this breaks the stream
BENIGN_ERRORS = frozenset({b"422"})   # ERR_NOMOTD: chatcore has no MOTD; not a failure

_HEX_DIGITS = b"0123456789abcdef"
ROOM_LINE, DIRECT_LINE, PONG_LINE, OTHER_LINE = 0xA0, 0x90, 0x82, 0x00


class IrcStream:
    """One connection's receive side: ``feed(data, now_us)`` returns the lines to handle."""

    __slots__ = ("tally", "acks", "_tail", "_last", "_acked_to")

    def __init__(self, tally):
        self.tally = tally
        self.acks = 0                    # messages newly acknowledged by PONGs
        self._tail = b""
        self._last: dict = {}            # sender id -> last sequence number seen
        self._acked_to = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._tail)

    def feed(self, data, now_us: int) -> list:
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE_BYTES:
            raise ValueError(f"a line of more than {MAX_LINE_BYTES} bytes")
        counts = self.tally.counts
        others = []
        for line in lines:
            at = line.find(b" PRIVMSG ")
            if at > 0 and line[0] == 0x3A:            # ":nick!user@host PRIVMSG target :text"
                text_at = line.find(b" :", at + 9)
                if text_at < 0:
                    counts[OTHER_LINE] += 1
                    self.tally.malformed += 1
                    continue
                room = line[at + 9] == 0x23           # "#"
                counts[ROOM_LINE if room else DIRECT_LINE] += 1
                self._message(line, text_at + 2, now_us)
                continue
            at = line.find(b" PONG ")
            if at > 0 and line[0] == 0x3A:
                counts[PONG_LINE] += 1
                token = line.rstrip(b"\r").rsplit(b" ", 1)[-1].lstrip(b":")
                if token.isdigit():
                    acked = int(token)
                    if acked > self._acked_to:
                        self.acks += acked - self._acked_to
                        self._acked_to = acked
                continue
            counts[OTHER_LINE] += 1
            others.append(line.rstrip(b"\r"))
        return others

    def _message(self, line: bytes, start: int, now_us: int) -> None:
        tally = self.tally
        text = line[start:].rstrip(b"\r")
        if len(text) != tally.text_bytes:
            tally.malformed += 1
            return
        head = text[:TEXT_HEADER_BYTES]
        if head.translate(None, _HEX_DIGITS) or text[TEXT_HEADER_BYTES:].strip(b"."):
            tally.malformed += 1
            return
        sender = int(head[0:8], 16)
        seq = int(head[8:16], 16)
        sent_us = int(head[16:32], 16)
        last = self._last.get(sender, -1)
        if seq > last:
            tally.gaps += seq - last - 1
            self._last[sender] = seq
            tally.messages += 1
            tally.hist[bucket_of(now_us - sent_us)] += 1
        elif seq == last:
            tally.duplicates += 1
        else:
            tally.reordered += 1


class IrcClient(Client):
    __slots__ = ("channel", "pinged")
    stream_class = IrcStream

    def __init__(self, spec, tally):
        super().__init__(spec, tally)
        self.channel = b"#" + spec.room.encode() if spec.room is not None else None
        target = self.channel or (spec.peer.encode() if spec.peer is not None else None)
        self.prefix = b"PRIVMSG " + target + b" :" if target is not None else b""
        self.pinged = 0                  # messages sent when the last PING went out


class IrcWorker(Worker):
    """The native worker's loop, connections and phases, with IRC's handshake and lines."""

    client_class = IrcClient
    tally_class = verify_py.Tally

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
        stamp = verify_py.stamp
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
