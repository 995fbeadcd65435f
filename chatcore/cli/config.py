"""Command-line arguments, environment variables and the TOML config file, merged once.

Precedence, highest first: command line, environment (``CHATCORE_HOST``, ``CHATCORE_PORT``,
``CHATCORE_NAME``, ``CHATCORE_LOCAL_PORT``, ``CHATCORE_SERVERS``), the config file (``--config FILE``, else
``$CHATCORE_CONFIG``, else ``$XDG_CONFIG_HOME/chatcore/client.toml`` when it exists), defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .. import serverchoice
from ..serverchoice import ChoicePolicy, parse_server
from ..tls import client_context

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7878                       # the server's default port (chatcore.client)
# Reconnect: start quickly (a restarting server is back within a second), double each try,
# never wait more than half a minute between tries.
RECONNECT_INITIAL_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0
# How long a closing script waits for its last messages to be acknowledged (or for the
# server to come back) before it gives up and reports what was not delivered.
DRAIN_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# A chatcore server answers Hello within milliseconds; a peer silent this long after accepting
# the connection is something else (or hung), and the user is told so instead of waiting.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# After losing its server, how long the client retries its name while another server says
# NAME_TAKEN: a dead cluster node's names are free once its lease lapses (6 s by default,
# node_silence_seconds, docs/cluster.md), and another user may claim the name after that.
NAME_LEASE_SECONDS = 10.0

ENV_VARS = {"host": "CHATCORE_HOST", "port": "CHATCORE_PORT", "name": "CHATCORE_NAME",
            "local_port": "CHATCORE_LOCAL_PORT", "servers": "CHATCORE_SERVERS"}


class ConfigError(Exception):
    """The configuration cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class ClientConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    local_port: int = 0
    name: str | None = None               # None: ask (interactive) or let the server choose
    to: str | None = None                 # initial conversation partner
    room: str | None = None               # initial room (joined at start)
    json: bool = False
    send: tuple[str, ...] | None = None   # one-shot: (PEER, TEXT) or (TEXT,) with room/to
    reconnect_initial_seconds: float = RECONNECT_INITIAL_SECONDS
    reconnect_max_seconds: float = RECONNECT_MAX_SECONDS
    drain_timeout_seconds: float = DRAIN_TIMEOUT_SECONDS
    connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS
    handshake_timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS
    tls: bool = False                     # speak TLS (the server's tls_port)
    tls_ca: str | None = None             # trust this PEM file's CAs, not the system's
    tls_insecure: bool = False            # no certificate check: self-signed test servers only
    servers: tuple[str, ...] = ()         # HOST:PORT of each server; empty: host and port
    probe_interval_seconds: float = serverchoice.PROBE_INTERVAL_SECONDS
    move_ratio: float = serverchoice.MOVE_RATIO
    move_sustain_seconds: float = serverchoice.MOVE_SUSTAIN_SECONDS
    move_min_gain_ms: float = serverchoice.MOVE_MIN_GAIN_SECONDS * 1000
    name_lease_seconds: float = NAME_LEASE_SECONDS

    def server_list(self) -> list[tuple[str, int]]:
        """Every configured server as (host, port): ``servers``, else ``host:port``."""
        if not self.servers:
            return [(self.host, self.port)]
        return [parse_server(text, self.port) for text in self.servers]

    def choice_policy(self) -> ChoicePolicy:
        return ChoicePolicy(probe_interval_seconds=self.probe_interval_seconds,
                            move_ratio=self.move_ratio,
                            move_sustain_seconds=self.move_sustain_seconds,
                            move_min_gain_seconds=self.move_min_gain_ms / 1000)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with, or None for a plain connection."""
        if not (self.tls or self.tls_ca or self.tls_insecure):
            return None
        return client_context(self.tls_ca, self.tls_insecure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcore-client",
        description="Chat on a chatcore server. Interactive on a terminal; reads commands and "
                    "messages from stdin and writes one line per event otherwise.",
        epilog="Type /help in the client for its commands. Environment: CHATCORE_HOST, "
               "CHATCORE_PORT, CHATCORE_NAME, CHATCORE_LOCAL_PORT, CHATCORE_SERVERS "
               "(HOST:PORT,HOST:PORT), CHATCORE_CONFIG.")
    parser.add_argument("--host", help=f"server host (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--server", action="append", metavar="HOST:PORT", dest="servers",
                        help="a server to choose from (repeat it for several): the client "
                             "measures the RTT to each, uses the lowest and fails over to "
                             "the next; replaces --host and --port")
    parser.add_argument("--local-port", type=_port, metavar="PORT",
                        help="bind this local port for the connection (default: any)")
    parser.add_argument("--name", help="your user name (asked for when missing)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="USER", help="start a conversation with USER")
    target.add_argument("--room", metavar="ROOM", help="join ROOM and talk there")
    parser.add_argument("--json", action="store_true",
                        help="non-interactive: print every event as one JSON object a line")
    parser.add_argument("--send", nargs="+", metavar="ARG",
                        help="send one message and exit: --send PEER TEXT, or --room ROOM "
                             "--send TEXT (exit 0 once the server acknowledged it)")
    parser.add_argument("--tls", action="store_true", default=None,
                        help="connect with TLS (the server's tls_port), verifying its "
                             "certificate against the system's CAs")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="with TLS, trust the CAs in this PEM file instead (implies --tls)")
    parser.add_argument("--tls-insecure", action="store_true", default=None,
                        help="with TLS, do NOT verify the server's certificate: for self-signed "
                             "test servers only, anyone on the path can read and change the chat "
                             "(implies --tls)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with the settings above")
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def default_config_path(environ) -> Path | None:
    base = environ.get("XDG_CONFIG_HOME") or (
        os.path.join(environ["HOME"], ".config") if environ.get("HOME") else None)
    if not base:
        return None
    path = Path(base) / "chatcore" / "client.toml"
    return path if path.is_file() else None


_FILE_KEYS = {f.name for f in dataclasses.fields(ClientConfig)} - {"send"}


def load_file(path: str | os.PathLike) -> dict:
    """Settings from a TOML file: top-level keys or a ``[client]`` table."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("client", data)
    values = {}
    for key, value in data.items():
        attr = key.replace("-", "_")
        if attr not in _FILE_KEYS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[attr] = value
    return values


