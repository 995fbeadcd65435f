"""What IRC users of different cluster nodes say to each other that the hub's chat does not
carry: CTCP requests and replies (``ctcp``), and realname changes for ``setname`` clients
(``setname``). Each is a message on the recipient's user channel
(``{p}:user:{casefolded name}``, docs/cluster.md "Messages"), handed by the hub to this
module's hooks (``Hub.user_message_hooks``) on the recipient's node.

A channel CTCP or a SETNAME reaches at most ``irc_max_remote_recipients`` users of other
nodes (one PUBLISH each). Native users take no CTCP: a request for one is refused by the
sender's node (messages.py), and a channel CTCP reaching one is dropped by its node.
"""
from __future__ import annotations

from ..errors import ChatError
from .dispatch import room_of
from .outlet import source_of
from .text import MAX_REALNAME_CHARS, parse_ctcp, strip_formatting

CTCP_KIND = "ctcp"
SETNAME_KIND = "setname"
MAX_CTCP_BYTES = 510            # what one IRC line can carry; a longer text is not CTCP


def install(front) -> None:
    """Register the hooks of ``front`` (an IrcFrontEnd) on its hub."""
    hooks = front.server.hub.user_message_hooks
    hooks[CTCP_KIND] = lambda session, message: ctcp_arrived(front, session, message)
    hooks[SETNAME_KIND] = lambda session, message: setname_arrived(front, session, message)


def _recipient(front, session, message: dict):
    """(IRC connection of ``session``, sender name), or None when either does not hold:
    a native recipient, or a sender that is no user name (what a node sends is checked
    like what a client sends)."""
    conn = front.users.get(session.key)
    sender = message.get("from")
    if conn is None or conn.session is not session or not isinstance(sender, str):
        return None
    try:
        front.server.hub.check_name(sender)
    except ChatError:
        return None
    return conn, sender


def ctcp_arrived(front, session, message: dict) -> None:
    """A CTCP from an IRC user of another node: relayed as that node's client sent it, to
    the recipient's nick or to a channel the recipient is in."""
    found = _recipient(front, session, message)
    text, target = message.get("text"), message.get("target")
    if found is None or not isinstance(text, str) or not isinstance(target, str):
        return
    conn, sender = found
    request = parse_ctcp(text)
    if (request is None or request[0] == "ACTION" or len(text.encode()) > MAX_CTCP_BYTES
            or "\r" in text or "\n" in text or "\0" in text):
        return          # actions are the hub's; the rest is no CTCP an IRC line can hold
    room = room_of(target)
    if room is not None:
        if room.casefold() not in session.rooms:
            return
    else:
        target = conn.nick
    command = "NOTICE" if message.get("command") == "NOTICE" else "PRIVMSG"
    conn.send(conn.relayed_text(command, sender, target, text))


def setname_arrived(front, session, message: dict) -> None:
    """A user of another node sharing a channel with ``session`` set its realname."""
    found = _recipient(front, session, message)
    realname = message.get("realname")
    if found is None or not isinstance(realname, str):
        return
    conn, sender = found
    realname = strip_formatting(realname)[:MAX_REALNAME_CHARS]
    if "setname" in conn.caps and realname:
        conn.send(conn.outlet.line("SETNAME", realname, source=source_of(sender)))


def remote_members(conn, rooms) -> list:
    """The keys of the users of other nodes in ``rooms``, each once, at most
    ``irc_max_remote_recipients``; and how many more there were."""
    limit = conn.config.irc_max_remote_recipients
    keys: dict = {}
    for room in rooms:
        keys.update(dict.fromkeys(room.remote))
    found = list(keys)
    return found[:limit], max(0, len(found) - limit)


def send_setname(conn) -> None:
    """Tell the users of other nodes sharing a channel with ``conn`` its new realname."""
    backplane = conn.hub.backplane
    keys, _ = remote_members(conn, conn.session.rooms.values())
    for key in keys:
        backplane.send_to_user(key, {"kind": SETNAME_KIND, "from": conn.nick,
                                     "realname": conn.realname})


def send_ctcp(conn, key: str, command: str, target: str, text: str, done=None) -> None:
    """A CTCP for the user ``key`` of another node (``target``: a channel, or its nick);
    ``done(True/False/ChatError)`` as ``send_to_user`` answers."""
    conn.hub.backplane.send_to_user(key, {"kind": CTCP_KIND, "from": conn.nick,
                                          "command": command, "target": target,
                                          "text": text}, done)
