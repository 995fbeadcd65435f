"""Chooses the hot-path implementation once, at import.

The compiled ``chatcore._speedups`` (native frames, output buffers) and ``chatcore._ircframe``
(IRC lines) are used when they were built and ``CHATCORE_NO_EXTENSIONS`` is not set; otherwise
``chatcore._codec_py`` and ``chatcore._ircframe_py``. Nothing else in the package names these
modules. All stay importable by name for the tests (``codec_py``, ``codec_c``, ``ircframe_py``,
``ircframe_c``).
"""
from __future__ import annotations

import os

from . import _codec_py as codec_py
from . import _ircframe_py as ircframe_py

try:
    from . import _speedups as codec_c
except ImportError:                    # not built: no compiler or no Cython at install time
    codec_c = None
try:
    from . import _ircframe as ircframe_c
except ImportError:
    ircframe_c = None

NO_EXTENSIONS = bool(os.environ.get("CHATCORE_NO_EXTENSIONS"))

_impl = codec_py if NO_EXTENSIONS or codec_c is None else codec_c

IMPLEMENTATION = "cython" if _impl is codec_c else "python"
FrameDecoder = _impl.FrameDecoder
OutputBuffer = _impl.OutputBuffer
encode_frame = _impl.encode_frame
fanout = _impl.fanout
write_all = _impl.write_all
find_forbidden = _impl.find_forbidden
_ircframe = ircframe_py if NO_EXTENSIONS or ircframe_c is None else ircframe_c
LineDecoder = _ircframe.LineDecoder
PlainPrivmsg = _ircframe.PlainPrivmsg
read_privmsg = _ircframe.read_privmsg
MAX_IRC_LINE_BYTES = ircframe_py.MAX_IRC_LINE_BYTES
HEADER = codec_py.HEADER
HEADER_BYTES = codec_py.HEADER_BYTES
MIN_FRAME_LENGTH = codec_py.MIN_FRAME_LENGTH

__all__ = ["IMPLEMENTATION", "FrameDecoder", "OutputBuffer", "encode_frame", "fanout", "write_all",
           "find_forbidden", "HEADER", "HEADER_BYTES", "MIN_FRAME_LENGTH", "LineDecoder",
           "PlainPrivmsg", "read_privmsg", "MAX_IRC_LINE_BYTES", "codec_py", "codec_c",
           "ircframe_py", "ircframe_c"]
