"""One IRC client socket: line framing, registration, liveness, and the way into the hub.

Everything about the socket (output queue and its limit, flushing, lingering close) is the
native ``Connection``'s; this kind differs in what it reads and writes. Commands after
registration are answered by the command modules (``dispatch`` says which).
"""
from __future__ import annotations

import logging
import random
import time

from .. import __version__
from .. import lane as _lane
from ..connection import FLOOD_CHAT, FLOOD_REQUEST, Connection, State
from ..errors import ChatError, ErrorCode
from ..events import Reason
from . import dispatch, messages
from . import numerics as rpl
from .caps import MAX_LABEL_BYTES, SUPPORTED_CAPS, labeled  # noqa: F401 - re-exported
from .channels import fit_bytes
from .message import INVALID_UTF8, Message, encode
from .outlet import USER_HOST, source_of, text_lines, time_tag
from .protocol import BadLine, IrcProtocol, PlainPrivmsg
from .text import strip_formatting

log = logging.getLogger(__name__)

ISUPPORT_TOKENS_PER_LINE = 13           # what servers commonly send; keeps 005 under 512 bytes
dispatch.load_commands()


class IrcConnection(Connection):
    """An IRC client, from accept to close."""

    __slots__ = ("nick", "username", "realname", "registered", "cap_negotiating",
                 "caps", "cap_version", "registration_lines", "invisible", "echo_message",
                 "irc", "joined_state", "_captured", "_label")

    def __init__(self, server, sock, address, address_key=None, tls=None):
        super().__init__(server, sock, address, address_key, tls)
        self.irc = server.irc                 # the front end: outlet, names, ISUPPORT
        self.outlet = self.irc.outlet
        self.protocol = IrcProtocol()
        self.nick = ""
        self.username = ""
        self.realname = ""
        self.registered = False
        self.cap_negotiating = False
        self.caps: set[str] = set()
        self.cap_version = 0
        self.registration_lines = 0
        self.invisible = False
        self.echo_message = False
        self.joined_state = None        # the hub's RoomJoined for the JOIN being answered
        self._captured: list | None = None      # a labeled command's output, while it runs
        self._label = ""

    def __repr__(self) -> str:
        return f"<IrcConnection {self.nick or '-'} {self.address} {self.state.value}>"

    # -- output ----------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """How numerics address this client: its nick, or '*' before it has one."""
        return self.nick or "*"

    def send(self, data: bytes) -> None:
        if self._captured is not None and self in self.irc.capturing:
            self._captured.append(data)
        else:
            super().send(data)

    def relayed_text(self, command: str, sender: str, target: str, text: str,
                     action: bool = False) -> bytes:
        """A user's text as lines for this client, in its encoding (server-time)."""
        prefix = time_tag() if self.outlet.timed else b""
        return text_lines(command, source_of(sender), target, text, action=action,
                          prefix=prefix)

    def reply(self, numeric: str, *params: str) -> None:
        self.send(encode(numeric, self.target, *params, source=self.irc.server_name))

    def send_line(self, command: str, *params: str, source: str = "") -> None:
        self.send(encode(command, *params, source=source or self.irc.server_name))

    def send_error(self, code: ErrorCode, message: str, fatal: bool = False,
                   request_id: int = 0) -> None:
        """What the server says when it drops the client (shutdown, full, flood): IRC's
        ERROR; a refusal that does not end the connection is a 400."""
        if fatal:
            self.send(encode("ERROR", f"Closing Link: {self.address[0]} ({message})"))
        else:
            self.reply(rpl.ERR_UNKNOWNERROR, "*", _first_line(message))

    def send_event(self, event) -> None:
        raise TypeError("IRC connections send lines, not native events")

    # -- input -----------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if not self.registered:
            self.registration_lines += 1
            if self.registration_lines > self.config.irc_max_registration_lines:
                self.send_error(ErrorCode.BAD_FRAME, "Too many lines before registration",
                                fatal=True)
                self.close(Reason.DISCONNECTED, "too many lines before registration")
                return
        label = message.tags.get("label") if message.tags and self.registered else None
        if label is None or not {"labeled-response", "batch"} <= self.caps or \
                len(label.encode()) > MAX_LABEL_BYTES:
            self._dispatch(message)
            return
        # labeled-response: everything this command makes the server say to this client,
        # its replies and its own relayed lines (the outlet hands those over), as one answer.
        # Only while the command runs: if it waits for the cluster, what reaches the client
        # meanwhile is not part of it, and the answer is complete once the wait is over.
        self._captured, self._label = [], label
        self.irc.capturing.append(self)
        try:
            self._dispatch(message)
        finally:
            self.irc.capturing.remove(self)
            if not self._awaiting:
                self._answer_label()

    def _answered(self, outcome, on_outcome) -> None:
        if self._captured is None or self._awaiting != "waiting":
            # No label, or an answer at once: inside the command, which captures already.
            super()._answered(outcome, on_outcome)
            return
        self.irc.capturing.append(self)
        try:
            super()._answered(outcome, on_outcome)
        finally:
            self.irc.capturing.remove(self)
            if not self._awaiting:
                self._answer_label()

    def answer_waits(self) -> bool:
        """Whether a labeled command waits for the cluster (a NICK claimed in Redis, a JOIN
        of a room this node opens): the outlet then puts the command's own NICK or JOIN
        line in its answer (``captured``)."""
        return self._captured is not None and self._awaiting == "waiting"

    def captured(self, data: bytes) -> None:
        """Part of the answer of the labeled command that waits (``answer_waits``)."""
        self._captured.append(data)

    def _answer_label(self) -> None:
        """Send what a labeled command made the server say, as its labeled answer."""
        if self._captured is None:
            return
        captured, self._captured = self._captured, None
        self.send(labeled(self._label, b"".join(captured), self.irc.server_name,
                          time_tag() if self.outlet.timed else b""))

    def close(self, reason: Reason, why: object = "") -> None:
        # A labeled QUIT (or a command that ends in a drop): its answer, the ERROR line,
        # goes out before the connection closes.
        self._answer_label()
        super().close(reason, why)

    def _on_plain_privmsg(self, event: PlainPrivmsg) -> None:
        """The commonest line, read without the general parser: once registered, straight
        to the hub; before, the way every line goes (counted, refused with 451)."""
        if not self.registered or self.session is None:
            self._on_message(Message("PRIVMSG", [event.target, event.text]))
        else:
            messages.plain_privmsg(self, event.target, event.text)

    def _lane_run(self):
        # Plain PRIVMSGs of a registered client take the lane (chatcore.lane.run_irc), which
        # hands back the other lines as the events this connection's handlers take.
        return _lane.run_irc if self.registered else None

    def _dispatch(self, message: Message) -> None:
        try:
            dispatch.dispatch(self, message)
        except ChatError as exc:            # a refusal no command turned into its numeric
            self.reply(rpl.ERR_UNKNOWNERROR, message.command, _first_line(exc.message))

    def _on_bad_line(self, bad: BadLine) -> None:
        if bad.numeric == rpl.ERR_INPUTTOOLONG:
            self.reply(bad.numeric, bad.text)
        elif bad.numeric == INVALID_UTF8:        # IRCv3 UTF8ONLY: a standard reply
            self.send_line("FAIL", bad.command or "*", INVALID_UTF8, bad.text)
        elif bad.numeric:
            self.reply(bad.numeric, bad.command, bad.text)

    def flood_kind(self, event):
        """Messages draw from the chat bucket, PONG and QUIT are free, the rest are
        requests, as for native clients."""
        kind = type(event)
        if kind is PlainPrivmsg:
            return FLOOD_CHAT
        if kind is Message:
            command = event.command
            if command in ("PRIVMSG", "NOTICE"):
                return FLOOD_CHAT
            if command in ("PONG", "QUIT"):
                return None
        return FLOOD_REQUEST

    # -- registration ----------------------------------------------------------------------

    def try_register(self) -> None:
        """Enter the hub once NICK and USER are in and capability negotiation is over."""
        if (self.registered or self.cap_negotiating or not self.nick or not self.username
                or self._awaiting):
            return
        nick = self.nick
        # The caps that change encodings are fixed from here on: the outlet is chosen now.
        self.outlet = self.irc.outlet_for(self.caps)
        try:
            self._ask_hub(lambda done: self.hub.connect(nick, self.outlet, self.outbuf, done,
                                                        realname=self.realname or nick),
                          self._on_named)
        except ChatError as exc:
            self._refused(exc)

    def _refused(self, exc: ChatError) -> None:
        # Taken (by either front end) since NICK was checked: the client picks another.
        nick, self.nick = self.nick, ""
        numeric = (rpl.ERR_NICKNAMEINUSE if exc.code == ErrorCode.NAME_TAKEN
                   else rpl.ERR_ERRONEUSNICKNAME)
        self.reply(numeric, nick, _first_line(exc.message))

    def _on_named(self, outcome) -> None:
        if self.state is not State.OPEN:            # gone while the claim was out
            if not isinstance(outcome, ChatError):
                self.hub.disconnect(outcome, Reason.DISCONNECTED)
            return
        if isinstance(outcome, ChatError):
            self._refused(outcome)
        else:
            self.session = outcome
            self._welcome()

    def _welcome(self) -> None:
        self.registered = True
        self.irc.users[self.nick.casefold()] = self
        log.debug("%s is %s on IRC", self.peer, self.nick)
        irc = self.irc
        self.reply(rpl.RPL_WELCOME, f"Welcome to the {irc.network} IRC network, "
                                    f"{source_of(self.nick)}")
        self.reply(rpl.RPL_YOURHOST, f"Your host is {irc.server_name}, running version "
                                     f"chatcore-{__version__}")
        self.reply(rpl.RPL_CREATED, f"This server was created {irc.created}")
        self.reply(rpl.RPL_MYINFO, irc.server_name, f"chatcore-{__version__}", "i",
                   "biklmnostv", "bklov")
        self.send_isupport()

        dispatch.HANDLERS["LUSERS"](
            self, [], lambda: self.reply(rpl.ERR_NOMOTD, "MOTD File is missing"))

    # -- the connection's own state, changed by commands ----------------------------------

    def caps_changed(self) -> None:
        self.echo_message = "echo-message" in self.caps

    def room_joined(self, event) -> None:
        """The hub tells the joiner the room's state (topic) inside ``join``."""
        self.joined_state = event

    def ask_hub(self, request, on_outcome) -> None:
        """``request(done)``: a hub request a cluster may answer later; this client's next
        lines wait for the answer (``Connection._ask_hub``). ``on_outcome(outcome)`` runs
        once it is in (inside this call when the answer is immediate) and may ask again."""
        self._ask_hub(request, on_outcome)

    def rename(self, wanted: str) -> None:
        """NICK after registration: the hub's rename (claimed cluster-wide first); the
        NICK line comes from the hub's NameChanged, to this client and its neighbours."""
        self._ask_hub(lambda done: self.hub.set_name(self.session, wanted, done),
                      lambda error: self._on_renamed(wanted, error))

    def _on_renamed(self, wanted: str, error) -> None:
        if self.state is not State.OPEN or self.session is None:
            return
        if error is not None:
            numeric = (rpl.ERR_NICKNAMEINUSE if error.code == ErrorCode.NAME_TAKEN
                       else rpl.ERR_ERRONEUSNICKNAME)
            self.reply(numeric, wanted, _first_line(error.message))
            return
        users = self.irc.users
        if users.get(self.nick.casefold()) is self:
            del users[self.nick.casefold()]
        self.nick = self.session.name
        users[self.nick.casefold()] = self

    def realname_changed(self) -> None:
        """SETNAME: the hub's user gets this client's realname (never empty for an IRC
        user: the nick stands in; set from the start by ``hub.connect``), and so does its
        record in a cluster (WHOIS on other nodes)."""
        self.session.realname = self.realname or self.nick
        if self.hub.backplane.shared_users:
            self.hub.backplane.publish_user(self.session)

    def tell_setname(self) -> None:
        """SETNAME to this client and to the IRC users sharing a channel with it, each
        if it asked for ``setname``."""
        told = {self.session.key: self}
        for room in self.session.rooms.values():
            for key in room.members:
                peer = self.irc.users.get(key)
                if peer is not None:
                    told[key] = peer
        for peer in told.values():
            if "setname" in peer.caps:
                peer.send(peer.outlet.line("SETNAME", self.realname,
                                           source=source_of(self.nick)))

    def goodbye(self, text: str) -> str:
        """A QUIT reason as a chatcore quit message: formatting stripped, cut to fit."""
        return fit_bytes(strip_formatting(text), self.hub.limits.max_quit_bytes)

    def quit(self, message: str) -> None:
        self._leave_hub(Reason.QUIT, "quit", message)
        self.close(Reason.QUIT, "quit")

    def send_isupport(self) -> None:
        tokens = self.irc.isupport
        for i in range(0, len(tokens), ISUPPORT_TOKENS_PER_LINE):
            self.reply(rpl.RPL_ISUPPORT, *tokens[i:i + ISUPPORT_TOKENS_PER_LINE],
                       "are supported by this server")

    def userhost(self) -> str:
        return f"{self.nick}!{self.nick}@{USER_HOST}"

    # -- liveness --------------------------------------------------------------------------

    def tick(self, now: float, enforce_timeouts: bool = True) -> None:
        """Ping when due; drop clients that do not register or stop answering in time."""
        if self.state is not State.OPEN:
            return
        config = self.config
        if not self.registered:
            if enforce_timeouts and now - self.connected_at > config.handshake_timeout_seconds:
                self.send_error(ErrorCode.HANDSHAKE_TIMEOUT, "Registration timed out", fatal=True)
                self.close(Reason.TIMED_OUT, "registration timeout")
            return
        if enforce_timeouts and now - self.last_received > config.idle_timeout_seconds:
            self.send_error(ErrorCode.PING_TIMEOUT,
                            f"Ping timeout: {config.idle_timeout_seconds:g} seconds", fatal=True)
            log.info("%s: idle timeout", self.nick)
            self.close(Reason.TIMED_OUT, "idle timeout")
        elif now - self.last_ping_at >= config.ping_interval_seconds:
            self.ping_token = random.getrandbits(32)
            self.ping_sent_at = self.last_ping_at = now
            self.send(encode("PING", f"{self.ping_token:08x}"))

    def on_pong(self, token: str) -> None:
        if self.ping_sent_at is not None and token == f"{self.ping_token:08x}":
            self.session.record_rtt(time.monotonic() - self.ping_sent_at)
            self.ping_sent_at = None

    def _leave_hub(self, reason: Reason, why: object = "", message: str = "") -> None:
        users = self.irc.users
        if self.registered and users.get(self.nick.casefold()) is self:
            del users[self.nick.casefold()]
        self.irc.invisible.discard(self)
        session, self.session = self.session, None
        # Always a real end: IRC clients cannot resume a session, so holding the nick for
        # a grace period would only make their reconnect fail with 433.
        if session is not None and not self.server.shutting_down:
            self.hub.disconnect(session, reason, message)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


IrcConnection.HANDLERS = {
    Message: IrcConnection._on_message,
    PlainPrivmsg: IrcConnection._on_plain_privmsg,
    BadLine: IrcConnection._on_bad_line,
}
