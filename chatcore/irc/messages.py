"""PRIVMSG, NOTICE and TAGMSG: room and direct messages, CTCP ACTION as the hub's actions,
and the other CTCP requests.

CTCP (``\\x01VERSION\\x01``) is client-to-client: the hub carries chat text only, so a CTCP
other than ACTION goes from IRC user to IRC user of this node directly, as IRC servers
relay it; a native user (or a user of another node) cannot answer, so this front end
answers VERSION, PING, TIME and CLIENTINFO for them (saying so) and drops the rest.
"""
from __future__ import annotations

import time

from .. import __version__
from ..errors import ChatError, ErrorCode
from . import numerics as rpl
from .dispatch import CHANNEL_PREFIX, register, room_of
from .outlet import source_of, text_lines
from .text import ctcp, parse_ctcp, strip_formatting
from .users import lookup

# Per TARGMAX in ISUPPORT: more targets than this get 407.
MAX_MESSAGE_TARGETS = 4
ANSWERED_CTCP = ("ACTION", "CLIENTINFO", "PING", "TIME", "VERSION")


def privmsg(conn, params: list, notice: bool = False) -> None:
    command = "NOTICE" if notice else "PRIVMSG"
    if not params or not params[0]:
        if not notice:
            conn.reply(rpl.ERR_NORECIPIENT, f"No recipient given ({command})")
        return
    if len(params) < 2 or not params[1]:
        if not notice:
            conn.reply(rpl.ERR_NOTEXTTOSEND, "No text to send")
        return
    targets = params[0].split(",")
    if len(targets) > MAX_MESSAGE_TARGETS:
        if not notice:
            conn.reply(rpl.ERR_TOOMANYTARGETS, params[0],
                       f"Too many recipients (at most {MAX_MESSAGE_TARGETS})")
        return
    _send_to(conn, command, targets, params[1], parse_ctcp(params[1]), notice)


def plain_privmsg(conn, target: str, text: str) -> None:
    """A PRIVMSG to one target of plain text (``codec.read_privmsg``'s): what ``privmsg``
    does with it, without the steps that change nothing for such a line (the target list,
    CTCP, formatting)."""
    if target[:1] == CHANNEL_PREFIX:
        try:
            conn.hub.send_room(conn.session, target[1:], text)
        except ChatError as exc:
            _message_refused(conn, target, exc)
        return
    hub = conn.hub
    peer = hub.sessions.get(target.casefold())
    if peer is not None and peer is not conn.session:
        # A user of this node: the hub answers at once, no need to hold the next lines.
        try:
            hub.send_direct(conn.session, target, text)
        except ChatError as exc:
            _message_refused(conn, target, exc)
            return
        if conn.echo_message:
            conn.send(conn.relayed_text("PRIVMSG", conn.nick, target, text))
        return

    def sent(outcome=None) -> None:
        if isinstance(outcome, ChatError):
            _message_refused(conn, target, outcome)

    try:
        _send_one(conn, "PRIVMSG", target, text, sent)
    except ChatError as exc:
        sent(exc)


def _send_to(conn, command: str, targets: list, raw: str, request, notice: bool) -> None:
    """Send to each target in turn: a user of another cluster node takes a round trip,
    and the next target waits for its answer (so replies keep the targets' order)."""
    if not targets or conn.session is None:
        return
    target, rest = targets[0], targets[1:]

    def refused(exc: ChatError) -> None:
        if not notice:
            _message_refused(conn, target, exc)

    def sent(outcome=None) -> None:
        if isinstance(outcome, ChatError):
            refused(outcome)
        _send_to(conn, command, rest, raw, request, notice)

    try:
        if request is None:
            _send_one(conn, command, target, strip_formatting(raw), sent)
        elif request[0] == "ACTION":
            if notice:
                sent()
            else:
                _send_one(conn, command, target, strip_formatting(request[1]), sent,
                          action=True)
        else:
            _ctcp(conn, command, target, request, raw, sent)
    except ChatError as exc:
        sent(exc)


