"""Server configuration: defaults, then a TOML file, then CHATCORE_* variables, then flags.

Every limit is here with its unit in the name and the reason for its default.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass

ENV_PREFIX = "CHATCORE_"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7878                    # 0 picks a free port
    server_name: str = ""               # shown in server lists; default "chatcore@HOST:PORT"
    log_level: str = "INFO"
    # Thousands of clients may connect at once; a backlog of 10 dropped 700 of 5000 in a burst.
    backlog: int = 4096
    max_clients: int = 100_000          # beyond this, new connections get SERVER_FULL
    max_frame_bytes: int = 65536        # biggest frame accepted from a client
    max_text_bytes: int = 8192          # biggest message text, in UTF-8 bytes
    max_name_chars: int = 32
    max_room_name_chars: int = 64
    max_rooms_per_user: int = 100
    # Output queued for a client that stops reading; past it the client is disconnected so
    # it cannot hold the server's memory hostage (Redis's client-output-buffer-limit).
    max_output_bytes: int = 1024 * 1024
    read_chunk_bytes: int = 65536       # one recv per readable socket per turn
    ping_interval_seconds: float = 5.0  # how often each client is pinged (RTT samples)
    idle_timeout_seconds: float = 30.0  # a client silent this long (no pong either) is dropped
    handshake_timeout_seconds: float = 10.0   # to send a valid Hello after connecting
    shutdown_grace_seconds: float = 2.0       # to flush goodbyes on SIGINT/SIGTERM

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        if self.max_frame_bytes < 64:
            raise ValueError("max_frame_bytes must be at least 64")
        if self.max_text_bytes > self.max_frame_bytes - 64:
            raise ValueError("max_text_bytes must leave 64 bytes of a frame for the header")
        for name in ("ping_interval_seconds", "idle_timeout_seconds",
                     "handshake_timeout_seconds", "max_output_bytes", "read_chunk_bytes",
                     "max_name_chars", "max_room_name_chars", "max_clients", "backlog"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}


def _convert(name: str, value):
    kind = type(FIELDS[name].default)
    if kind is float and isinstance(value, int | float | str):
        return float(value)
    if kind is int and isinstance(value, int | str) and not isinstance(value, bool):
        return int(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a {kind.__name__}, not {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config field (``max_output_bytes`` -> ``--max-output-bytes``)."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with these settings")
    for name, spec in FIELDS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            metavar=type(spec.default).__name__.upper(),
                            help=f"default {spec.default!r}; env {ENV_PREFIX}{name.upper()}")


def load(args: argparse.Namespace | None = None, environ=os.environ) -> ServerConfig:
    """Defaults < TOML file (``--config`` or CHATCORE_CONFIG) < environment < flags."""
    values: dict = {}
    path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        with open(path, "rb") as f:
            table = tomllib.load(f)
        table = table.get("server", table)
        for name, value in table.items():
            if name not in FIELDS:
                raise ValueError(f"{path}: unknown setting {name!r}")
            values[name] = _convert(name, value)
    for name in FIELDS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _convert(name, raw)
    if args is not None:
        for name in FIELDS:
            raw = getattr(args, name, None)
            if raw is not None:
                values[name] = _convert(name, raw)
    config = ServerConfig(**values)
    config.validate()
    return config
