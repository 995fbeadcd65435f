"""Which server the session is on: the lowest-RTT one at start, a move when another is
clearly and consistently better, and the next-best when the current one is lost.

The rules are ``chatcore.serverchoice`` (sans-IO); this half of ``Session`` does the I/O for
them: probes of the other servers (``chatcore.probe``: a connect and pings before any
handshake, no name claimed), pings of the current server on the chat connection, the
cluster's server list (ListServers) to learn the other nodes, and the moves themselves.
A move or a failover keeps the name, the rooms and the chats: the new server is asked to
resume the session with its token (a cluster that resumes across nodes gives it back whole);
otherwise the client says Hello with the same name (retrying while the old server still
holds it, up to ``name_lease_seconds``), rejoins the rooms, reopens the chats and sends what
was not acknowledged.
"""
from __future__ import annotations

import asyncio
import random
import time

from .. import events as ev
from ..errors import ErrorCode
from ..probe import PROBE_PINGS, PROBE_TIMEOUT_SECONDS, probe_async
from ..serverchoice import PROBE_JITTER, Server, ServerChoice, host_port
from . import exitcodes
from .connection import Connection, ConnectionLost
from .formatting import error_name, record

# While the name is taken on a server just reached (the lost one still holds it), ask again
# this often, on the same connection, for at most FAILOVER_NAME_TRY_SECONDS before the next
# server of the round is tried.
NAME_RETRY_SECONDS = 0.2
FAILOVER_NAME_TRY_SECONDS = 1.0
# A lost server is tried again first (a blip: it still holds the session for a resume), but
# only this long, so a dead host does not hold up the failover.
FAILOVER_CONNECT_TIMEOUT_SECONDS = 1.0
# A move waits this long for the replies still due on the old connection.
MOVE_DRAIN_SECONDS = 2.0
MOVE_QUIT_MESSAGE = "moving to a closer server"
# After a resumed move, the old node closes the old connection (SESSION_RESUMED) within a
# Redis round trip; one that has not by then is reset.
MOVE_RETIRE_SECONDS = 5.0
NAME_ERRORS = (ErrorCode.NAME_TAKEN, ErrorCode.NAME_INVALID)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Roaming:
    """Mixed into Session: the server choice, moves and failover."""

    def _init_roaming(self) -> None:
        config = self.config
        self.choice = ServerChoice(config.choice_policy())
        for host, port in config.server_list():
            self.choice.add(host, port)
        self._tls = config.tls_context()
        self._moving = False
        self._lost_while_moving: str | None = None
        self._watching: asyncio.Task | None = None

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> int | None:
        """Measure the servers (when there are several), connect to the lowest-RTT one and
        say Hello; None on success, else an exit status (already explained)."""
        choice = self.choice
        if len(choice.servers) > 1:
            await self._measure_all()
            ranked = choice.ranked()
            self.emit(record("measured", using=ranked[0].label, servers=[
                {"host": s.host, "port": s.port, "rtt_ms": _ms(s.rtt)} for s in ranked]))
        failures = []
        for server in choice.ranked():
            try:
                conn = await self._open(server)
            except OSError as exc:
                choice.failed(server)
                failures.append(str(exc))
                continue
            return await self._first_hello(conn, server)
        if len(failures) == 1:
            self._error(failures[0], code="UNAVAILABLE")
        else:
            self._error(f"cannot connect to any of the {len(failures)} servers: "
                        + "; ".join(failures), code="UNAVAILABLE")
        return exitcodes.UNAVAILABLE

    async def _first_hello(self, conn: Connection, server: Server) -> int | None:
        config = self.config
        while True:
            try:
                reply = await conn.hello(self.name, config.handshake_timeout_seconds)
            except ConnectionLost as exc:
                message = str(exc)
                if not message.startswith(conn.address):
                    message = f"{conn.address} closed the connection during the handshake: " \
                              f"{message}"
                self._error(message, code="UNAVAILABLE")
                conn.close()
                return exitcodes.UNAVAILABLE
            if type(reply) is ev.Welcome:
                break
            self._error_event(reply, f"the server refused the name {self.name!r}"
                              if reply.code in NAME_ERRORS else "the server refused us")
            if reply.code not in NAME_ERRORS or reply.fatal:
                conn.close()
                return exitcodes.UNAVAILABLE
            if self.ask_name is None:
                conn.close()
                return exitcodes.NAME_REFUSED
            self.name = await self.ask_name()
        self._attach(conn, reply, server)
        if config.room:
            self.join(config.room)
        elif config.to:
            self.open_chat(config.to, sticky=True)
        return None

    async def _open(self, server: Server, timeout: float | None = None) -> Connection:
        config = self.config
        return await Connection.open(server.host, server.port, local_port=config.local_port,
                                     timeout=timeout or config.connect_timeout_seconds,
                                     tls=self._tls)

    def _on_attached(self, server: Server, welcome: ev.Welcome) -> None:
        """Called by ``_attach``: this is the current server now; learn the cluster's list
        and keep measuring."""
        self.choice.set_current(server, welcome.server)
        self._learn_servers()
        if self._watching is None and self.choice.policy.probe_interval_seconds > 0:
            self._watching = self._spawn(self._watch(), track=False)

    # -- the greeting on a new server --------------------------------------------------------

    async def _greet(self, conn: Connection, retry_taken_seconds: float):
        """Resume with the token if there is one, else (or when refused) Hello with our
        name, asked again while NAME_TAKEN for ``retry_taken_seconds``: (reply, resumed)."""
        timeout = self.config.handshake_timeout_seconds
        if self.resume_token:
            # The server that held the session gives it back; a cluster that resumes across
            # nodes does so on any of its nodes. A refusal here does not void the token:
            # the lost server may come back with the session.
            reply = await conn.resume(self.name, self.resume_token, timeout)
            if type(reply) is ev.Welcome:
                return reply, True
            if reply.code != ErrorCode.RESUME_REFUSED:
                return reply, False
        deadline = time.monotonic() + retry_taken_seconds
        while True:
            reply = await conn.hello(self.name, timeout)
            if (type(reply) is ev.Welcome or reply.code != ErrorCode.NAME_TAKEN
                    or time.monotonic() >= deadline):
                return reply, False
            await asyncio.sleep(NAME_RETRY_SECONDS)

    # -- losing the server -------------------------------------------------------------------

    async def _reconnect(self, why: str) -> None:
        """Back on a server: with several known, the others at once (the lost one first,
        briefly, for a blip), rounds with backoff after that; with one, backoff as always."""
        config = self.config
        choice = self.choice
        lost = choice.current
        lost_at = time.monotonic()
        lease_ends = lost_at + config.name_lease_seconds
        delay = config.reconnect_initial_seconds
        attempt = 0
        told_taken = False
        while not self._closing:
            attempt += 1
            failover = len(choice.servers) > 1
            in_lease = failover and time.monotonic() < lease_ends
            if not in_lease:
                wait = delay * random.uniform(0.5, 1.0)     # "equal jitter": never all at once
                self.emit(record("reconnecting", delay_seconds=round(wait, 3),
                                 attempt=attempt, why=why))
                await asyncio.sleep(wait)
                delay = min(delay * 2, config.reconnect_max_seconds)
            order = choice.failover_order()
            if failover and lost in order:
                order.remove(lost)
                order.insert(0, lost)
            for server in order if failover else order[:1]:
                if self._closing:
                    return
                quick = in_lease and server is lost
                try:
                    conn = await self._open(server, FAILOVER_CONNECT_TIMEOUT_SECONDS
                                            if quick else None)
                except OSError as exc:
                    choice.failed(server)
                    why = str(exc)
                    continue
                try:
                    reply, resumed = await self._greet(
                        conn, FAILOVER_NAME_TRY_SECONDS if in_lease else 0.0)
                except ConnectionLost as exc:
                    conn.close()
                    why = str(exc)
                    continue
                if type(reply) is ev.Error:
                    conn.close()
                    taken = reply.code == ErrorCode.NAME_TAKEN
                    why = (f"the name {self.name} is still taken (the old session has not "
                           f"timed out yet)" if taken
                           else f"refused: {reply.message or error_name(reply.code)}")
                    if taken and failover and not told_taken and \
                            time.monotonic() >= lease_ends:
                        told_taken = True
                        self._error(f"the name {self.name} is still taken on "
                                    f"{server.label} {config.name_lease_seconds:g}s after "
                                    f"{lost.label if lost else 'the server'} was lost: "
                                    f"someone else may have it now; still trying "
                                    f"(/quit to stop)", code="NAME_TAKEN")
                    continue
                if self._closing:
                    conn.close()
                    return
                self._reconnecting = None
                moved_from = lost if lost is not None and server is not lost else None
                self._attach(conn, reply, server, moved_from=moved_from,
                             why="lost" if moved_from else "",
                             seconds=time.monotonic() - lost_at)
                if resumed:
                    self._resume()
                else:
                    self._restore()
                return
            if in_lease:
                await asyncio.sleep(NAME_RETRY_SECONDS)

    # -- measuring and moving ----------------------------------------------------------------

    async def _measure(self, server: Server) -> None:
        """One measurement of ``server``: pings on the chat connection for the current one,
        a probe for the others."""
        try:
            if server is self.choice.current:
                rtt = await self._ping_current()
                if rtt is None:
                    return
            else:
                rtt = (await probe_async(server.host, server.port, tls=self._tls)).rtt_seconds
        except (OSError, TimeoutError):
            if server is not self.choice.current:
                self.choice.failed(server)
            return
        self.choice.observe(server, rtt)

    async def _measure_all(self) -> None:
        choice = self.choice
        servers = ([choice.current] if choice.current is not None and self.connected
                   else []) + choice.others()
        await asyncio.gather(*(self._measure(s) for s in servers))

    async def _ping_current(self) -> float | None:
        """The fastest of PROBE_PINGS pings on the chat connection, one after the other (a
        probe measures the others the same way); None if the connection changed."""
        conn = self._conn
        best = None
        for _ in range(PROBE_PINGS):
            if not self.connected or self._conn is not conn:
                return None
            done = asyncio.get_running_loop().create_future()
            started = time.monotonic()
            token = time.monotonic_ns() & 0xFFFFFFFFFFFFFFFF
            self._request(ev.Ping(token),
                          lambda pong, d=done: d.done() or d.set_result(time.monotonic()),
                          lambda error: None, background=True)
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                answered = await done
            rtt = answered - started
            best = rtt if best is None else min(best, rtt)
        return best

    def _learn_servers(self) -> None:
        """Ask the current server for the cluster's list; learn the nodes in it. Not with
        TLS: a server list gives each node's plain port only (list them with --server)."""
        if self.connected and self._tls is None:
            self._request(ev.ListServers(), lambda reply: self.choice.learn(reply.servers),
                          lambda error: None, background=True)

    async def _watch(self) -> None:
        """Every probe interval (jittered): the server list, a measurement of every server,
        and a move if the choice says so."""
        interval = self.choice.policy.probe_interval_seconds
        while not self._closing:
            await asyncio.sleep(interval * random.uniform(1 - PROBE_JITTER, 1 + PROBE_JITTER))
            if not self.connected or self._moving:
                continue
            self._learn_servers()
            if len(self.choice.servers) < 2:
                continue                    # one server: nothing to choose
            await self._measure_all()
            target = self.choice.move_target()
            if target is not None and self.connected and not self._moving:
                await self._move_to(target)

    async def _move_to(self, target: Server) -> None:
        """Move the session to ``target`` (connected and well): resumed there if the cluster
        allows, else a Quit here and a Hello there, rejoining rooms and chats."""
        choice = self.choice
        old_conn, old = self._conn, choice.current
        self._moving = True
        self._lost_while_moving = None
        try:
            try:
                conn = await self._open(target)
            except OSError:
                choice.failed(target)
                return
            await self.wait_idle(MOVE_DRAIN_SECONDS, replies_only=True)
            if self._conn is not old_conn or self._lost_while_moving or self._closing:
                conn.close()
                return
            timeout = self.config.handshake_timeout_seconds
            resumed = False
            try:
                if self.resume_token:
                    reply = await conn.resume(self.name, self.resume_token, timeout)
                    resumed = type(reply) is ev.Welcome
                    if not resumed and reply.code != ErrorCode.RESUME_REFUSED:
                        conn.close()
                        return
                self._conn, self.connected = None, False
                self._take_back_unacknowledged(quiet=True)
                if resumed:
                    # The old node lets the session go and closes that connection with
                    # SESSION_RESUMED; a clean close of ours reaching it first would be a
                    # goodbye there (docs/protocol.md, resuming a session).
                    self._spawn(self._retire(old_conn), track=False)
                else:
                    # The old session must end before its name is free for a Hello there.
                    old_conn.send(ev.Quit(MOVE_QUIT_MESSAGE))
                    old_conn.close()
                if not resumed:
                    self.resume_token = ""          # that session has ended
                    reply, _ = await self._greet(conn, self.config.name_lease_seconds)
            except ConnectionLost as exc:
                conn.close()
                if self._conn is None:
                    self._lost(f"moving to {target.label}: {exc}")
                return
            if type(reply) is ev.Error:
                conn.close()
                self._lost(f"moving to {target.label}: "
                           f"{reply.message or error_name(reply.code)}")
                return
            self._attach(conn, reply, target, moved_from=old, why="closer",
                         old_rtt=old.rtt if old else None)
            if resumed:
                self._resume()
            else:
                self._restore()
        finally:
            self._moving = False
            if self._lost_while_moving and self._conn is old_conn:
                self._lost(self._lost_while_moving)

    async def _retire(self, conn: Connection) -> None:
        """A connection whose session moved: what it still brings is shown (not replies:
        their ids are the old connection's), and it is reset if its server has not closed
        it within MOVE_RETIRE_SECONDS."""
        await asyncio.sleep(MOVE_RETIRE_SECONDS)
        conn.abort()

    # -- /servers ----------------------------------------------------------------------------

    def _cmd_servers(self) -> None:
        if self._offline_hint("/servers"):
            return
        self._request(ev.ListServers(),
                      lambda reply: self._spawn(self._show_servers(reply)),
                      label="/servers")

    async def _show_servers(self, reply: ev.ServerList) -> None:
        """Every known server: the cluster's list (users, the current node's RTT to it) and
        this client's RTT to each, measured now."""
        choice = self.choice
        if self._tls is None:
            choice.learn(reply.servers)
        await self._measure_all()
        listed = {entry.name.casefold(): entry for entry in reply.servers}
        rows = []
        for server in choice.servers:
            entry = listed.get(server.name.casefold()) if server.name else None
            current = server is choice.current
            rows.append({
                "name": server.name or host_port(server.host, server.port),
                "host": server.host, "port": server.port,
                "users": entry.users if entry is not None else None,
                "rtt_ms": None if server.failed_at is not None or not server.samples
                else _ms(server.samples[-1]),
                "node_rtt_ms": None if current else _ms(server.node_rtt_seconds),
                "current": current})
        rows.sort(key=lambda row: not row["current"])
        self.emit(record("servers", total=len(rows), servers=rows))