def load_config(argv=None, environ=None) -> ClientConfig:
    """The merged configuration; argparse exits on bad arguments, others raise ConfigError."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict = {}
    config_path = args.config or environ.get("CHATCORE_CONFIG") or default_config_path(environ)
    if config_path:
        values.update(load_file(config_path))
    for attr, var in ENV_VARS.items():
        if environ.get(var):
            values[attr] = environ[var]
    for attr in ("host", "port", "local_port", "name", "to", "room", "servers"):
        if getattr(args, attr) is not None:
            values[attr] = getattr(args, attr)
    if args.to is not None or args.room is not None:      # one target: the command line's
        values.pop("room" if args.to is not None else "to", None)
    if args.json:
        values["json"] = True
    for attr in ("tls", "tls_ca", "tls_insecure"):
        if getattr(args, attr) is not None:
            values[attr] = getattr(args, attr)
    if args.send is not None:
        values["send"] = tuple(args.send)
    config = _typed(values)
    if config.tls_ca:
        try:
            client_context(config.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use --tls-ca {config.tls_ca}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    if config.send is not None:
        has_target = bool(config.room or config.to)
        if len(config.send) not in (1, 2) or (len(config.send) == 1) != has_target:
            parser.error("use --send PEER TEXT, or --room ROOM --send TEXT")
    return config


def _typed(values: dict) -> ClientConfig:
    fields = {f.name: f for f in dataclasses.fields(ClientConfig)}
    typed = {}
    for attr, value in values.items():
        kind = fields[attr].type
        try:
            if kind == "int":
                typed[attr] = _port(str(value))
            elif kind == "float":
                typed[attr] = float(value)
            elif kind == "bool":
                typed[attr] = bool(value)
            elif attr == "send":
                typed[attr] = value
            elif attr == "servers":
                typed[attr] = _servers(value)
            else:
                typed[attr] = str(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"bad value for {attr}: {exc}") from None
    if typed.get("move_ratio") is not None and not 0 < typed["move_ratio"] < 1:
        raise ConfigError(f"bad value for move_ratio: {typed['move_ratio']} is not between "
                          f"0 and 1")
    if typed.get("room"):
        typed["room"] = typed["room"].lstrip("#")
    config = ClientConfig(**typed)
    try:
        config.server_list()
    except ValueError as exc:
        raise ConfigError(f"bad server: {exc}") from None
    return config


def _servers(value) -> tuple[str, ...]:
    """A list of HOST:PORT strings (TOML array, or one string separated by commas)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a list of HOST:PORT: {value!r}")
    return tuple(v.strip() for v in value if v.strip())
