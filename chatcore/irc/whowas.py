"""WHOWAS: who was here. Users who left (quit, timed out, dropped) or renamed away from a
nick, with their realname, node and the time, in a bounded history.

On a server alone the history is this node's (``WhowasHistory``, fed by the hub's
``departed`` hook for users of both front ends). In a cluster each node pushes its own
users' departures to a capped list per casefolded nick in Redis (``{p}:whowas:{nick}``,
written by the same script that forgets the user's record: cluster.presence_users), so
WHOWAS answers from every node's history; this node's own is the answer while Redis is out
of reach. Limits: ``whowas_per_nick``, ``whowas_max_entries``, ``whowas_seconds``.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from ..errors import ChatError
from . import numerics as rpl
from .dispatch import register
from .outlet import USER_HOST

MAX_WHOWAS_NICKS = 4        # nicks answered per WHOWAS (as PRIVMSG's TARGMAX); more ignored


@dataclass(frozen=True, slots=True)
class Gone:
    """One entry: a nick as it was when its user left or renamed."""
    name: str
    realname: str
    node: str               # the node the user was on
    gone_at: float          # wall clock, seconds since the epoch


class WhowasHistory:
    """This node's history: at most ``per_nick`` entries per casefolded nick (newest
    first), ``max_entries`` in all (the nick whose last departure is oldest loses its
    oldest entry first), none older than ``seconds``."""

    def __init__(self, per_nick: int, max_entries: int, seconds: float, wallclock=time.time):
        self.per_nick = per_nick
        self.max_entries = max_entries
        self.seconds = seconds
        self._wallclock = wallclock
        # key -> deque of Gone, newest on the right; the dict in order of last departure.
        self._by_nick: collections.OrderedDict = collections.OrderedDict()
        self.entries = 0

    def record(self, gone: Gone) -> None:
        if self.per_nick <= 0 or self.max_entries <= 0:
            return
        self._expire(gone.gone_at)
        key = gone.name.casefold()
        entries = self._by_nick.pop(key, None)
        if entries is None:
            entries = collections.deque()
        self._by_nick[key] = entries            # last departure: to the end
        entries.append(gone)
        self.entries += 1
        if len(entries) > self.per_nick:
            entries.popleft()
            self.entries -= 1
        while self.entries > self.max_entries:
            oldest_key, oldest = next(iter(self._by_nick.items()))
            oldest.popleft()
            self.entries -= 1
            if not oldest:
                del self._by_nick[oldest_key]

    def _expire(self, now: float) -> None:
        """Drop nicks whose newest entry is too old (the dict's front: oldest first)."""
        horizon = now - self.seconds
        while self._by_nick:
            key, entries = next(iter(self._by_nick.items()))
            if entries[-1].gone_at >= horizon:
                break
            del self._by_nick[key]
            self.entries -= len(entries)

    def lookup(self, key: str, count: int) -> list[Gone]:
        """Up to ``count`` (0: all) entries of the casefolded nick ``key``, newest first."""
        horizon = self._wallclock() - self.seconds
        found = [gone for gone in reversed(self._by_nick.get(key, ())) if gone.gone_at >= horizon]
        return found[:count] if count > 0 else found


def user_gone(front, session, name: str) -> None:
    """The hub's ``departed`` hook: ``session`` left, or renamed away from ``name``."""
    front.whowas.record(Gone(name, session.realname or name, front.server.hub.node.name,
                             time.time()))


def gone_from_record(record) -> Gone | None:
    """An entry of the Redis history (JSON: name, realname, node, gone in ms), or None."""
    if not isinstance(record, dict):
        return None
    try:
        return Gone(str(record["name"]), str(record.get("realname") or record["name"]),
                    str(record.get("node", "")), int(record["gone"]) / 1000)
    except (KeyError, TypeError, ValueError):
        return None


def whowas(conn, params: list) -> None:
    """``WHOWAS nick[,nick] [count]``: 314 and 312 per entry (newest first, at most
    ``count`` per nick when it is positive), or 406; then 369."""
    if not params or not params[0]:
        conn.reply(rpl.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    try:
        count = int(params[1]) if len(params) > 1 else 0
    except ValueError:
        count = 0                           # not a number: a full search, as RFC 2812 says
    nicks = [nick for nick in params[0].split(",") if nick][:MAX_WHOWAS_NICKS]
    _answer(conn, nicks, max(count, 0), params[0])


def _answer(conn, nicks: list, count: int, asked: str) -> None:
    """Each nick in turn (in a cluster a round trip to Redis each; the client's next lines
    wait), then 369."""
    if not nicks:
        conn.reply(rpl.RPL_ENDOFWHOWAS, asked, "End of WHOWAS")
        return
    nick, rest = nicks[0], nicks[1:]
    key = nick.casefold()
    session = conn.session

    def show(found) -> None:
        if conn.session is not session:
            return
        if isinstance(found, ChatError) or found is None:   # alone, or Redis out of reach
            found = conn.irc.whowas.lookup(key, count)
        else:
            found = [gone for gone in map(gone_from_record, found) if gone is not None]
        _show(conn, nick, found)
        _answer(conn, rest, count, asked)

    backplane = conn.hub.backplane
    try:
        conn.hub.check_name(nick)
    except ChatError:                       # no name was ever this: no need to ask Redis
        show([])
        return
    if backplane.shared_users and conn.irc.whowas.per_nick > 0:
        conn.ask_hub(lambda done: backplane.whowas(key, count, done), show)
    else:
        show(None)


def _show(conn, nick: str, found: list) -> None:
    if not found:
        conn.reply(rpl.ERR_WASNOSUCHNICK, nick, "There was no such nickname")
        return
    irc = conn.irc
    for gone in found:
        conn.reply(rpl.RPL_WHOWASUSER, gone.name, gone.name, USER_HOST, "*", gone.realname)
        conn.reply(rpl.RPL_WHOISSERVER, gone.name,
                   irc.server_name_of(gone.node) if gone.node else irc.server_name,
                   time.strftime("%a %b %d %H:%M:%S %Y UTC", time.gmtime(gone.gone_at)))


register("WHOWAS", whowas)
