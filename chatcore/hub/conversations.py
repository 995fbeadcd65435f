"""Direct conversations: opening, closing, direct messages and actions, away replies, and
the conversations with users of other cluster nodes (through the backplane)."""
from __future__ import annotations

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from .checks import answer_or_return, quote
from .model import DETACHED, Session


class Conversations:
    """The conversations part of ``Hub``. Its state is the Hub's."""

    def _peer(self, session: Session, peer_name: str) -> Session | None:
        """The local user ``peer_name``, or None for one that may be on another node."""
        peer = self.sessions.get(peer_name.casefold())
        if peer is session:
            raise ChatError(ErrorCode.CANNOT_CHAT_SELF, "you cannot chat with yourself")
        return peer

    def _open(self, session: Session, peer: Session) -> None:
        if peer.key not in session.conversations:
            session.conversations.add(peer.key)
            peer.conversations.add(session.key)
            peer.outlet.deliver(peer.endpoint, ev.ChatOpened(session.name))
            self._chats_changed(session, peer)

    def _chats_changed(self, *sessions: Session) -> None:
        """Open chats are part of what a resume on another node restores: kept current."""
        for session in sessions:
            self.backplane.publish_user(session)

    def open_chat(self, session: Session, peer_name: str, done=None):
        """Open a conversation; ``done(None)`` or ``done(ChatError)`` (see ``connect``)."""
        self._touch(session)
        peer = self._peer(session, peer_name)
        if peer is not None:
            self._open(session, peer)
            return answer_or_return(done, None)
        return self._to_remote(session, peer_name, {"kind": "open"}, None, done)

    def close_chat(self, session: Session, peer_name: str, done=None):
        self._touch(session)
        peer = self._peer(session, peer_name)
        key = peer_name.casefold()
        if key not in session.conversations:
            no_conversation = ChatError(ErrorCode.NO_CONVERSATION,
                                        f"no conversation with {quote(peer_name)} is open")
            if peer is not None:
                raise no_conversation
            # NO_CONVERSATION if the user is on another node, else NO_SUCH_USER.
            return self._to_remote(session, peer_name, {"kind": "probe"}, no_conversation,
                                   done, opens=False)
        session.conversations.discard(key)
        if peer is not None:
            peer.conversations.discard(session.key)
            peer.outlet.deliver(peer.endpoint, ev.ChatClosed(session.name, Reason.CLOSED))
            self._chats_changed(session, peer)
            return answer_or_return(done, None)
        self._forget_remote(key)
        self._chats_changed(session)
        return self._to_remote(session, peer_name,
                               {"kind": "close", "reason": int(Reason.CLOSED)}, None, done,
                               opens=False)

    def send_direct(self, session: Session, peer_name: str, text: str, done=None,
                    away_reply: bool = True):
        """Deliver ``text`` to one user; (msg_id, timestamp_ms) for the Ack, returned or
        given to ``done`` (see ``connect``: a user of another node takes a round trip).
        ``away_reply=False``: no away reply for this message, from this node or the
        recipient's (an IRC NOTICE, which is never answered; or the caller tells the
        sender itself: ``remote_away_due``, from a user of another node's record)."""
        return self._to_user(session, peer_name, text, "direct", ev.DirectMessage, done,
                             away_reply)

    def remote_away_due(self, session: Session, name: str, away: str) -> bool:
        """Whether ``session`` is to be told now that ``name``, a user of another node, is
        away with ``away`` (read from its user record): once per away message, and again
        once it was seen back (this node sees another's away messages, not its periods)."""
        key = name.casefold()
        if not away:
            if session._remote_away_told:
                session._remote_away_told.pop(key, None)
            return False
        told = session.remote_away_told
        if told.get(key) == away:
            return False
        told[key] = away
        return True

    # -- users of other nodes --------------------------------------------------------------

    def _to_remote(self, session: Session, peer_name: str, message: dict, result, done,
                   opens: bool = True):
        """Send a conversation message to a user who is not on this node, via the backplane;
        NO_SUCH_USER if no node has them. ``result`` is the outcome otherwise (a ChatError
        result is raised or given like any refusal); ``opens``: the conversation is open
        from then on."""
        key = peer_name.casefold()
        outcome: list = []
        finish = done or outcome.append

        def answered(answer) -> None:
            if isinstance(answer, ChatError):
                finish(answer)
            elif not answer:
                self._forget_remote(key)
                session.conversations.discard(key)
                finish(ChatError(ErrorCode.NO_SUCH_USER,
                                 f"no user named {quote(peer_name)} is online"))
            else:
                if opens and self.sessions.get(session.key) is session \
                        and key not in session.conversations:
                    session.conversations.add(key)
                    self.remote_peers.setdefault(key, peer_name)
                    self._chats_changed(session)
                finish(result)

        self.backplane.send_to_user(key, {"from": session.name, **message}, answered)
        if done is not None:
            return None
        if not outcome:
            raise RuntimeError("this backplane answers later: pass done")
        if isinstance(outcome[0], ChatError):
            raise outcome[0]
        return outcome[0]

    def _forget_remote(self, key: str) -> None:
        if not any(key in s.conversations for s in self.sessions.values()):
            self.remote_peers.pop(key, None)

    def receive_from_user(self, recipient_key: str, message: dict) -> None:
        """The backplane delivers what a user of another node sent to a local user."""
        recipient = self.sessions.get(recipient_key)
        sender = message.get("from", "")
        if recipient is None or not sender:
            return
        sender_key = sender.casefold()
        kind = message.get("kind")
        hook = self.user_message_hooks.get(kind)
        if hook is not None:            # a front end's own (IRC's CTCP, SETNAME)
            hook(recipient, message)
            return
        if kind == "close":
            if sender_key in recipient.conversations:
                recipient.conversations.discard(sender_key)
                self._forget_remote(sender_key)
                recipient.outlet.deliver(recipient.endpoint, ev.ChatClosed(
                    sender, int(message.get("reason", Reason.CLOSED)),
                    str(message.get("message", ""))))
                self._chats_changed(recipient)
            return
        if kind == "away":
            recipient.outlet.deliver(recipient.endpoint,
                                     ev.AwayReply(sender, str(message.get("text", ""))))
            return
        if kind == "renamed":
            self._remote_renamed(recipient, str(message.get("old", "")), sender)
            return
        if kind == "conflict":
            recipient.outlet.deliver(recipient.endpoint, ev.Error(
                ErrorCode.NAME_CONFLICT, False, str(message.get("text", ""))))
            return
        if kind not in ("open", "direct", "action"):
            return
        if sender_key not in recipient.conversations:
            recipient.conversations.add(sender_key)
            self.remote_peers[sender_key] = sender
            recipient.outlet.deliver(recipient.endpoint, ev.ChatOpened(sender))
            self._chats_changed(recipient)
        if kind == "open":
            return
        event = ev.DirectMessage if kind == "direct" else ev.DirectAction
        recipient.outlet.deliver(recipient.endpoint, event(
            sender, int(message["msg_id"]), int(message["ts"]), str(message["text"])))
        self.work_done += 1
        if recipient.away and sender_key not in recipient.away_replied \
                and not message.get("no_away_reply"):
            # The away reply goes back the way the message came: once per sender per period.
            recipient.away_replied.add(sender_key)
            self.backplane.send_to_user(sender_key, {"kind": "away", "from": recipient.name,
                                                     "text": recipient.away})

    def _remote_renamed(self, recipient: Session, old_name: str, new_name: str) -> None:
        """A conversation partner on another node took a new name."""
        old_key, new_key = old_name.casefold(), new_name.casefold()
        if old_key not in recipient.conversations:
            return
        if old_key != new_key:
            recipient.conversations.discard(old_key)
            recipient.conversations.add(new_key)
            if old_key in recipient.away_replied:
                recipient.away_replied.discard(old_key)
                recipient.away_replied.add(new_key)
            self._forget_remote(old_key)
        self.remote_peers[new_key] = new_name
        if self._first_told_of_rename(recipient, old_name, new_name):   # once, rooms too
            recipient.outlet.deliver(recipient.endpoint, ev.NameChanged(old_name, new_name))
            self.work_done += 1

    def remote_users_lost(self, keys, reason: Reason = Reason.SERVER_LOST) -> None:
        """Users of a node that is gone: their conversations end, with ``reason``."""
        for key in keys:
            if key in self.sessions:        # resumed here meanwhile: not lost
                continue
            name = self.remote_peers.pop(key, None)
            if name is None:
                continue
            for session in self.sessions.values():
                if key in session.conversations:
                    session.conversations.discard(key)
                    session.outlet.deliver(session.endpoint, ev.ChatClosed(name, reason))

    def send_direct_action(self, session: Session, peer_name: str, text: str, done=None,
                           away_reply: bool = True):
        """An action ("/me waves") to one user, like ``send_direct``."""
        return self._to_user(session, peer_name, text, "action", ev.DirectAction, done,
                             away_reply)

    def _to_user(self, session: Session, peer_name: str, text: str, kind: str, event_type,
                 done, away_reply: bool = True):
        """A message or action (``event_type``; ``kind`` on a user channel) to one user."""
        self._touch(session)
        peer = self._peer(session, peer_name)
        self._check_text(text)
        msg_id, timestamp_ms = self._stamp()
        if peer is None:
            message = {"kind": kind, "msg_id": msg_id, "ts": timestamp_ms, "text": text}
            if not away_reply:
                message["no_away_reply"] = 1
            return self._to_remote(session, peer_name, message, (msg_id, timestamp_ms), done)
        self._check_attached(peer)
        self._open(session, peer)
        peer.outlet.deliver(peer.endpoint, event_type(session.name, msg_id, timestamp_ms, text))
        self.work_done += 1
        if peer.away and away_reply:
            self._away_reply(session, peer)
        return answer_or_return(done, (msg_id, timestamp_ms))

    def _check_attached(self, peer: Session) -> None:
        if peer.outlet is DETACHED:
            raise ChatError(ErrorCode.USER_RECONNECTING,
                            f"{peer.name}'s connection dropped; they may be back within "
                            f"{self.limits.resume_grace_seconds:g} s. Message not delivered")

    def _away_reply(self, sender: Session, peer: Session) -> None:
        if sender.key not in peer.away_replied:
            peer.away_replied.add(sender.key)
            sender.outlet.deliver(sender.endpoint, ev.AwayReply(peer.name, peer.away))
            self.work_done += 1
