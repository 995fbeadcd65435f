"""Logging set up once, at an entry point; modules only call ``logging.getLogger``."""
from __future__ import annotations

import logging.config


def configure_logging(level: str, fmt: str) -> None:
    """Everything at ``level`` and above to stderr, formatted with ``fmt``."""
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    })
