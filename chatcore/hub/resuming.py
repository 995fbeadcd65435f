"""Held sessions: a dropped connection's session waits, delivered to nobody, for a resume
with its token or the end of its grace period."""
from __future__ import annotations

import secrets

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from .checks import new_token, quote
from .model import DETACHED, Session


class Resuming:
    """The resuming part of ``Hub``: detach, resume, replay, expire. Its state is the Hub's."""

    def detach(self, session: Session, reason: Reason) -> None:
        """The connection dropped uncleanly: hold the session for the grace period (others
        see nothing yet), or disconnect it now if resuming is off."""
        if self.sessions.get(session.key) is not session or session.outlet is DETACHED:
            return
        grace = self.limits.resume_grace_seconds
        if grace <= 0:
            self.disconnect(session, reason)
            return
        self._rebind(session, DETACHED, object())
        session.detached_until = self._clock() + grace
        session.detach_reason = reason
        self.held_sessions += 1
        self._detached.append((session.detached_until, session))

    def resume(self, name: str, token: str, outlet, endpoint) -> Session:
        """Bind the session named ``name`` to a new endpoint, if ``token`` is its token.

        The session may be detached or still connected (its user noticed the drop before
        the server did): then the old endpoint is evicted. The token is replaced.
        """
        session = self.sessions.get(name.casefold())
        if session is None:
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"no session named {quote(name)} to resume: it ended (quit, or "
                            f"its grace period passed) or never existed")
        if not secrets.compare_digest(token.encode(), session.resume_token.encode()):
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"the resume token for {quote(name)} does not match")
        old_outlet, old_endpoint = session.outlet, session.endpoint
        self._rebind(session, outlet, endpoint)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        session.resume_token = new_token()
        old_outlet.evict(old_endpoint)
        return session

    def replay(self, session: Session) -> None:
        """Tell a resumed session where it is: its rooms and its open conversations."""
        for room in session.rooms.values():
            session.outlet.deliver(session.endpoint, ev.UserJoined(room.name, session.name))
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            name = peer.name if peer is not None else self.remote_peers.get(peer_key)
            if name is not None:
                session.outlet.deliver(session.endpoint, ev.ChatOpened(name))

    def held_count(self) -> int:
        """Sessions detached now and waiting for a resume (a pass over those only)."""
        return sum(1 for deadline, session in self._detached
                   if session.outlet is DETACHED and session.detached_until == deadline)

    def expire_detached(self, limit: int) -> bool:
        """Disconnect up to ``limit`` sessions whose grace period is over, each with the
        reason it dropped for; True if more are already due."""
        now = self._clock()
        queue = self._detached
        while queue and limit > 0:
            deadline, session = queue[0]
            if deadline > now:
                return False
            queue.popleft()
            if session.detached_until == deadline:      # not resumed (nor dropped again)
                self.disconnect(session, session.detach_reason)
                limit -= 1
        return bool(queue) and queue[0][0] <= now

    def _rebind(self, session: Session, outlet, endpoint) -> None:
        for room in session.rooms.values():
            endpoints = room.endpoints[session.outlet]
            endpoints.remove(session.endpoint)
            if not endpoints:
                del room.endpoints[session.outlet]
            room.endpoints.setdefault(outlet, []).append(endpoint)
        session.outlet, session.endpoint = outlet, endpoint
