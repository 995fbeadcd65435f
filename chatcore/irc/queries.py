"""Server queries: LUSERS, TIME, VERSION, MOTD, LINKS, INFO, ADMIN, HELP."""
from __future__ import annotations

import time

from .. import __version__
from ..errors import ChatError
from . import numerics as rpl
from .dispatch import HANDLERS, register


def lusers(conn, params: list | None = None, then=None) -> None:
    """251-266, counted over the cluster: users from every node's last report
    (``list_servers``), rooms from the shared room list (a round trip to Redis in a
    cluster; the next lines wait). ``then()`` once sent (the welcome's 422)."""
    hub = conn.hub
    servers = hub.list_servers()
    local = len(hub.sessions)
    total = sum(server.users for server in servers)       # this node's first: local
    invisible = len(conn.irc.invisible)         # this node's IRC users: the rest are unknown

    def counted(page) -> None:
        rooms = page.total if page is not None and not isinstance(page, ChatError) \
            else len(hub.rooms)
        conn.reply(rpl.RPL_LUSERCLIENT, f"There are {total - invisible} users and "
                                        f"{invisible} invisible on {len(servers)} servers")
        conn.reply(rpl.RPL_LUSEROP, "0", "operator(s) online")
        conn.reply(rpl.RPL_LUSERCHANNELS, str(rooms), "channels formed")
        conn.reply(rpl.RPL_LUSERME, f"I have {local} clients and {len(servers) - 1} servers")
        conn.reply(rpl.RPL_LOCALUSERS, str(local), str(local),
                   f"Current local users {local}, max {local}")
        conn.reply(rpl.RPL_GLOBALUSERS, str(total), str(total),
                   f"Current global users {total}, max {total}")
        if then is not None:
            then()

    conn.ask_hub(lambda done: hub.rooms_page(limit=1, done=done), counted)


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
    """364 per node of the cluster (this one first, its peers one hop away), 365."""
    servers = conn.hub.list_servers()
    here = conn.irc.server_name
    for hops, server in enumerate(servers):
        name = conn.irc.server_name_of(server.name) if hops else here
        conn.reply(rpl.RPL_LINKS, "*", name, f"{min(hops, 1)} {server.name}")
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
    if subject and subject not in HANDLERS:
        conn.reply(rpl.ERR_HELPNOTFOUND, subject, "No help available on this topic")
        return
    topic = subject or "*"
    conn.reply(rpl.RPL_HELPSTART, topic, f"chatcore IRC front end: {subject or 'commands'}")
    if subject:
        conn.reply(rpl.RPL_HELPTXT, topic, f"{subject} works as modern.ircdocs.horse says; "
                                          f"see docs/irc.md for what differs")
    else:
        commands = sorted(HANDLERS)
        for i in range(0, len(commands), 10):
            conn.reply(rpl.RPL_HELPTXT, topic, " ".join(commands[i:i + 10]))
    conn.reply(rpl.RPL_ENDOFHELP, topic, "End of /HELP")


register("LUSERS", lusers)
register("TIME", time_)
register("VERSION", version)
register("MOTD", motd)
register("LINKS", links)
register("INFO", info)
register("ADMIN", admin)
register("HELP", help_)
