"""What an IRC client's commands do: each one mapped onto the hub, answered with the
numerics modern.ircdocs.horse gives (RFC 1459/2812 where it is silent)."""
from __future__ import annotations

import fnmatch
import time

from .. import __version__
from ..errors import ChatError, ErrorCode
from ..events import Reason
from . import numerics as rpl
from .message import MAX_LINE_BYTES, Message, encode
from .outlet import USER_HOST, channel_of, source_of, text_lines

# Per TARGMAX in ISUPPORT: more targets than this get 407.
MAX_MESSAGE_TARGETS = 4
MAX_USERHOST_NICKS = 5
# The room of an IRC channel: '#' and a chatcore room name.
CHANNEL_PREFIX = "#"


def dispatch(conn, message: Message) -> None:
    command = message.command
    if not conn.registered:
        handler = _BEFORE_REGISTRATION.get(command)
        if handler is None:
            if command in _HANDLERS:
                conn.reply(rpl.ERR_NOTREGISTERED, "You have not registered")
            else:
                conn.reply(rpl.ERR_UNKNOWNCOMMAND, command, "Unknown command")
            return
        handler(conn, message.params)
        return
    handler = _HANDLERS.get(command)
    if handler is None:
        conn.reply(rpl.ERR_UNKNOWNCOMMAND, command, "Unknown command")
        return
    handler(conn, message.params)


def _need(conn, command: str, params: list, count: int) -> bool:
    if len(params) < count or (count and not params[count - 1] and command != "USER"):
        conn.reply(rpl.ERR_NEEDMOREPARAMS, command, "Not enough parameters")
        return False
    return True


def _room_of(target: str) -> str | None:
    """The room name of a channel target, or None for a nick."""
    return target[1:] if target.startswith(CHANNEL_PREFIX) else None


# -- registration ------------------------------------------------------------------------

def cap(conn, params: list) -> None:
    if not _need(conn, "CAP", params, 1):
        return
    sub = params[0].upper()
    if sub == "LS":
        if not conn.registered:
            conn.cap_negotiating = True
        if len(params) > 1 and params[1].isdigit():
            conn.cap_version = max(conn.cap_version, int(params[1]))
        if conn.cap_version >= 302:
            conn.caps.add("cap-notify")        # implied by CAP LS 302
        conn.send_line("CAP", _cap_target(conn), "LS", " ".join(sorted(_offered())))
    elif sub == "LIST":
        conn.send_line("CAP", _cap_target(conn), "LIST", " ".join(sorted(conn.caps)))
    elif sub == "REQ":
        if not conn.registered:
            conn.cap_negotiating = True
        wanted = params[1] if len(params) > 1 else ""
        changes = wanted.split()
        names = [c[1:] if c.startswith("-") else c for c in changes]
        if not changes or any(name not in _offered() for name in names) or \
                "-cap-notify" in changes and conn.cap_version >= 302:
            conn.send_line("CAP", _cap_target(conn), "NAK", wanted)
            return
        for change in changes:
            if change.startswith("-"):
                conn.caps.discard(change[1:])
            else:
                conn.caps.add(change)
        conn.echo_message = "echo-message" in conn.caps
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


def _offered() -> tuple:
    from .connection import SUPPORTED_CAPS
    return SUPPORTED_CAPS


