"""chatcore-client: the command-line chat client.

``main`` picks a front end: ``--send`` sends one message (``oneshot``); a terminal gets the
interactive line editor (``interactive``); anything else, or ``--json``, the scriptable
line mode (``script``). All of them share the config (``config``), the command table
(``commands``), the output records (``formatting``) and the chat session (``session``).
"""
from __future__ import annotations

import asyncio
import sys

from . import exitcodes
from ..logs import configure_logging
from .config import ConfigError, load_config

__all__ = ["main"]


def main(argv=None) -> int:
    configure_logging("WARNING", "chatcore-client: %(levelname)s: %(message)s")
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
