"""Chooses the per-message lane (room and direct messages without event objects) once:
``run`` for native connections, ``run_irc`` for IRC ones.

The compiled ``chatcore._lane`` runs with the compiled codec (``chatcore.codec``:
``CHATCORE_NO_EXTENSIONS`` unset and the extensions built), ``chatcore._lane_py`` otherwise.
``CHATCORE_NO_LANE=1`` turns the lane off: every request then takes the hub path, which is
the specification (for A/B measurements and for the differential tests). Both
implementations stay importable by name (``lane_py``, ``lane_c``).
"""
from __future__ import annotations

import os

from . import _lane_py as lane_py
from .codec import IMPLEMENTATION

try:
    from . import _lane as lane_c
except ImportError:                    # not built: no compiler or no Cython at install time
    lane_c = None

NO_LANE = bool(os.environ.get("CHATCORE_NO_LANE"))

_impl = lane_c if IMPLEMENTATION == "cython" and lane_c is not None else lane_py

LANE_IMPLEMENTATION = "off" if NO_LANE else ("cython" if _impl is lane_c else "python")
run = None if NO_LANE else _impl.run
run_irc = None if NO_LANE else _impl.run_irc
text_ok = _impl.text_ok

__all__ = ["LANE_IMPLEMENTATION", "NO_LANE", "lane_c", "lane_py", "run", "run_irc", "text_ok"]