def nick(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = params[0]
    if conn.registered:
        rename(conn, wanted)
        return
    try:
        conn.hub.check_name(wanted)
    except ChatError as exc:
        conn.reply(rpl.ERR_ERRONEUSNICKNAME, wanted, f"Erroneous nickname: {exc.message}")
        return
    if wanted.casefold() in conn.hub.sessions:
        conn.reply(rpl.ERR_NICKNAMEINUSE, wanted, "Nickname is already in use")
        return
    conn.nick = wanted
    conn.try_register()


def rename(conn, wanted: str) -> None:
    conn.reply(rpl.ERR_UNKNOWNERROR, "NICK", "Nick changes are not supported yet")


def user(conn, params: list) -> None:
    if conn.registered or conn.username:
        conn.reply(rpl.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    if len(params) < 4 or not params[0]:
        conn.reply(rpl.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    conn.username, conn.realname = params[0], params[3]
    conn.try_register()


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
    reason = params[0] if params else ""
    conn.send(encode("ERROR", f"Closing Link: {conn.address[0]} (Quit: {reason})"))
    conn.close(Reason.QUIT, reason or "quit")


# -- channels ----------------------------------------------------------------------------

def join(conn, params: list) -> None:
    if not _need(conn, "JOIN", params, 1):
        return
    if params[0] == "0":
        for room in list(conn.session.rooms.values()):
            conn.hub.leave(conn.session, room.name)
        return
    for target in params[0].split(","):
        room = _room_of(target)
        if room is None:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target,
                       "No such channel (channel names start with #)")
            continue
        try:
            joined = conn.hub.join(conn.session, room)
        except ChatError as exc:
            if exc.code == ErrorCode.TOO_MANY_ROOMS:
                conn.reply(rpl.ERR_TOOMANYCHANNELS, target, "You have joined too many channels")
            else:
                conn.reply(rpl.ERR_NOSUCHCHANNEL, target, f"Illegal channel name: {exc.message}")
            continue
        if joined:
            names_of(conn, target)


def part(conn, params: list) -> None:
    if not _need(conn, "PART", params, 1):
        return
    for target in params[0].split(","):
        room = _room_of(target)
        if room is None or room.casefold() not in conn.hub.rooms:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
            continue
        try:
            conn.hub.leave(conn.session, room)
        except ChatError:
            conn.reply(rpl.ERR_NOTONCHANNEL, target, "You're not on that channel")


def names(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    for target in params[0].split(","):
        names_of(conn, target)


def names_of(conn, target: str) -> None:
    """353 lines (as many as the names need) and 366 for one channel."""
    room = _room_of(target)
    found = conn.hub.rooms.get(room.casefold()) if room else None
    if found is not None:
        channel = channel_of(found.name)
        long_form = "userhost-in-names" in conn.caps
        entries = [source_of(member.name) if long_form else member.name
                   for member in found.members.values()]
        head = len(f":{conn.irc.server_name} 353 {conn.nick} = {channel} :") + 2
        line: list[str] = []
        size = head
        for entry in entries:
            if line and size + len(entry) + 1 > MAX_LINE_BYTES:
                conn.reply(rpl.RPL_NAMREPLY, "=", channel, " ".join(line))
                line, size = [], head
            line.append(entry)
            size += len(entry) + 1
        if line:
            conn.reply(rpl.RPL_NAMREPLY, "=", channel, " ".join(line))
        target = channel
    conn.reply(rpl.RPL_ENDOFNAMES, target, "End of /NAMES list")


def list_(conn, params: list) -> None:
    wanted = None
    if params and params[0]:
        wanted = {t[1:].casefold() for t in params[0].split(",") if t.startswith("#")}
    conn.reply(rpl.RPL_LISTSTART, "Channel", "Users  Name")
    if wanted is not None:
        for key in sorted(wanted):
            room = conn.hub.rooms.get(key)
            if room is not None:
                conn.reply(rpl.RPL_LIST, channel_of(room.name), str(len(room.members)), "")
    else:
        after = ""
        while True:
            page = conn.hub.rooms_page(after)
            for info in page.entries:
                conn.reply(rpl.RPL_LIST, channel_of(info.name), str(info.members), "")
            after = page.next_after
            if not after:
                break
    conn.reply(rpl.RPL_LISTEND, "End of /LIST")


def mode(conn, params: list) -> None:
    if not _need(conn, "MODE", params, 1):
        return
    target = params[0]
    room = _room_of(target)
    if room is not None:
        found = conn.hub.rooms.get(room.casefold())
        if found is None:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
        elif len(params) == 1:
            conn.reply(rpl.RPL_CHANNELMODEIS, channel_of(found.name), "+n")
        else:
            changes = params[1].lstrip("+-")
            unknown = [c for c in changes if c != "n"]
            if unknown:
                conn.reply(rpl.ERR_UNKNOWNMODE, unknown[0], "is unknown mode char to me")
            else:
                conn.reply(rpl.ERR_CHANOPRIVSNEEDED, channel_of(found.name),
                           "You're not channel operator (nobody is: modes are fixed)")
        return
    if target.casefold() != conn.nick.casefold():
        if target.casefold() in conn.hub.sessions:
            conn.reply(rpl.ERR_USERSDONTMATCH, "Cant change mode for other users")
        else:
            conn.reply(rpl.ERR_NOSUCHNICK, target, "No such nick/channel")
        return
    if len(params) == 1:
        conn.reply(rpl.RPL_UMODEIS, "+i" if conn.invisible else "+")
        return
    adding, changed, unknown = True, "", False
    for char in params[1]:
        if char in "+-":
            adding = char == "+"
        elif char == "i":
            if conn.invisible != adding:
                conn.invisible = adding
                changed += ("+" if adding else "-") + "i"
        else:
            unknown = True
    if unknown:
        conn.reply(rpl.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if changed:
        conn.send_line("MODE", conn.nick, changed, source=source_of(conn.nick))


# -- messages ----------------------------------------------------------------------------

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
    text = params[1]
    for target in targets:
        try:
            _send_one(conn, target, text)
        except ChatError as exc:
            if not notice:
                _message_refused(conn, target, exc)


def _send_one(conn, target: str, text: str) -> None:
    room = _room_of(target)
    if room is not None:
        # The outlet echoes it to the sender with everyone else's copy under echo-message.
        conn.hub.send_room(conn.session, room, text)
        return
    if target.casefold() == conn.nick.casefold():
        # Messages to yourself come back, as on every IRC server.
        conn.send(text_lines("PRIVMSG", source_of(conn.nick), conn.nick, text))
        return
    conn.hub.send_direct(conn.session, target, text)
    if conn.echo_message:
        conn.send(text_lines("PRIVMSG", source_of(conn.nick), target, text))


def _message_refused(conn, target: str, exc: ChatError) -> None:
    room = _room_of(target)
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


# -- users -------------------------------------------------------------------------------

def _user_flags(conn, name: str) -> str:
    return "H"


def who(conn, params: list) -> None:
    mask = params[0] if params and params[0] else "*"
    room = _room_of(mask)
    server = conn.irc.server_name
    if room is not None:
        found = conn.hub.rooms.get(room.casefold())
        members = list(found.members.values()) if found else []
        channel = channel_of(found.name) if found else mask
        for member in members:
            conn.reply(rpl.RPL_WHOREPLY, channel, member.name, USER_HOST, server, member.name,
                       _user_flags(conn, member.name), f"0 {_realname(conn, member.name)}")
    else:
        pattern = mask.casefold()
        for session in list(conn.hub.sessions.values()):
            if not fnmatch.fnmatchcase(session.key, pattern):
                continue
            if _invisible(conn, session) and session.key != pattern:
                continue
            conn.reply(rpl.RPL_WHOREPLY, "*", session.name, USER_HOST, server, session.name,
                       _user_flags(conn, session.name), f"0 {_realname(conn, session.name)}")
    conn.reply(rpl.RPL_ENDOFWHO, mask, "End of /WHO list")


def _invisible(conn, session) -> bool:
    """IRC's +i: hidden from masks unless a channel is shared (native users count as +i)."""
    irc_user = conn.outlet.users.get(session.name)
    if session is conn.session or (irc_user is not None and not irc_user.invisible):
        return False
    return not any(key in conn.session.rooms for key in session.rooms)


def _realname(conn, name: str) -> str:
    irc_user = conn.outlet.users.get(name)
    return irc_user.realname if irc_user is not None and irc_user.realname else name


def whois(conn, params: list) -> None:
    if not params or not params[-1]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = params[-1].split(",")[0]
    session = conn.hub.sessions.get(wanted.casefold())
    if session is None:
        conn.reply(rpl.ERR_NOSUCHNICK, wanted, "No such nick/channel")
        conn.reply(rpl.RPL_ENDOFWHOIS, wanted, "End of /WHOIS list")
        return
    name = session.name
    conn.reply(rpl.RPL_WHOISUSER, name, name, USER_HOST, "*", _realname(conn, name))
    conn.reply(rpl.RPL_WHOISSERVER, name, conn.irc.server_name, conn.hub.node.name)
    common = [channel_of(room.name) for key, room in session.rooms.items()
              if key in conn.session.rooms or session is conn.session]
    if common:
        conn.reply(rpl.RPL_WHOISCHANNELS, name, " ".join(common))
    rtt = session.rtt_seconds
    conn.reply(rpl.RPL_WHOISSPECIAL, name,
               f"round-trip time {rtt * 1000:.2f} ms" if rtt is not None
               else "round-trip time not measured yet")
    idle = int(time.monotonic() - session.last_active)
    signon = int(time.time() - (time.monotonic() - session.connected_at))
    conn.reply(rpl.RPL_WHOISIDLE, name, str(idle), str(signon), "seconds idle, signon time")
    conn.reply(rpl.RPL_ENDOFWHOIS, name, "End of /WHOIS list")


def whowas(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    # The server keeps no history of who was here.
    conn.reply(rpl.ERR_WASNOSUCHNICK, params[0], "There was no such nickname")
    conn.reply(rpl.RPL_ENDOFWHOWAS, params[0], "End of WHOWAS")


def ison(conn, params: list) -> None:
    present = []
    for word in " ".join(params).split():
        session = conn.hub.sessions.get(word.casefold())
        if session is not None:
            present.append(session.name)
    conn.reply(rpl.RPL_ISON, " ".join(present))


def userhost(conn, params: list) -> None:
    if not _need(conn, "USERHOST", params, 1):
        return
    replies = []
    for word in params[:MAX_USERHOST_NICKS]:
        session = conn.hub.sessions.get(word.casefold())
        if session is not None:
            replies.append(f"{session.name}=+{session.name}@{USER_HOST}")
    conn.reply(rpl.RPL_USERHOST, " ".join(replies))


# -- server queries ----------------------------------------------------------------------

def lusers(conn, params: list | None = None) -> None:
    hub = conn.hub
    users = len(hub.sessions)
    invisible = sum(1 for c in conn.outlet.users.values() if c.invisible)
    conn.reply(rpl.RPL_LUSERCLIENT, f"There are {users - invisible} users and {invisible} "
                                    f"invisible on 1 servers")
    conn.reply(rpl.RPL_LUSEROP, "0", "operator(s) online")
    conn.reply(rpl.RPL_LUSERCHANNELS, str(len(hub.rooms)), "channels formed")
    conn.reply(rpl.RPL_LUSERME, f"I have {users} clients and 0 servers")
    conn.reply(rpl.RPL_LOCALUSERS, str(users), str(users),
               f"Current local users {users}, max {users}")
    conn.reply(rpl.RPL_GLOBALUSERS, str(users), str(users),
               f"Current global users {users}, max {users}")


def time_(conn, params: list) -> None:
    now = time.time()
    conn.reply(rpl.RPL_TIME, conn.irc.server_name, str(int(now)), "0",
               time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime(now)))


def version(conn, params: list) -> None:
    conn.reply(rpl.RPL_VERSION, f"chatcore-{__version__}", conn.irc.server_name,
               "chatcore IRC front end")
    conn.send_isupport()


def motd(conn, params: list) -> None:
    conn.reply(rpl.ERR_NOMOTD, "MOTD File is missing")


def links(conn, params: list) -> None:
    name = conn.irc.server_name
    conn.reply(rpl.RPL_LINKS, "*", name, f"0 {conn.hub.node.name}")
    conn.reply(rpl.RPL_ENDOFLINKS, "*", "End of /LINKS list")


def info(conn, params: list) -> None:
    for line in (f"chatcore {__version__}: a chat server with a native protocol and an IRC",
                 "front end on one hub; IRC channels are chatcore rooms.",
                 "https://modern.ircdocs.horse is the protocol it follows."):
        conn.reply(rpl.RPL_INFO, line)
    conn.reply(rpl.RPL_ENDOFINFO, "End of INFO list")


def admin(conn, params: list) -> None:
    conn.reply(rpl.RPL_ADMINME, conn.irc.server_name, "Administrative info")
    conn.reply(rpl.RPL_ADMINLOC1, "chatcore server")
    conn.reply(rpl.RPL_ADMINLOC2, conn.hub.node.name)
    conn.reply(rpl.RPL_ADMINEMAIL, "no administrator address is configured")


def help_(conn, params: list) -> None:
    subject = params[0].upper() if params and params[0] else ""
    if subject and subject not in _HANDLERS:
        conn.reply(rpl.ERR_HELPNOTFOUND, subject, "No help available on this topic")
        return
    topic = subject or "*"
    conn.reply(rpl.RPL_HELPSTART, topic, f"chatcore IRC front end: {subject or 'commands'}")
    if subject:
        conn.reply(rpl.RPL_HELPTXT, topic, f"{subject} works as modern.ircdocs.horse says; "
                                          f"see docs/irc.md for what differs")
    else:
        commands = sorted(_HANDLERS)
        for i in range(0, len(commands), 10):
            conn.reply(rpl.RPL_HELPTXT, topic, " ".join(commands[i:i + 10]))
    conn.reply(rpl.RPL_ENDOFHELP, topic, "End of /HELP")


_BEFORE_REGISTRATION = {
    "CAP": cap, "NICK": nick, "USER": user, "PASS": password, "PING": ping, "PONG": pong,
    "QUIT": quit_,
}
_HANDLERS = {
    **_BEFORE_REGISTRATION,
    "JOIN": join, "PART": part, "NAMES": names, "LIST": list_, "MODE": mode,
    "PRIVMSG": privmsg, "NOTICE": notice, "WHO": who, "WHOIS": whois, "WHOWAS": whowas,
    "ISON": ison, "USERHOST": userhost, "LUSERS": lusers, "TIME": time_, "VERSION": version,
    "MOTD": motd, "LINKS": links, "INFO": info, "ADMIN": admin, "HELP": help_,
}
