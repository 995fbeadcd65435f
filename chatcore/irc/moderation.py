"""Room moderation over IRC: MODE on channels (queries, lists, changes), KICK and INVITE,
the @ and + prefixes of NAMES and WHO, mapped onto the hub's moderation
(chatcore/hub/moderation.py). Loaded last by ``dispatch.load_commands``: it takes over MODE
for channel targets (user modes stay with ``users``) and replaces ``dispatch.channel_modes``.
"""
from __future__ import annotations

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..hub.moderation import MAX_MODE_PARAMETERS, ROOM_MODE_LETTERS
from ..modes import format_changes, parse_mode_string, takes_parameter
from . import dispatch
from . import numerics as rpl
from .channels import fit_bytes
from .dispatch import need, register, room_of
from .outlet import LINES, channel_of, source_of
from .text import strip_formatting

# The one list mode (MODE #chan b). Ban exceptions (e) and invite exceptions (I) are not
# modes here (not in CHANMODES, no EXCEPTS/INVEX): asking for them gets 472 like any
# unknown letter, rather than an empty list that would claim they exist.
MAX_KICK_TARGETS = 4                    # TARGMAX=KICK:4


class ModeratedChannels:
    """``dispatch.channel_modes`` with moderation: the real modes and member prefixes."""

    def mode_string(self, conn, room_name: str) -> tuple[str, ...]:
        room = conn.hub.rooms.get(room_name.casefold())
        if room is None:
            return ("+n",)
        modes = room.modes
        member = room.members.get(conn.session.key) is conn.session
        arguments = []
        if modes.key:
            arguments.append(modes.key if member else "*")
        if modes.limit:
            arguments.append(str(modes.limit))
        return ("+" + modes.letters(), *arguments)

    def prefixes(self, conn, room_name: str, member: str) -> str:
        room = conn.hub.rooms.get(room_name.casefold())
        session = room.members.get(member.casefold()) if room is not None else None
        if session is None:
            modes, key = (room.modes, member.casefold()) if room is not None else (None, "")
            if modes is None or key not in room.remote:
                return ""
            return ("@" if key in modes.remote_operators else "") + \
                   ("+" if key in modes.remote_voiced else "")   # a member of another node
        modes = room.modes
        return ("@" if session in modes.operators else "") + \
               ("+" if session in modes.voiced else "")


def _hidden_or_missing(conn, target: str):
    """The room of channel ``target``, or None after a 403 (no such room, or a secret one
    the client is not in)."""
    room = room_of(target)
    found = conn.hub.rooms.get(room.casefold()) if room else None
    if found is None or conn.hub.room_hidden(conn.session, found.name):
        conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
        return None
    return found


# -- MODE ------------------------------------------------------------------------------------

def mode(conn, params: list, user_mode=None) -> None:
    if params and room_of(params[0]) is not None:
        channel_mode(conn, params)
    elif user_mode is not None:
        user_mode(conn, params)


