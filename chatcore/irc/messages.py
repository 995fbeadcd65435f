"""PRIVMSG, NOTICE and TAGMSG: room and direct messages, CTCP ACTION as the hub's actions,
and the other CTCP requests.

CTCP (``\\x01VERSION\\x01``) is client-to-client: the hub carries chat text only, so a CTCP
other than ACTION goes from IRC user to IRC user directly, as IRC servers relay it (to a
user of another node on its user channel: remote.py); a request for a native user is
refused with a server NOTICE that says so, and a reply (a NOTICE) for one is dropped.
"""
from __future__ import annotations

from ..errors import ChatError, ErrorCode
from ..events import UserDetails
from . import numerics as rpl
from . import remote
from .dispatch import CHANNEL_PREFIX, register, room_of
from .outlet import channel_of
from .text import parse_ctcp, strip_formatting
from .users import lookup

# Per TARGMAX in ISUPPORT: more targets than this get 407.
MAX_MESSAGE_TARGETS = 4


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
        else:
            conn.stats.room_messages += 1
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
        conn.stats.direct_messages += 1
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
        conn.stats.room_messages += 1           # as the native SendRoom's Ack counts it
        then()
        return
    if target.casefold() == conn.nick.casefold():
        # Messages to yourself come back, as on every IRC server.
        conn.send(conn.relayed_text(command, conn.nick, conn.nick, text, action))
        then()
        return
    send = hub.send_direct_action if action else hub.send_direct
    notice = command == "NOTICE"            # never answered, not even with 301
    if notice or target.casefold() in hub.sessions or not hub.backplane.shared_users:
        request = lambda done: send(session, target, text, done,    # noqa: E731
                                    away_reply=not notice)
        details = None
    else:
        request, details = _to_other_node(conn, send, target, text)

    def answered(outcome) -> None:
        if conn.session is not session:
            return                      # gone while a node of the cluster answered
        if not isinstance(outcome, ChatError):
            conn.stats.direct_messages += 1     # as the native SendDirect's Ack counts it
            found = details and details[0]
            if isinstance(found, UserDetails) and found.away and hub.remote_away_due(
                    session, found.name, found.away):
                conn.reply(rpl.RPL_AWAY, found.name, found.away)
            if conn.echo_message:
                conn.send(conn.relayed_text(command, conn.nick, target, text, action))
        then(outcome)

    conn.ask_hub(request, answered)


def _to_other_node(conn, send, target: str, text: str):
    """(request, details): a message to a user who may be on another node, sent together
    with a read of the user's record (one round trip: Redis answers both in order), so
    its away message (301) is part of this command's answer, labeled with it, as on one
    node; the recipient's node then sends none (``away_reply=False``). ``details`` holds
    the record once in."""
    session, hub = conn.session, conn.hub
    details: list = []

    def request(done) -> None:
        sent: list = []

        def record(found) -> None:
            details.append(found)
            if sent:
                done(sent[0])

        def delivered(outcome) -> None:
            sent.append(outcome)
            if details:
                done(outcome)

        send(session, target, text, delivered, away_reply=False)
        try:
            hub.whois(session, target, record)
        except ChatError as exc:
            record(exc)

    return request, details


def _ctcp(conn, command: str, target: str, request: tuple, raw: str, then) -> None:
    """A CTCP other than ACTION, relayed as IRC servers do to IRC users of any node (of
    another node through its user channel: remote.py); a request for a native user is
    refused with a server NOTICE that says so, and a reply (a NOTICE) for one is dropped,
    as NOTICEs are never answered. ``then(outcome)`` once done."""
    irc = conn.irc
    room = room_of(target)
    if room is not None:
        _channel_ctcp(conn, command, target, room, request, raw)
        then()
        return
    peer = irc.users.get(target.casefold())
    if peer is not None:
        peer.send(peer.relayed_text(command, conn.nick, peer.nick, raw))
        then()
        return

    def delivered(outcome) -> None:
        if outcome is False:
            outcome = ChatError(ErrorCode.NO_SUCH_USER, f"no user named {target}")
        then(outcome if isinstance(outcome, ChatError) else None)

    def found(details) -> None:
        if details is None:
            then(ChatError(ErrorCode.NO_SUCH_USER, f"no user named {target}"))
        elif details.server != conn.hub.node.name and takes_ctcp(details):
            conn.ask_hub(lambda done: remote.send_ctcp(
                conn, details.name.casefold(), command, details.name, raw, done), delivered)
        else:
            if command == "PRIVMSG":
                _not_carried(conn, request[0], details.name,
                             f"{details.name} uses the native protocol")
            then()

    lookup(conn, target, found)


def takes_ctcp(details) -> bool:
    """Whether the user of another node ``details`` (its record) is an IRC user: only
    IRC users have a realname (remote.py), and only they answer CTCP."""
    return bool(details.realname)


def _channel_ctcp(conn, command: str, target: str, room: str, request: tuple,
                  raw: str) -> None:
    """To the channel's IRC members of this node, and to its members of other nodes (at
    most ``irc_max_remote_recipients``; their nodes drop it for native users)."""
    found = conn.hub.rooms.get(room.casefold())
    if found is None or conn.session.key not in found.members:
        raise ChatError(ErrorCode.NOT_IN_ROOM, f"not in {room}")
    irc = conn.irc
    natives = 0
    for member in found.members.values():
        peer = irc.users.get(member.key)
        if peer is None:
            natives += 1
        elif peer is not conn:
            peer.send(peer.relayed_text(command, conn.nick, target, raw))
    keys, left_out = remote.remote_members(conn, (found,))
    for key in keys:
        remote.send_ctcp(conn, key, command, channel_of(found.name), raw)
    if command != "PRIVMSG" or not (natives or left_out):
        return
    why = []
    if natives:
        why.append(f"{natives} of its members on this server use the native protocol")
    if left_out:
        why.append(f"{left_out} members on other servers are past the "
                   f"{conn.config.irc_max_remote_recipients} a CTCP is sent to")
    _not_carried(conn, request[0], channel_of(found.name), " and ".join(why))


def _not_carried(conn, what: str, to: str, why: str) -> None:
    """The server's NOTICE that a CTCP request could not reach ``to``: native clients
    take no CTCP."""
    conn.send_line("NOTICE", conn.nick,
                   f"CTCP {what or '?'} not delivered to {to}: {why}, and only IRC users "
                   f"can take CTCP requests")


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
