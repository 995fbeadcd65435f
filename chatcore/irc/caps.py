"""IRCv3 capabilities this front end implements in full, and the tag plumbing they share:
tags added to encoded lines, and labeled responses (``labeled-response`` with ``batch``).

What each cap does here (docs/irc.md, "Capabilities"):

- ``message-tags``: tags on lines both ways; client-only tags are not relayed
  (``CLIENTTAGDENY=*`` in ISUPPORT), so a ``TAGMSG`` is accepted and goes nowhere.
- ``server-time``: ``@time=`` on every line relayed from a user (its hub timestamp when it
  has one).
- ``echo-message``, ``multi-prefix``, ``userhost-in-names``, ``cap-notify``.
- ``batch`` + ``labeled-response``: a command sent with ``@label=`` is answered with that
  label: on its one reply line, on a ``BATCH labeled-response`` around several, or an
  ``ACK`` when nothing else is said.
- ``away-notify``: ``AWAY`` lines when a user sharing a channel goes away or comes back,
  and after the JOIN of an away user (the hub's AwayChanged; irc/outlet).
- ``setname``: SETNAME changes the IRC realname (311, 352, 314), echoed to the client and
  to the setname clients sharing a channel, of every node (remote.py for the others).
"""
from __future__ import annotations

import itertools

from .message import escape_tag_value

SUPPORTED_CAPS = frozenset({
    "away-notify", "batch", "cap-notify", "echo-message", "labeled-response", "message-tags",
    "multi-prefix", "server-time", "setname", "userhost-in-names",
})
MAX_LABEL_BYTES = 64                # labeled-response: longer labels are not answered
_batch_ids = itertools.count(1)


def cap_value(name: str, conn) -> str:
    """A cap as CAP LS lists it (no cap here has a value)."""
    return name


def add_tags(line: bytes, tags: bytes) -> bytes:
    """``line`` (one encoded line) with ``tags`` (``k=v;k2``) first among its tags."""
    if line[:1] == b"@":
        return b"@" + tags + b";" + line[1:]
    return b"@" + tags + b" " + line


def labeled(label: str, data: bytes, server_name: str, time_tag: bytes) -> bytes:
    """The response to a labeled command whose output was ``data`` (whole lines)."""
    label_tag = b"label=" + escape_tag_value(label).encode()
    lines = [line + b"\r\n" for line in data.split(b"\r\n") if line]
    if not lines:
        return add_tags(f":{server_name} ACK\r\n".encode(), label_tag)
    if len(lines) == 1:
        return add_tags(lines[0], label_tag)
    ref = f"L{next(_batch_ids)}".encode()
    head = time_tag + f":{server_name} BATCH +".encode() + ref + b" labeled-response\r\n"
    out = [add_tags(head, label_tag)]
    batch_tag = b"batch=" + ref
    out.extend(add_tags(line, batch_tag) for line in lines)
    out.append(time_tag + f":{server_name} BATCH -".encode() + ref + b"\r\n")
    return b"".join(out)
