"""Users arriving, renaming and leaving: name claims (through the backplane), guest names,
and telling a user's neighbours once."""
from __future__ import annotations

import random

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from .checks import check_identifier, check_text, new_token, quote
from .model import Session

GUEST_PREFIX = "guest-"
GUEST_CLAIM_ATTEMPTS = 20       # guest names tried before giving up (others took each one)
GUEST_SKIP_MAX = 1000           # after a taken guest name, skip up to this many numbers


class Identity:
    """The identity part of ``Hub``: connect, rename, disconnect (state: ``Hub.__init__``)."""

    def check_name(self, name: str) -> None:
        """Raise NAME_INVALID saying why ``name`` cannot be a user name."""
        if name and not (name[0].isascii() and name[0].isalpha()):
            raise ChatError(ErrorCode.NAME_INVALID,
                            f"name {quote(name)} must start with a letter")
        check_identifier("name", name, self.limits.max_name_chars, ErrorCode.NAME_INVALID)

    def connect(self, wanted_name: str, outlet, endpoint, done=None,
                realname: str = "") -> Session | None:
        """A user arrives; an empty ``wanted_name`` gets a unique guest name (``realname``:
        IRC's, in the user's records from the first write).

        The name is claimed from the backplane too (cluster-wide in a cluster), so the outcome,
        a Session or a ChatError, goes to ``done(outcome)`` once known: at once on a single
        server, when Redis answers in a cluster. Without ``done`` (a single server, tests) the
        session is returned and a refusal raised.
        """
        if wanted_name:
            self.check_name(wanted_name)
        outcome: list = []
        self._claim(wanted_name, outlet, endpoint, done or outcome.append, 0, realname)
        if done is not None:
            return None
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if isinstance(outcome[0], ChatError):
            raise outcome[0]
        return outcome[0]

    def _claim(self, wanted_name: str, outlet, endpoint, done, attempt: int,
               realname: str = "") -> None:
        name = wanted_name or self._guest_name()
        key = name.casefold()
        if key == name:
            key = name          # one string, not two equal ones, per held session
        holder = self.sessions.get(key)
        if holder is not None or key in self._claiming:
            message = (self._taken_message(holder, name) if holder is not None
                       else f"name {quote(name)} is taken")
            done(ChatError(ErrorCode.NAME_TAKEN, message))
            return
        self._claiming.add(key)
        now = self._clock()
        # Made before the claim: a cluster writes its records with the claim (one round
        # trip), so the Welcome finds them in Redis for a resume on another node right after.
        session = Session(name, key, outlet, endpoint, now, now, resume_token=new_token(),
                          connected_at_ms=int(self._wallclock() * 1000), realname=realname)

        def answered(answer) -> None:
            self._claiming.discard(key)
            if answer is True:
                self.sessions[key] = session
                self._user_index.add(key)
                done(session)
            elif isinstance(answer, ChatError):
                done(answer)
            elif wanted_name:
                done(ChatError(ErrorCode.NAME_TAKEN, f"name {quote(name)} is taken"))
            elif attempt + 1 < GUEST_CLAIM_ATTEMPTS:
                # Another node's guests hold these numbers: jump ahead, past most of them.
                for _ in range(random.randrange(GUEST_SKIP_MAX)):
                    next(self._guest_numbers)
                self._claim("", outlet, endpoint, done, attempt + 1, realname)
            else:
                done(ChatError(ErrorCode.NAME_TAKEN, "no free guest name was found; "
                                                     "send Hello with a name"))

        self.backplane.claim_user(session, answered)

    def _taken_message(self, holder: Session, name: str) -> str:
        if holder.detached_until is None:
            return f"name {quote(name)} is taken"
        seconds = max(1, round(holder.detached_until - self._clock()))
        return (f"name {quote(name)} is reserved for its user to reconnect "
                f"(for up to {seconds} s more)")

    def set_name(self, session: Session, new_name: str, done=None) -> None:
        """Rename a user; it and everyone sharing a room or a chat with it are told once.

        A new name is claimed from the backplane first (cluster-wide in a cluster), so the
        outcome, None or a ChatError, goes to ``done(outcome)`` once known, as for
        ``connect``. Without ``done`` a refusal is raised (a single server answers at once).
        """
        self._touch(session)
        if new_name != session.name:
            self.check_name(new_name)
        outcome: list = []
        self._rename(session, new_name, done or outcome.append)
        if done is not None:
            return
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if outcome[0] is not None:
            raise outcome[0]

    def _rename(self, session: Session, new_name: str, done) -> None:
        old_key, new_key = session.key, new_name.casefold()
        if new_name == session.name or new_key == old_key:      # nothing, or only the case
            if new_name != session.name:
                self._renamed(session, new_name)
            done(None)
            return
        holder = self.sessions.get(new_key)
        if holder is not None or new_key in self._claiming:
            message = (self._taken_message(holder, new_name) if holder is not None
                       else f"name {quote(new_name)} is taken")
            done(ChatError(ErrorCode.NAME_TAKEN, message))
            return
        self._claiming.add(new_key)

        def answered(answer) -> None:
            self._claiming.discard(new_key)
            if answer is not True:
                done(answer if isinstance(answer, ChatError) else
                     ChatError(ErrorCode.NAME_TAKEN, f"name {quote(new_name)} is taken"))
            elif self.sessions.get(session.key) is not session:    # gone meanwhile
                self.backplane.release_name(new_key)
                done(ChatError(ErrorCode.NO_SUCH_USER, "the session ended"))
            else:
                self._rekey(session, new_key)
                self.backplane.release_name(old_key)
                self.backplane.forget_user(old_key)
                self._renamed(session, new_name)
                done(None)

        self.backplane.claim_name(new_key, answered)

    def name_lost(self, key: str, attempt: int = 0) -> None:
        """The name of local user ``key`` is held in the cluster by a user of another node
        (claimed there while this node was cut off from Redis): the name stays with that
        user, and this one gets a fresh guest name (NameChanged to it and its neighbours,
        then a NAME_CONFLICT error saying why); the holder is told through the backplane."""
        session = self.sessions.get(key)
        if session is None:
            return
        old_name = session.name

        def renamed(error) -> None:
            if isinstance(error, ChatError) and error.code == ErrorCode.NAME_TAKEN \
                    and attempt + 1 < GUEST_CLAIM_ATTEMPTS:
                for _ in range(random.randrange(GUEST_SKIP_MAX)):
                    next(self._guest_numbers)
                self.name_lost(key, attempt + 1)
            elif error is None:
                text = (f"the name {old_name} was taken by a user of another server while "
                        f"this one was cut off from the cluster; you are now {session.name}")
                session.outlet.deliver(session.endpoint,
                                       ev.Error(ErrorCode.NAME_CONFLICT, False, text))
                self.backplane.send_to_user(key, {
                    "kind": "conflict", "from": old_name,
                    "text": f"another user held the name {old_name} on server "
                            f"{self.node.name} while it was cut off from the cluster; "
                            f"the name stays yours, and they are now {session.name}"})

        self._rename(session, self._guest_name(), renamed)

    def _rekey(self, session: Session, new_key: str) -> None:
        old_key = session.key
        del self.sessions[old_key]
        self.sessions[new_key] = session
        self._user_index.discard(old_key)
        self._user_index.add(new_key)
        for room in session.rooms.values():
            del room.members[old_key]
            room.members[new_key] = session
            if room.member_index is not None:
                room.member_index.discard(old_key)
                room.member_index.add(new_key)
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            if peer is None:                # on another node: told by _renamed
                continue
            peer.conversations.discard(old_key)
            peer.conversations.add(new_key)
            if old_key in peer.away_replied:
                peer.away_replied.discard(old_key)
                peer.away_replied.add(new_key)
        session.key = new_key

    def _renamed(self, session: Session, new_name: str) -> None:
        old_name, session.name = session.name, new_name
        for hook in self.departed:
            hook(session, old_name)
        self._tell_once(self._neighbours(session), ev.NameChanged(old_name, new_name))
        self._renamed_in_rooms(session, old_name)       # rooms shared with other nodes
        for peer_key in session.conversations:
            if peer_key not in self.sessions:       # a partner on another node
                self.backplane.send_to_user(peer_key, {"kind": "renamed", "from": new_name,
                                                       "old": old_name})
        self.backplane.publish_user(session)

    def _neighbours(self, session: Session) -> dict:
        """The user and everyone sharing a room or a conversation with it, by key."""
        known = {session.key: session}
        for room in session.rooms.values():
            known.update(room.members)
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            if peer is not None:
                known[peer_key] = peer
        return known

    def _tell_once(self, sessions: dict, event) -> None:
        """``event`` to each session once, encoded once per outlet."""
        by_outlet: dict = {}
        for each in sessions.values():
            by_outlet.setdefault(each.outlet, []).append(each.endpoint)
        for outlet, endpoints in by_outlet.items():
            outlet.broadcast(endpoints, event)
        self.work_done += len(sessions)

    def _guest_name(self) -> str:
        while True:
            name = f"{GUEST_PREFIX}{next(self._guest_numbers)}"
            if name.casefold() not in self.sessions and name.casefold() not in self._claiming:
                return name

    def check_quit_message(self, message: str) -> None:
        """Raise TEXT_INVALID saying why ``message`` cannot be shown as a goodbye."""
        check_text("quit message", message, self.limits.max_quit_bytes, empty_ok=True)

    def disconnect(self, session: Session, reason: Reason, message: str = "") -> None:
        """A user is gone: its rooms and conversation peers are told why (and its goodbye,
        already checked with ``check_quit_message``)."""
        if self.sessions.get(session.key) is not session:
            return
        del self.sessions[session.key]
        self._user_index.discard(session.key)
        for hook in self.departed:
            hook(session, session.name)
        if session.detached_until is not None:
            session.detached_until = None
            self.held_sessions -= 1
        self.backplane.release_name(session.key)
        self.backplane.forget_user(session.key)
        for room in list(session.rooms.values()):
            self._remove_member(room, session, reason, message)
        for peer_key in session.conversations:
            peer = self.sessions.get(peer_key)
            if peer is not None:
                peer.conversations.discard(session.key)
                peer.outlet.deliver(peer.endpoint,
                                    ev.ChatClosed(session.name, reason, message))
            elif peer_key in self.remote_peers:
                self.backplane.send_to_user(peer_key, {"kind": "close", "from": session.name,
                                                       "reason": int(reason),
                                                       "message": message})
        session.conversations.clear()