def channel_mode(conn, params: list) -> None:
    found = _hidden_or_missing(conn, params[0])
    if found is None:
        return
    channel = channel_of(found.name)
    if len(params) == 1:
        conn.reply(rpl.RPL_CHANNELMODEIS, channel,
                   *dispatch.channel_modes.mode_string(conn, found.name))
        conn.reply(rpl.RPL_CREATIONTIME, channel, str(found.modes.created_at_ms // 1000))
        return
    changes = parse_mode_string(params[1:])
    # A list mode without a parameter asks for the list, whatever its sign.
    lists = [c for c in changes if c.mode == "b" and not c.argument]
    changes = [c for c in changes if c not in lists]
    if lists:
        _ban_list(conn, found, channel)
    # Letters that are no mode here (e, I, p, ...) get 472 from anyone, operator or not.
    for letter in dict.fromkeys(c.mode for c in changes if c.mode not in ROOM_MODE_LETTERS):
        conn.reply(rpl.ERR_UNKNOWNMODE, letter, "is unknown mode char to me")
    changes = [c for c in changes if c.mode in ROOM_MODE_LETTERS]
    if not changes:
        return
    # IRC servers take the first MODES changes with a parameter and ignore the rest.
    kept, with_parameter = [], 0
    for change in changes:
        if takes_parameter(change.mode, change.adding):
            with_parameter += 1
            if with_parameter > MAX_MODE_PARAMETERS:
                continue
        kept.append(change)
    def decided(outcome) -> None:       # a cluster node: once the shared state decided
        if isinstance(outcome, ChatError):
            if outcome.code == ErrorCode.NOT_IN_ROOM:
                conn.reply(rpl.ERR_NOTONCHANNEL, channel, "You're not on that channel")
            elif outcome.code == ErrorCode.NOT_OPERATOR:
                conn.reply(rpl.ERR_CHANOPRIVSNEEDED, channel, "You're not channel operator")
            else:
                conn.reply(rpl.ERR_UNKNOWNERROR, "MODE", outcome.message)
            return
        for change, exc in outcome:
            _mode_refused(conn, channel, change, exc)

    _ask(conn, lambda done: conn.hub.set_room_modes(conn.session, found.name, kept,
                                                    partial=True, done=done), decided)


def _ask(conn, request, on_outcome) -> None:
    """``conn.ask_hub``, with a refusal raised at once handed to ``on_outcome`` too."""
    try:
        conn.ask_hub(request, on_outcome)
    except ChatError as exc:
        on_outcome(exc)


def _mode_refused(conn, channel: str, change: ev.ModeChange, exc: ChatError) -> None:
    code, letter, argument = exc.code, change.mode, change.argument
    if code == ErrorCode.NO_SUCH_USER:
        conn.reply(rpl.ERR_NOSUCHNICK, argument, "No such nick/channel")
    elif code == ErrorCode.USER_NOT_IN_ROOM:
        conn.reply(rpl.ERR_USERNOTINCHANNEL, argument, channel, "They aren't on that channel")
    elif code == ErrorCode.REMOTE_MEMBER:
        conn.reply(rpl.ERR_UNKNOWNERROR, "MODE", exc.message)
    elif letter not in ROOM_MODE_LETTERS:
        conn.reply(rpl.ERR_UNKNOWNMODE, letter, "is unknown mode char to me")
    elif letter == "b" and "limit" in exc.message:
        conn.reply(rpl.ERR_BANLISTFULL, channel, letter, "Channel ban list is full")
    elif letter == "k" and argument:
        conn.reply(rpl.ERR_INVALIDKEY, channel, "Key is not well-formed")
    else:
        conn.reply(rpl.ERR_INVALIDMODEPARAM, channel, letter, argument or "*", exc.message)


def _ban_list(conn, room, channel: str) -> None:
    for ban in room.modes.bans:
        conn.reply(rpl.RPL_BANLIST, channel, ban.mask, source_of(ban.set_by),
                   str(ban.set_at_ms // 1000))
    conn.reply(rpl.RPL_ENDOFBANLIST, channel, "End of channel ban list")


# -- KICK and INVITE -------------------------------------------------------------------------

def kick(conn, params: list) -> None:
    if not need(conn, "KICK", params, 2):
        return
    found = _hidden_or_missing(conn, params[0])
    if found is None:
        return
    channel = channel_of(found.name)
    reason = fit_bytes(strip_formatting(params[2]), conn.hub.limits.max_quit_bytes) \
        if len(params) > 2 else ""
    nicks = params[1].split(",")[:MAX_KICK_TARGETS]

    def kick_next(index: int) -> None:     # one at a time: a cluster answers each later
        if index >= len(nicks):
            return
        nick = nicks[index]

        def decided(outcome) -> None:
            if isinstance(outcome, ChatError) and not _refused(conn, "KICK", channel, nick,
                                                               outcome):
                return
            kick_next(index + 1)

        _ask(conn, lambda done: conn.hub.kick(conn.session, found.name, nick, reason, done),
             decided)

    kick_next(0)


def invite(conn, params: list) -> None:
    if not need(conn, "INVITE", params, 2):
        return
    nick, target = params[0], params[1]
    found = _hidden_or_missing(conn, target)
    if found is None:
        return
    channel = channel_of(found.name)
    def decided(outcome) -> None:
        if isinstance(outcome, ChatError):
            _refused(conn, "INVITE", channel, nick, outcome)
            return
        invitee = conn.hub.sessions.get(nick.casefold())
        conn.reply(rpl.RPL_INVITING, invitee.name if invitee else nick, channel)

    _ask(conn, lambda done: conn.hub.invite(conn.session, found.name, nick, done), decided)


def _refused(conn, command: str, channel: str, nick: str, exc: ChatError) -> bool:
    """The numeric of a refused KICK or INVITE; False when no other target could fare
    better (the client is not on the channel, or not its operator)."""
    code = exc.code
    if code == ErrorCode.NOT_IN_ROOM:
        conn.reply(rpl.ERR_NOTONCHANNEL, channel, "You're not on that channel")
        return False
    if code == ErrorCode.NOT_OPERATOR:
        conn.reply(rpl.ERR_CHANOPRIVSNEEDED, channel, "You're not channel operator")
        return False
    if code == ErrorCode.NO_SUCH_USER:
        conn.reply(rpl.ERR_NOSUCHNICK, nick, "No such nick/channel")
    elif code == ErrorCode.USER_NOT_IN_ROOM:
        conn.reply(rpl.ERR_USERNOTINCHANNEL, nick, channel, "They aren't on that channel")
    elif code == ErrorCode.ALREADY_IN_ROOM:
        conn.reply(rpl.ERR_USERONCHANNEL, nick, channel, "is already on channel")
    else:
        conn.reply(rpl.ERR_UNKNOWNERROR, command, exc.message)
    return True


# -- hub events as lines (the outlet's LINES) ------------------------------------------------

def _mode_line(outlet, event: ev.RoomModeChanged, owner=None) -> bytes:
    source = source_of(event.name) if event.name else outlet.front.server_name
    return outlet.line("MODE", channel_of(event.room), *format_changes(event.changes),
                       source=source)


def _kick_line(outlet, event: ev.Kicked, owner=None) -> bytes:
    return outlet.line("KICK", channel_of(event.room), event.name, event.reason or event.by,
                       source=source_of(event.by))


def _invite_line(outlet, event: ev.Invited, owner=None) -> bytes:
    if owner is None:
        return b""
    return outlet.line("INVITE", owner.nick, channel_of(event.room),
                       source=source_of(event.name))


def _nothing(outlet, event, owner=None) -> bytes:
    return b""          # RoomModes: IRC clients ask with MODE #chan, and NAMES has prefixes


LINES.update({ev.RoomModeChanged: _mode_line, ev.Kicked: _kick_line,
              ev.Invited: _invite_line, ev.RoomModes: _nothing})
dispatch.channel_modes = ModeratedChannels()
_user_mode = dispatch.HANDLERS.get("MODE")
register("MODE", lambda conn, params: mode(conn, params, _user_mode))
register("KICK", kick)
register("INVITE", invite)
