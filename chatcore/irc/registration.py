"""Registration and the connection's own state: CAP, NICK, USER, PASS, PING/PONG, QUIT,
SETNAME."""
from __future__ import annotations

from ..errors import ChatError, ErrorCode
from ..events import Reason
from . import numerics as rpl
from . import remote
from .caps import SUPPORTED_CAPS, cap_value
from .dispatch import need, register
from .message import encode
from .text import MAX_REALNAME_CHARS, strip_formatting

# Caps that change how relayed lines are encoded for a client: the client is bound to the
# hub through the outlet of its encoding at registration, so they are fixed from then on.
FIXED_AFTER_REGISTRATION = frozenset({"server-time"})


def cap(conn, params: list) -> None:
    if not need(conn, "CAP", params, 1):
        return
    sub = params[0].upper()
    if sub == "LS":
        if not conn.registered:
            conn.cap_negotiating = True
        if len(params) > 1 and params[1].isdigit():
            conn.cap_version = max(conn.cap_version, int(params[1]))
        if conn.cap_version >= 302:
            conn.caps.add("cap-notify")        # implied by CAP LS 302
        offered = " ".join(cap_value(name, conn) for name in sorted(SUPPORTED_CAPS))
        conn.send_line("CAP", _cap_target(conn), "LS", offered)
    elif sub == "LIST":
        conn.send_line("CAP", _cap_target(conn), "LIST", " ".join(sorted(conn.caps)))
    elif sub == "REQ":
        if not conn.registered:
            conn.cap_negotiating = True
        wanted = params[1] if len(params) > 1 else ""
        changes = wanted.split()
        names = [c[1:] if c.startswith("-") else c for c in changes]
        refused = (not changes or any(name not in SUPPORTED_CAPS for name in names)
                   or "-cap-notify" in changes and conn.cap_version >= 302
                   or conn.registered and any(
                       name in FIXED_AFTER_REGISTRATION
                       and (name in conn.caps) == change.startswith("-")
                       for name, change in zip(names, changes)))
        if refused:
            conn.send_line("CAP", _cap_target(conn), "NAK", wanted)
            return
        for change in changes:
            if change.startswith("-"):
                conn.caps.discard(change[1:])
            else:
                conn.caps.add(change)
        conn.caps_changed()
        conn.send_line("CAP", _cap_target(conn), "ACK", wanted)
    elif sub == "END":
        if not conn.registered and conn.cap_negotiating:
            conn.cap_negotiating = False
            conn.try_register()
    else:
        conn.reply(rpl.ERR_INVALIDCAPCMD, params[0], "Invalid CAP command")


def _cap_target(conn) -> str:
    """CAP replies name the client as '*' until it is registered (IRCv3 capability
    negotiation), even once it sent NICK."""
    return conn.nick if conn.registered else "*"


def nick(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = params[0]
    try:
        conn.hub.check_name(wanted)
    except ChatError as exc:
        conn.reply(rpl.ERR_ERRONEUSNICKNAME, wanted, f"Erroneous nickname: {exc.message}")
        return
    if conn.registered:
        if wanted != conn.nick:
            conn.rename(wanted)
        return
    if wanted.casefold() in conn.hub.sessions:
        conn.reply(rpl.ERR_NICKNAMEINUSE, wanted, "Nickname is already in use")
        return
    conn.nick = wanted
    conn.try_register()


def user(conn, params: list) -> None:
    if conn.registered or conn.username:
        conn.reply(rpl.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    if len(params) < 4 or not params[0]:
        conn.reply(rpl.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    conn.username = params[0]
    conn.realname = _realname(params[3])
    conn.try_register()


def _realname(text: str) -> str:
    return strip_formatting(text)[:MAX_REALNAME_CHARS]


def setname(conn, params: list) -> None:
    """IRCv3 setname: the realname only (shown in WHOIS 311 and WHO 352), kept by this
    front end; the chatcore user name is NICK's."""
    if not params or not params[-1]:
        conn.send_line("FAIL", "SETNAME", "INVALID_REALNAME", "Realname is empty")
        return
    text = strip_formatting(params[-1])
    if len(text) > MAX_REALNAME_CHARS:
        conn.send_line("FAIL", "SETNAME", "INVALID_REALNAME",
                       f"Realname is longer than {MAX_REALNAME_CHARS} characters")
        return
    conn.realname = text
    conn.realname_changed()
    conn.tell_setname()
    if conn.hub.backplane.shared_users:
        remote.send_setname(conn)       # the setname clients of other nodes' channels


def password(conn, params: list) -> None:
    # The server has no password: PASS is accepted and ignored before registration.
    if conn.registered:
        conn.reply(rpl.ERR_ALREADYREGISTERED, "You may not reregister")
    elif not params:
        conn.reply(rpl.ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")


def ping(conn, params: list) -> None:
    if not params:
        conn.reply(rpl.ERR_NOORIGIN, "No origin specified")
        return
    conn.send_line("PONG", conn.irc.server_name, params[-1])


def pong(conn, params: list) -> None:
    if params and conn.registered:
        conn.on_pong(params[-1])


def quit_(conn, params: list) -> None:
    reason = conn.goodbye(params[0] if params else "")
    conn.send(encode("ERROR", f"Closing Link: {conn.address[0]} (Quit: {reason})"))
    conn.quit(reason)


register("CAP", cap, before_registration=True)
register("NICK", nick, before_registration=True)
register("USER", user, before_registration=True)
register("PASS", password, before_registration=True)
register("PING", ping, before_registration=True)
register("PONG", pong, before_registration=True)
register("QUIT", quit_, before_registration=True)
register("SETNAME", setname)
