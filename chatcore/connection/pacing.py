"""How much input a connection handles when: fair turns, flood control (token buckets,
"fake lag", excess flood), and its share of the server's held-input budget."""
from __future__ import annotations

import logging

from .. import events as ev
from ..errors import ErrorCode
from ..events import Reason
from .closing import State

log = logging.getLogger(__package__)

# Which token bucket a request takes from: 0 chat messages, 1 other requests (the default
# for any request type not named here, and for bad frames), None free (answers to our pings,
# and goodbye).
_CHAT, _REQUEST = 0, 1
FLOOD_CHAT, FLOOD_REQUEST = _CHAT, _REQUEST
_FLOOD_KIND = {ev.SendRoom: _CHAT, ev.SendDirect: _CHAT, ev.SendRoomAction: _CHAT,
               ev.SendDirectAction: _CHAT, ev.Pong: None, ev.Quit: None}


class Pacing:
    """The pacing part of ``Connection``."""

    __slots__ = ()    # Connection's slots hold the state

    def flood_kind(self, event):
        """The flood bucket ``event`` draws from: FLOOD_CHAT, FLOOD_REQUEST, or None (free).
        Another connection kind (IRC) answers for its own events."""
        return _FLOOD_KIND.get(type(event), _REQUEST)

    def _next_turn(self) -> None:
        if self.state is State.OPEN and self._resume_timer is None:
            self.process_input()

    def _delay(self, now: float, wait_seconds: float) -> None:
        """Flood control: handle nothing more for ``wait_seconds`` ("fake lag")."""
        if self._behind_since is None:
            self._behind_since = now
        elif now - self._behind_since > self.config.max_flood_lag_seconds:
            self._flooded(now - self._behind_since)
            return
        self._pause_reading()
        self._resume_timer = self.reactor.call_later(wait_seconds, self._end_delay)

    def _end_delay(self) -> None:
        self._resume_timer = None
        if self.state is State.OPEN:
            self.process_input()

    def _flooded(self, behind_seconds: float) -> None:
        log.info("%s: disconnected for flooding (behind its allowance for %.1fs)",
                 self.session.name if self.session else self.peer, behind_seconds)
        self.send_error(ErrorCode.EXCESS_FLOOD,
                        f"excess flood: you sent faster than the server allows for over "
                        f"{self.config.max_flood_lag_seconds:g}s", fatal=True)
        self.stats.drop("flood")
        self.close(Reason.FLOODED, "excess flood")

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.remove_reader(self.fd)

    def _resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self.reactor.add_reader(self.fd, self.on_readable)

    def _account_held_input(self) -> None:
        """Keep the server's total of received but unhandled input; past its budget, the
        connection that would add to it is dropped."""
        held = self.protocol.buffered_bytes
        if self.tls is not None:
            held += self.tls.held_bytes     # an unfinished record, inside the ssl object
        grown = held - self.held_bytes
        if not grown:
            return
        self.held_bytes = held
        server = self.server
        server.held_input_bytes += grown
        if grown < 0:
            return
        if server.held_input_bytes > server.held_input_peak:
            server.held_input_peak = server.held_input_bytes    # for chatcore.memory
        if server.held_input_bytes > self.config.max_held_input_bytes:
            log.warning("%s: dropped, the server holds %d bytes of unhandled input (limit "
                        "%d)", self.session.name if self.session else self.peer,
                        server.held_input_bytes, self.config.max_held_input_bytes)
            self.send_error(ErrorCode.INPUT_BUDGET,
                            "the server is holding all the unfinished input it may; "
                            "try again later", fatal=True)
            self.stats.drop("input_budget")
            self.close(Reason.OVER_LIMIT, "held-input budget")

    def _release_held_input(self) -> None:
        self.server.held_input_bytes -= self.held_bytes
        self.held_bytes = 0