def _send_one(conn, command: str, target: str, text: str, then,
              action: bool = False) -> None:
    """Send one message; ``then(outcome)`` once it is sent (now, or when the cluster
    answers: a ChatError if refused then)."""
    hub = conn.hub
    session = conn.session
    room = room_of(target)
    if room is not None:
        # The outlet echoes it to the sender with everyone else's copy under echo-message.
        if action:
            hub.send_room_action(session, room, text)
        else:
            hub.send_room(session, room, text)
        then()
        return
    if target.casefold() == conn.nick.casefold():
        # Messages to yourself come back, as on every IRC server.
        conn.send(conn.relayed_text(command, conn.nick, conn.nick, text, action))
        then()
        return
    send = hub.send_direct_action if action else hub.send_direct

    def answered(outcome) -> None:
        if conn.session is not session:
            return                      # gone while a node of the cluster answered
        if not isinstance(outcome, ChatError) and conn.echo_message:
            conn.send(conn.relayed_text(command, conn.nick, target, text, action))
        then(outcome)

    conn.ask_hub(lambda done: send(session, target, text, done), answered)


def _ctcp(conn, command: str, target: str, request: tuple, raw: str, then) -> None:
    """A CTCP other than ACTION: relayed to this node's IRC users, answered for others;
    ``then(outcome)`` once done."""
    irc = conn.irc
    room = room_of(target)
    if room is not None:
        found = conn.hub.rooms.get(room.casefold())
        if found is None or conn.session.key not in found.members:
            raise ChatError(ErrorCode.NOT_IN_ROOM, f"not in {room}")
        for member in found.members.values():
            peer = irc.users.get(member.key)
            if peer is not None and peer is not conn:
                peer.send(peer.relayed_text(command, conn.nick, target, raw))
        then()
        return
    peer = irc.users.get(target.casefold())
    if peer is not None:
        peer.send(peer.relayed_text(command, conn.nick, peer.nick, raw))
        then()
        return

    def answer(details) -> None:
        if details is None:
            then(ChatError(ErrorCode.NO_SUCH_USER, f"no user named {target}"))
            return
        text = _answer_for(details.name, request) if command == "PRIVMSG" else ""
        if text:
            conn.send(conn.relayed_text("NOTICE", details.name, conn.nick, text))
        then()

    lookup(conn, target, answer)


def _answer_for(name: str, request: tuple) -> str:
    """The CTCP reply this front end gives for a user whose client cannot."""
    what, args = request
    if what == "VERSION":
        return ctcp("VERSION", f"chatcore-{__version__} (answered by the server: {name} "
                               f"uses the native protocol or another node)")
    if what == "PING":
        return ctcp("PING", args)
    if what == "TIME":
        return ctcp("TIME", time.strftime("%a %b %d %H:%M:%S %Y UTC", time.gmtime()))
    if what == "CLIENTINFO":
        return ctcp("CLIENTINFO", " ".join(ANSWERED_CTCP))
    return ""


def _message_refused(conn, target: str, exc: ChatError) -> None:
    room = room_of(target)
    if exc.code == ErrorCode.NO_SUCH_USER:
        conn.reply(rpl.ERR_NOSUCHNICK, target, "No such nick/channel")
    elif exc.code == ErrorCode.NOT_IN_ROOM:
        if room is not None and room.casefold() in conn.hub.rooms:
            conn.reply(rpl.ERR_CANNOTSENDTOCHAN, target, "Cannot send to channel (not joined)")
        else:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
    elif room is not None:
        conn.reply(rpl.ERR_CANNOTSENDTOCHAN, target, f"Cannot send to channel: {exc.message}")
    else:
        conn.reply(rpl.ERR_NOSUCHNICK, target, f"Cannot send: {exc.message}")


def notice(conn, params: list) -> None:
    privmsg(conn, params, notice=True)


def tagmsg(conn, params: list) -> None:
    """IRCv3 TAGMSG: only client-only tags to carry, and none is relayed
    (CLIENTTAGDENY=*), so it goes nowhere once its target is checked."""
    if not params or not params[0]:
        conn.reply(rpl.ERR_NORECIPIENT, "No recipient given (TAGMSG)")


register("PRIVMSG", privmsg)
register("NOTICE", notice)
register("TAGMSG", tagmsg)
