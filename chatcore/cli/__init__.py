"""chatcore-client: the command-line chat client.

``main`` picks a front end: ``--send`` sends one message (``oneshot``); a terminal gets the
interactive line editor (``interactive``); anything else, or ``--json``, the scriptable
line mode (``script``). All of them share the config (``config``), the command table
(``commands``), the output records (``formatting``) and the chat session (``session``).
"""
from __future__ import annotations

import asyncio
import logging.config
import sys

from . import exitcodes
from .config import ConfigError, load_config

__all__ = ["main"]


def _configure_logging() -> None:
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "chatcore-client: %(levelname)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    })


def main(argv=None) -> int:
    _configure_logging()
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"chatcore-client: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if config.send is not None:
        from . import oneshot
        return oneshot.run(config)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not config.json
    try:
        if interactive:
            from . import interactive as front_end
        else:
            from . import script as front_end
        return asyncio.run(front_end.run(config))
    except KeyboardInterrupt:
        return exitcodes.OK if interactive else exitcodes.INTERRUPTED
