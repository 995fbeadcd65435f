"""A connection's end: its states, the lingering close, and leaving (or detaching from) the
hub."""
from __future__ import annotations

import enum
import logging
import socket

from ..events import Reason

log = logging.getLogger(__package__)

# After our last byte, how long a closing connection may take to send its EOF; reading until
# then keeps the kernel from answering unread input with a reset that would destroy our
# final error frame before the peer reads it (a "lingering close", as HTTP servers do).
LINGER_SECONDS = 2.0
DISCARD_CHUNK_BYTES = 65536
_QUIET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"         # no more input handled; flushing what is queued
    LINGERING = "lingering"     # output done and shut down; discarding input until EOF
    CLOSED = "closed"


class Closing:
    """The closing part of ``Connection``."""

    __slots__ = ()    # Connection's slots hold the state

    def close(self, reason: Reason, why: object = "") -> None:
        """Stop taking input, tell the hub, and close once the queued output is written."""
        if self.state is not State.OPEN:
            return
        log.debug("%s: closing (%s)", self.peer, why or reason.name)
        self.state = State.CLOSING
        self.outbuf.direct_fd = -1      # flush() lingers once the output is written
        self._leave_hub(reason, why)
        self._stop_input()
        self._linger_timer = self.reactor.call_later(LINGER_SECONDS, self.abort,
                                                     reason, "close timed out")
        # Non-empty output is always on the outlet's pending list, in the flusher's queue
        # for a later turn, or waiting for write readiness, so flush() will get to it and
        # call _linger then.
        if not self.outbuf.pending_bytes:
            self._linger()

    def _linger(self) -> None:
        self.state = State.LINGERING
        if self.tls is not None:
            self.tls.close_notify()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort(Reason.DISCONNECTED)
            return
        self.reactor.add_reader(self.fd, self._discard_input)

    def _discard_input(self) -> None:
        try:
            data = self.sock.recv(DISCARD_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.abort(Reason.DISCONNECTED)

    def abort(self, reason: Reason, why: object = "") -> None:
        """Close now, dropping queued output."""
        if self.state is State.CLOSED:
            return
        if isinstance(why, OSError) and not isinstance(why, _QUIET_ERRORS):
            log.warning("%s: %s", self.peer, why)
        self._leave_hub(reason, why)
        self._stop_input()
        self.state = State.CLOSED
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.reactor.remove_fd(self.fd)
        self.outbuf.close()
        if self.tls is not None:
            self.tls.release()
        self.sock.close()
        self.server.forget(self)

    def _stop_input(self) -> None:
        self._release_held_input()
        self.protocol.discard_input()
        self._held_event = None
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._reading = False
        self.reactor.remove_reader(self.fd)

    def _leave_hub(self, reason: Reason, why: object, message: str = "") -> None:
        session, self.session = self.session, None
        if session is None or self.server.shutting_down:
            return
        # Reset, timeout or slow reader: the user did not choose to leave, and may come
        # back with its resume token. A Quit, an EOF or a protocol error is a real end.
        if reason in (Reason.TIMED_OUT, Reason.TOO_SLOW) or isinstance(why, OSError):
            if self.config.resume_grace_seconds > 0:
                log.info("%s: dropped (%s); session held %gs for a resume", session.name,
                         reason.name, self.config.resume_grace_seconds)
            self.hub.detach(session, reason)
        else:
            self.hub.disconnect(session, reason, message)
