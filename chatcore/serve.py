"""``chatcore-server`` / ``python server.py``: configure, bind, run until SIGINT/SIGTERM."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import signal
import sys

from . import __version__, codec
from . import config as config_module
from .logs import configure_logging
from .reactor import Reactor
from .server import Server, format_address

log = logging.getLogger("chatcore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcore-server", usage="%(prog)s [--config FILE] [--SETTING VALUE ...]",
        description="Run a chatcore chat server. Every setting can also come from a TOML "
                    "file (--config) or a CHATCORE_<SETTING> environment variable; flags win.")
    parser.add_argument("--version", action="version", version=version_string())
    parser.add_argument("--port-file", metavar="FILE",
                        help="write the bound port to FILE once listening (for scripts)")
    config_module.add_arguments(parser)
    return parser


def version_string() -> str:
    return f"chatcore {__version__} (hot path: {codec.IMPLEMENTATION})"


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit: %s", exc)
    return soft


def _write_port_file(path: str, port: int) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        f.write(f"{port}\n")
    os.replace(temporary, path)


def _listening(server: Server) -> str:
    """``HOST:PORT``, ``HOST:PORT and HOST:PORT (TLS)`` or ``HOST:PORT (TLS only)``."""
    if server.tls_address is None:
        return format_address(*server.address)
    tls = format_address(*server.tls_address)
    if server.address is None:
        return f"{tls} (TLS only)"
    return f"{format_address(*server.address)} and {tls} (TLS)"


def start_metrics(config, reactor, server):
    """The Prometheus page on the reactor (docs/metrics.md), or None if it cannot listen."""
    from .metrics import registry_for
    from .metrics_http import MetricsEndpoint
    endpoint = MetricsEndpoint(config, reactor, registry_for(server))
    try:
        endpoint.start()
    except OSError as exc:
        log.error("cannot serve metrics on %s:%s: %s", config.metrics_host or config.host,
                  config.metrics_port, exc.strerror or exc)
        return None
    log.info("metrics on %s", endpoint.url)
    return endpoint


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_module.load(args)
    except (ValueError, OSError) as exc:
        print(f"chatcore-server: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    files = raise_open_file_limit()
    reactor = Reactor()
    server = Server(config, reactor)
    metrics = None
    if config.metrics_port >= 0:
        # Before the server starts its timers: importing prometheus_client takes a while.
        metrics = start_metrics(config, reactor, server)
        if metrics is None:
            return 1
    try:
        host, port = server.start()
    except ValueError as exc:          # TlsConfigError: the certificate or key file
        log.error("bad TLS configuration: %s", exc)
        return 2
    except OSError as exc:
        plain_failed = server.listener is None and not config.tls_only
        log.error("cannot listen on %s:%s%s: %s", config.host,
                  config.port if plain_failed else config.tls_port,
                  "" if plain_failed else " (TLS)", exc.strerror or exc)
        return 1
    if config.redis:
        from .cluster import ClusterStartError
        try:
            server.join_cluster()
        except ClusterStartError as exc:
            log.error("cannot join the cluster: %s", exc)
            return 1
    log.info("%s listening on %s as %r", version_string(), _listening(server),
             server.hub.node.name)
    if server.irc is not None:
        if server.irc.address is not None:
            log.info("irc front end on %s as %s", format_address(*server.irc.address),
                     server.irc.server_name)
        if server.irc.tls_address is not None:
            log.info("irc front end (TLS) on %s as %s",
                     format_address(*server.irc.tls_address), server.irc.server_name)
    log.info("limits: max_frame_bytes=%d max_text_bytes=%d max_output_bytes=%d "
             "max_clients=%d ping_interval=%gs idle_timeout=%gs open_files=%d",
             config.max_frame_bytes, config.max_text_bytes, config.max_output_bytes,
             config.max_clients, config.ping_interval_seconds, config.idle_timeout_seconds,
             files)
    for signum in (signal.SIGINT, signal.SIGTERM):
        reactor.add_signal_handler(signum, server.shutdown)
    if args.port_file:
        _write_port_file(args.port_file, port)
    # What exists now (modules, the config, the listeners) lives as long as the process: out
    # of the collector's sight, every full collection has that much less to scan (22 000
    # objects, against about 15 a connection).
    gc.collect()
    gc.freeze()
    try:
        reactor.run()
    finally:
        if server.cluster is not None:
            server.cluster.close()
        if metrics is not None:
            metrics.close()
        reactor.close()
    log.info("stopped")
    return 0
