"""Held sessions: a dropped connection's session waits, delivered to nobody, for a resume
with its token or the end of its grace period."""
from __future__ import annotations

import secrets

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from .checks import CONTINUING, answer_or_return, new_token, quote
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

    def resume(self, name: str, token: str, outlet, endpoint, done=None) -> Session | None:
        """Bind the session named ``name`` to a new endpoint, if ``token`` is its token.

        The session may be detached or still connected (its user noticed the drop before
        the server did): then the old endpoint is evicted. The token is replaced. With
        ``done``, in a cluster, a session of another node (alive or dead) is taken over
        from its record in shared state, and the outcome (Session or ChatError) goes to
        ``done`` once Redis answered.
        """
        key = name.casefold()
        session = self.sessions.get(key)
        matches = session is not None and secrets.compare_digest(
            token.encode(), session.resume_token.encode())
        if not matches and done is not None and self.backplane.shared_users \
                and key not in self._claiming:
            # Held by another node, or by this one in a life it has moved on from (a move
            # away whose notice has not arrived yet): Redis decides.
            self._resume_from_elsewhere(name, key, token, outlet, endpoint, done)
            return None
        if session is None:
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"no session named {quote(name)} to resume: it ended (quit, or "
                            f"its grace period passed) or never existed")
        if not matches:
            raise ChatError(ErrorCode.RESUME_REFUSED,
                            f"the resume token for {quote(name)} does not match")
        old_outlet, old_endpoint = session.outlet, session.endpoint
        self._rebind(session, outlet, endpoint)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        session.resume_token = new_token()
        self.backplane.publish_user(session)
        old_outlet.evict(old_endpoint)
        return answer_or_return(done, session)

    def _resume_from_elsewhere(self, name: str, key: str, token: str, outlet, endpoint,
                               done) -> None:
        self._claiming.add(key)
        token_after = new_token()

        def answered(record) -> None:
            self._claiming.discard(key)
            if isinstance(record, ChatError):
                done(record)
                return
            if record is None:
                done(ChatError(ErrorCode.RESUME_REFUSED,
                               f"no session named {quote(name)} to resume on any server of "
                               f"the cluster, or the token does not match"))
                return
            if key in self.sessions:
                # Redis had the name elsewhere: this node's session of that name is one
                # that moved away (its notice still on the way). It goes quietly.
                self.moved_elsewhere(key, self.node.name)
            now = self._clock()
            session = Session(str(record.get("name", name)), key, outlet, endpoint, now, now,
                              resume_token=token_after,
                              connected_at_ms=int(record.get("since", 0))
                              or int(self._wallclock() * 1000))
            session.away = str(record.get("away", ""))
            self.sessions[key] = session
            self._user_index.add(key)
            self.remote_peers.pop(key, None)        # this node's own user now
            for peer_name in record.get("chats", ()):
                peer_key = str(peer_name).casefold()
                if peer_key == key:
                    continue
                session.conversations.add(peer_key)
                peer = self.sessions.get(peer_key)
                if peer is not None:
                    peer.conversations.add(key)
                else:
                    self.remote_peers.setdefault(peer_key, str(peer_name))
            kept = {str(key) for key in record.get("kept_rooms", ())}
            session.rejoin = tuple((str(room), str(room).casefold() in kept)
                                   for room in record.get("rooms", ()))
            self.backplane.publish_user(session)
            done(session)

        self.backplane.take_over_session(key, token, token_after, answered)

    def moved_elsewhere(self, key: str, node_name: str) -> bool:
        """The session ``key`` was resumed on node ``node_name``: it leaves this node
        without telling its conversation partners (they keep the conversation, now with a
        user of another node); its rooms here are left. False if there was none."""
        session = self.sessions.get(key)
        if session is None:
            return False
        del self.sessions[key]
        self._user_index.discard(key)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        for room in list(session.rooms.values()):
            self._remove_member(room, session, Reason.DISCONNECTED,
                                f"resumed on server {node_name}")
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            if peer is not None and key in peer.conversations:
                self.remote_peers[key] = session.name
        session.conversations.clear()
        session.outlet.evict(session.endpoint)
        return True

    def replay(self, session: Session) -> None:
        """Tell a resumed session where it is: its rooms and its open conversations (a
        session taken over from another node joins its rooms here now)."""
        rejoin, session.rejoin = session.rejoin, ()
        for room_name, kept in rejoin:
            try:
                self.join(session, room_name, CONTINUING if kept else "")
            except ChatError:
                # A limit of this node: the room is not rejoined, and a membership that
                # came along with the session ends.
                if kept:
                    self.backplane.drop_membership(room_name.casefold(), session)
        rejoined = {name.casefold() for name, _ in rejoin}
        for room in session.rooms.values():
            if room.key not in rejoined:
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
