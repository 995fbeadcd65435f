"""The IRC listener and what every IRC connection of a server shares: the outlet, the
server's IRC name and the ISUPPORT tokens it advertises."""
from __future__ import annotations

import logging
import re
import socket
import time

from ..server import listen_socket
from .connection import SUPPORTED_CAPS, IrcConnection  # noqa: F401 - re-exported
from .message import encode
from .outlet import IrcOutlet
from .registration import MAX_REALNAME_CHARS
from .remote import install as install_remote_kinds
from .whowas import WhowasHistory, user_gone

log = logging.getLogger(__name__)

NETWORK = "chatcore"
_NOT_HOSTNAME = re.compile(r"[^A-Za-z0-9.\-]+")


def irc_server_name(node_name: str) -> str:
    """The node's name as IRC needs a server name: host-name characters with a dot in it
    (``chatcore@127.0.0.1:7878`` -> ``chatcore.127.0.0.1.7878``)."""
    name = _NOT_HOSTNAME.sub(".", node_name).strip(".") or NETWORK
    return name if "." in name else name + ".chatcore"


class IrcFrontEnd:
    """IRC clients for one Server: a listener beside the native one, sharing its hub,
    connection set, timers and write flush."""

    def __init__(self, server):
        self.server = server
        config = server.config
        self.server_name = irc_server_name(server.hub.node.name)
        # registration.ping's answer to a one-word token, up to the token: the lane's PONG.
        self.pong_prefix = encode("PONG", self.server_name, "x", source=self.server_name)[:-3]
        self.users: dict = {}           # casefolded nick -> IrcConnection, once registered
        self.invisible: set = set()     # the IrcConnections that are +i (LUSERS counts them)
        self.capturing: list = []       # connections answering a labeled command now
        # One outlet per encoding of relayed lines (server-time or not): see outlet.py.
        self.outlet = IrcOutlet(self, server.outlet)
        self.timed_outlet = IrcOutlet(self, server.outlet, timed=True)
        self.network = NETWORK
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        # Who was here (WHOWAS): this node's users of both front ends, as the hub says.
        self.whowas = WhowasHistory(config.whowas_per_nick, config.whowas_max_entries,
                                    config.whowas_seconds)
        server.hub.departed.append(lambda session, name: user_gone(self, session, name))
        install_remote_kinds(self)      # CTCP and SETNAME from IRC users of other nodes
        limits = server.hub.limits
        # Only what the server does. Channel modes and prefixes are the hub's room moderation
        # (irc/moderation.py; MODES, MAXLIST and KICKLEN its limits). Lengths in bytes.
        self.isupport = (
            "CASEMAPPING=ascii", "CHANTYPES=#", "CHANMODES=b,k,l,imnst", "PREFIX=(ov)@+",
            f"NICKLEN={limits.max_name_chars}", f"CHANNELLEN={limits.max_room_name_chars + 1}",
            f"CHANLIMIT=#:{limits.max_rooms_per_user}", f"NETWORK={self.network}",
            "TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,PART:,NAMES:,WHOIS:1,ISON:,USERHOST:5,KICK:4",
            "LINELEN=512", "MODES=4", f"TOPICLEN={limits.max_topic_bytes}",
            f"AWAYLEN={limits.max_away_bytes}", f"NAMELEN={MAX_REALNAME_CHARS}",
            "CLIENTTAGDENY=*", "UTF8ONLY", f"MAXLIST=b:{limits.max_bans_per_room}",
            f"KICKLEN={limits.max_quit_bytes}",
        )
        self.listener: socket.socket | None = None
        self.address: tuple | None = None
        self.tls_listener: socket.socket | None = None     # irc_tls_port: TLS first
        self.tls_address: tuple | None = None

    @property
    def listeners(self) -> tuple:
        return tuple(sock for sock in (self.listener, self.tls_listener) if sock is not None)

    def outlet_for(self, caps) -> IrcOutlet:
        return self.timed_outlet if "server-time" in caps else self.outlet

    def server_name_of(self, node_name: str) -> str:
        """The IRC server name of a cluster node (312, LINKS)."""
        return irc_server_name(node_name)

    def start(self) -> tuple | None:
        """Listen on irc_port and/or irc_tls_port (with the server's TLS context)."""
        config = self.server.config
        if config.irc_port >= 0:
            self.listener = listen_socket(config.host, config.irc_port, config.backlog)
            self.address = self.listener.getsockname()[:2]
        if config.irc_tls_port >= 0:
            try:
                self.tls_listener = listen_socket(config.host, config.irc_tls_port,
                                                  config.backlog)
            except OSError:
                self.stop()
                raise
            self.tls_address = self.tls_listener.getsockname()[:2]
        self.server.reactor.add_before_sleep(self.outlet.end_turn)
        self.server.reactor.add_before_sleep(self.timed_outlet.end_turn)
        self.watch()
        return self.address or self.tls_address

    def watch(self) -> None:
        """Accept IRC clients (again, after the server paused accepting)."""
        reactor = self.server.reactor
        if self.listener is not None:
            self.listener.setblocking(False)
            reactor.add_reader(self.listener.fileno(), self._on_acceptable)
        if self.tls_listener is not None:
            self.tls_listener.setblocking(False)
            reactor.add_reader(self.tls_listener.fileno(), self._on_tls_acceptable)

    def stop(self) -> None:
        for sock in self.listeners:
            self.server.reactor.remove_fd(sock.fileno())
            sock.close()
        self.listener = self.tls_listener = None

    def _on_acceptable(self) -> None:
        self.server._accept(self.listener, self._adopt)

    def _on_tls_acceptable(self) -> None:
        # The same TLS handshake as the native TLS listener's, then an IRC connection.
        self.server._accept(self.tls_listener, self._start_tls)

    def _adopt(self, sock, address) -> None:
        self.server._adopt(sock, address, kind=IrcConnection)

    def _start_tls(self, sock, address) -> None:
        self.server._start_tls(sock, address, kind=IrcConnection)
