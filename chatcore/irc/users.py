"""Users: WHO, WHOIS, WHOWAS, ISON, USERHOST, AWAY and MODE (user modes here, channel
modes in ``channels``).

Users are looked up through the hub (``whois``, ``users_page``), never in this node's
session table, so the answers cover whatever the hub knows: users of both front ends, and
of other cluster nodes as far as the hub's lookups reach.
"""
from __future__ import annotations

import fnmatch
import re

from ..errors import ChatError, ErrorCode
from ..events import UNKNOWN_RTT
from . import dispatch
from . import numerics as rpl
from .channels import channel_mode, fit_bytes, members_of
from .dispatch import need, register, room_of
from .outlet import USER_HOST, channel_of, source_of
from .text import strip_formatting

MAX_USERHOST_NICKS = 5
# A WHO mask the hub's list patterns can take: name characters and the wildcards.
_NICK_MASK = re.compile(r"[A-Za-z0-9_.\-*?]+\Z")


def details_of(conn, name: str):
    """The hub's UserDetails for ``name``, or None when no such user is online."""
    try:
        return conn.hub.whois(conn.session, name)
    except ChatError as exc:
        if exc.code in (ErrorCode.NO_SUCH_USER, ErrorCode.NAME_INVALID):
            return None
        raise


def _realname(conn, name: str) -> str:
    irc_user = conn.irc.users.get(name.casefold())
    return irc_user.realname if irc_user is not None and irc_user.realname else name


def _flags(away: str, prefixes: str = "") -> str:
    return ("G" if away else "H") + prefixes


def who(conn, params: list) -> None:
    mask = params[0] if params and params[0] else "*"
    room = room_of(mask)
    server = conn.irc.server_name
    if room is not None:
        found = conn.hub.rooms.get(room.casefold())
        if found is not None and not conn.hub.room_hidden(conn.session, found.name):   # +s
            channel = channel_of(found.name)
            all_prefixes = "multi-prefix" in conn.caps
            for member in members_of(conn, found.name):
                prefixes = dispatch.channel_modes.prefixes(conn, found.name, member.name)
                if prefixes and not all_prefixes:
                    prefixes = prefixes[0]
                conn.reply(rpl.RPL_WHOREPLY, channel, member.name, USER_HOST, server,
                           member.name, _flags(member.away, prefixes),
                           f"0 {_realname(conn, member.name)}")
    else:
        nick_mask = mask.split("!", 1)[0]
        for user in _matching(conn, nick_mask):
            conn.reply(rpl.RPL_WHOREPLY, "*", user.name, USER_HOST, server, user.name,
                       _flags(user.away), f"0 {_realname(conn, user.name)}")
    conn.reply(rpl.RPL_ENDOFWHO, mask, "End of /WHO list")


def _matching(conn, mask: str):
    """Users whose nick matches ``mask``: users who are +i (native users count as +i) only
    if they share a channel with the asker or the mask is their exact nick."""
    if not _NICK_MASK.match(mask):
        return
    exact = not any(c in mask for c in "*?")
    if exact:
        details = details_of(conn, mask)
        if details is not None:
            yield details
        return
    after = ""
    pattern = mask.casefold()
    while True:
        page = conn.hub.users_page("", after, pattern)
        for user, key in zip(page.entries, page.keys):
            if fnmatch.fnmatchcase(key, pattern) and not _hidden(conn, key):
                yield user
        after = page.next_after
        if not after:
            return


def _hidden(conn, key: str) -> bool:
    irc_user = conn.irc.users.get(key)
    if irc_user is conn or (irc_user is not None and not irc_user.invisible):
        return False
    session = conn.hub.sessions.get(key)
    rooms = session.rooms if session is not None else ()
    return not any(room in conn.session.rooms for room in rooms)


def whois(conn, params: list) -> None:
    if not params or not params[-1]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = params[-1].split(",")[0]
    details = details_of(conn, wanted)
    if details is None:
        conn.reply(rpl.ERR_NOSUCHNICK, wanted, "No such nick/channel")
        conn.reply(rpl.RPL_ENDOFWHOIS, wanted, "End of /WHOIS list")
        return
    name = details.name
    conn.reply(rpl.RPL_WHOISUSER, name, name, USER_HOST, "*", _realname(conn, name))
    conn.reply(rpl.RPL_WHOISSERVER, name, conn.irc.server_name_of(details.server),
               details.server)
    if details.away:
        conn.reply(rpl.RPL_AWAY, name, details.away)
    channels = [channel_of(room.name) for room in details.rooms]
    if channels:
        conn.reply(rpl.RPL_WHOISCHANNELS, name, " ".join(channels))
    irc_user = conn.irc.users.get(name.casefold())
    if irc_user is not None and irc_user.tls is not None:
        conn.reply(rpl.RPL_WHOISSECURE, name, "is using a secure connection")
    rtt = details.rtt_us
    conn.reply(rpl.RPL_WHOISSPECIAL, name,
               f"is connected with RTT {rtt / 1000:.2f} ms" if rtt != UNKNOWN_RTT
               else "is connected with RTT not measured yet")
    conn.reply(rpl.RPL_WHOISIDLE, name, str(details.idle_seconds),
               str(details.connected_at_ms // 1000), "seconds idle, signon time")
    conn.reply(rpl.RPL_ENDOFWHOIS, name, "End of /WHOIS list")


def whowas(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    # The server keeps no history of who was here.
    for name in params[0].split(","):
        conn.reply(rpl.ERR_WASNOSUCHNICK, name, "There was no such nickname")
    conn.reply(rpl.RPL_ENDOFWHOWAS, params[0], "End of WHOWAS")


def ison(conn, params: list) -> None:
    present = []
    for word in " ".join(params).split():
        details = details_of(conn, word)
        if details is not None:
            present.append(details.name)
    conn.reply(rpl.RPL_ISON, " ".join(present))


def userhost(conn, params: list) -> None:
    if not need(conn, "USERHOST", params, 1):
        return
    replies = []
    for word in params[:MAX_USERHOST_NICKS]:
        details = details_of(conn, word)
        if details is not None:
            away = "-" if details.away else "+"
            replies.append(f"{details.name}={away}{details.name}@{USER_HOST}")
    conn.reply(rpl.RPL_USERHOST, " ".join(replies))


def away(conn, params: list) -> None:
    text = strip_formatting(params[0]) if params else ""
    text = fit_bytes(text, conn.hub.limits.max_away_bytes)
    conn.hub.set_away(conn.session, text)
    if text:
        conn.reply(rpl.RPL_NOWAWAY, "You have been marked as being away")
    else:
        conn.reply(rpl.RPL_UNAWAY, "You are no longer marked as being away")


def mode(conn, params: list) -> None:
    if not need(conn, "MODE", params, 1):
        return
    target = params[0]
    if room_of(target) is not None:
        channel_mode(conn, target, params)
        return
    if target.casefold() != conn.nick.casefold():
        if details_of(conn, target) is not None:
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


register("WHO", who)
register("WHOIS", whois)
register("WHOWAS", whowas)
register("ISON", ison)
register("USERHOST", userhost)
register("AWAY", away)
register("MODE", mode)
