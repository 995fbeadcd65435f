"""Users: WHO, WHOIS, ISON, USERHOST, AWAY and MODE (user modes here, channel
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
from .channels import channel_mode, each_member, fit_bytes
from .dispatch import need, register, room_of
from .outlet import USER_HOST, channel_of, source_of
from .text import strip_formatting

MAX_USERHOST_NICKS = 5
# A WHO mask the hub's list patterns can take: name characters and the wildcards.
_NICK_MASK = re.compile(r"[A-Za-z0-9_.\-*?]+\Z")


def lookup(conn, name: str, then) -> None:
    """``then(details)``: the hub's UserDetails for ``name``, or None when no such user is
    online (on any node: a user of another one takes a round trip, and this client's
    next lines wait for it)."""
    session = conn.session

    def answered(outcome) -> None:
        if conn.session is not session:
            return                          # gone while the cluster answered
        if isinstance(outcome, ChatError):
            if outcome.code not in (ErrorCode.NO_SUCH_USER, ErrorCode.NAME_INVALID):
                conn.reply(rpl.ERR_UNKNOWNERROR, name, outcome.message)
            outcome = None
        then(outcome)

    try:
        conn.ask_hub(lambda done: conn.hub.whois(session, name, done), answered)
    except ChatError as exc:
        answered(exc)


def lookup_all(conn, names: list, then, found: list | None = None) -> None:
    """``then(list of UserDetails)`` for those of ``names`` who are online, in order."""
    found = [] if found is None else found
    if not names:
        then(found)
        return

    def one(details) -> None:
        if details is not None:
            found.append(details)
        lookup_all(conn, names[1:], then, found)

    lookup(conn, names[0], one)


def _realname(conn, user) -> str:
    """The realname of ``user`` (UserDetails, UserInfo, Member): a user of this node's
    (IRC's USER or SETNAME), else its record's (a user of another node), else its name."""
    session = conn.hub.sessions.get(user.name.casefold())
    if session is not None:
        return session.realname or user.name
    return getattr(user, "realname", "") or user.name


def _flags(away: str, prefixes: str = "") -> str:
    return ("G" if away else "H") + prefixes


def who(conn, params: list) -> None:
    mask = params[0] if params and params[0] else "*"
    if room_of(mask) is None:
        _who_mask(conn, mask)
        return
    all_prefixes = "multi-prefix" in conn.caps
    end = lambda *_: conn.reply(rpl.RPL_ENDOFWHO, mask, "End of /WHO list")  # noqa: E731

    def show(room_name: str, member) -> None:
        prefixes = dispatch.channel_modes.prefixes(conn, room_name, member.name)
        if prefixes and not all_prefixes:
            prefixes = prefixes[0]
        conn.reply(rpl.RPL_WHOREPLY, channel_of(room_name), member.name, USER_HOST,
                   _server_of(conn, member.server), member.name,
                   _flags(member.away, prefixes), _hops_realname(conn, member))

    # Every member of every node (the channel's member list in Redis in a cluster).
    each_member(conn, mask, show, end, end)


def _server_of(conn, node_name: str) -> str:
    return conn.irc.server_name_of(node_name) if node_name else conn.irc.server_name


def _hops_realname(conn, user) -> str:
    """352's last parameter: the hop count (0 here, 1 another node, as LINKS says) and
    the realname."""
    hops = 0 if not user.server or user.server == conn.hub.node.name else 1
    return f"{hops} {_realname(conn, user)}"


def _who_mask(conn, mask: str) -> None:
    def show(users) -> None:
        for user in users:
            conn.reply(rpl.RPL_WHOREPLY, "*", user.name, USER_HOST,
                       _server_of(conn, user.server), user.name, _flags(user.away),
                       _hops_realname(conn, user))
        conn.reply(rpl.RPL_ENDOFWHO, mask, "End of /WHO list")

    _matching(conn, mask.split("!", 1)[0], show)


def _matching(conn, mask: str, then) -> None:
    """``then(users)``: users whose nick matches ``mask``, as the hub lists them (every
    node's in a cluster). Users who are +i (native users count as +i) only if they share
    a channel with the asker or the mask is their exact nick."""
    if not _NICK_MASK.match(mask):
        then([])
        return
    if not any(c in mask for c in "*?"):
        lookup(conn, mask, lambda details: then([details] if details is not None else []))
        return
    pattern = mask.casefold()
    found: list = []
    session = conn.session

    def page_in(page) -> None:
        if conn.session is not session:
            return
        if isinstance(page, ChatError):
            conn.reply(rpl.ERR_UNKNOWNERROR, "WHO", page.message)
            then(found)
            return
        found.extend(user for user, key in zip(page.entries, page.keys)
                     if fnmatch.fnmatchcase(key, pattern) and not _hidden(conn, key))
        if page.next_after:
            ask(page.next_after)
        else:
            then(found)

    def ask(after: str) -> None:
        try:
            conn.ask_hub(lambda done: conn.hub.users_page("", after, pattern, 0, done),
                         page_in)
        except ChatError as exc:        # a pattern the hub's lists refuse (too long)
            page_in(exc)

    ask("")


def _hidden(conn, key: str) -> bool:
    irc_user = conn.irc.users.get(key)
    if irc_user is conn or (irc_user is not None and not irc_user.invisible):
        return False
    session = conn.hub.sessions.get(key)
    if session is not None:
        return not any(room in conn.session.rooms for room in session.rooms)
    # A user of another node: shown when it is a member of one of our rooms there.
    return not any(key in room.remote for room in conn.session.rooms.values())


def whois(conn, params: list) -> None:
    if not params or not params[-1]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = params[-1].split(",")[0]
    lookup(conn, wanted, lambda details: _show_whois(conn, wanted, details))


def _show_whois(conn, wanted: str, details) -> None:
    if details is None:
        conn.reply(rpl.ERR_NOSUCHNICK, wanted, "No such nick/channel")
        conn.reply(rpl.RPL_ENDOFWHOIS, wanted, "End of /WHOIS list")
        return
    name = details.name
    conn.reply(rpl.RPL_WHOISUSER, name, name, USER_HOST, "*", _realname(conn, details))
    conn.reply(rpl.RPL_WHOISSERVER, name, conn.irc.server_name_of(details.server),
               details.server)
    if details.away:
        conn.reply(rpl.RPL_AWAY, name, details.away)
    # Each channel with the user's prefix there, as NAMES shows it (known for a channel this
    # node has members in: every channel in common with the asker).
    all_prefixes = "multi-prefix" in conn.caps
    channels = []
    for room in details.rooms:
        prefixes = dispatch.channel_modes.prefixes(conn, room.name, name)
        channels.append((prefixes if all_prefixes else prefixes[:1]) + channel_of(room.name))
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


def ison(conn, params: list) -> None:
    lookup_all(conn, " ".join(params).split(), lambda found: conn.reply(
        rpl.RPL_ISON, " ".join(details.name for details in found)))


def userhost(conn, params: list) -> None:
    if not need(conn, "USERHOST", params, 1):
        return
    lookup_all(conn, params[:MAX_USERHOST_NICKS], lambda found: conn.reply(
        rpl.RPL_USERHOST, " ".join(
            f"{d.name}={'-' if d.away else '+'}{d.name}@{USER_HOST}" for d in found)))


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
        lookup(conn, target, lambda details: conn.reply(
            rpl.ERR_USERSDONTMATCH, "Cant change mode for other users") if details is not None
            else conn.reply(rpl.ERR_NOSUCHNICK, target, "No such nick/channel"))
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
                if adding:
                    conn.irc.invisible.add(conn)
                else:
                    conn.irc.invisible.discard(conn)
                changed += ("+" if adding else "-") + "i"
        else:
            unknown = True
    if unknown:
        conn.reply(rpl.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if changed:
        conn.send_line("MODE", conn.nick, changed, source=source_of(conn.nick))


register("WHO", who)
register("WHOIS", whois)
register("ISON", ison)
register("USERHOST", userhost)
register("AWAY", away)
register("MODE", mode)
