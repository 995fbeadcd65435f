"""Server queries: LUSERS, TIME, VERSION, MOTD, LINKS, INFO, ADMIN, HELP."""
from __future__ import annotations

import time

from .. import __version__
from . import numerics as rpl
from .dispatch import HANDLERS, register


def lusers(conn, params: list | None = None) -> None:
    hub = conn.hub
    users = len(hub.sessions)
    invisible = sum(1 for c in conn.irc.users.values() if c.invisible)
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
