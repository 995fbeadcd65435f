"""Chooses the receive loop and verifier once, at import: ``chatcore._loadgen`` when built,
else the pure twin.

``CHATCORE_NO_EXTENSIONS`` forces the pure-Python one, as for the server. Both stay importable
by name for the tests (``verify_py``, ``verify_c``).
"""
from __future__ import annotations

import os

from . import _verify_py as verify_py
from ._verify_py import (HIST_BUCKETS, READ_BUDGET_BYTES, RECV_BYTES,  # noqa: F401
                         TEXT_HEADER_BYTES, bucket_floor, bucket_of, stamp)

try:
    from chatcore import _loadgen as verify_c
except ImportError:                    # not built: no compiler or no Cython at install time
    verify_c = None

_impl = (verify_py if os.environ.get("CHATCORE_NO_EXTENSIONS") or verify_c is None
         else verify_c)

IMPLEMENTATION = "cython" if _impl is verify_c else "python"
Tally = _impl.Tally
Stream = _impl.Stream
IrcStream = _impl.IrcStream
Receiver = _impl.Receiver
encode_sends = _impl.encode_sends
