"""Users of other nodes: each user's channel, and the direct chats carried on it.

- ``{p}:user:{casefolded name}`` channel, messages to one user from users of other nodes;
  the user's node subscribes while the user is connected.
"""
from __future__ import annotations

from ..events import Reason
from .envelope import unreachable


class Users:
    """The users part of ``Cluster``. Its state is the Cluster's (``remote_nodes``)."""

    def _subscribe_user(self, key: str, on_subscribed) -> None:
        self.broker.subscribe(self.user_prefix + key,
                              lambda channel, data: self._on_user_message(key, data),
                              on_subscribed)

    def _unsubscribe_user(self, key: str) -> None:
        self.broker.unsubscribe(self.user_prefix + key)

    def send_to_user(self, key: str, message: dict, done=None) -> None:
        """The hub's backplane: one PUBLISH on the user's channel; its subscriber count says
        whether any node has that user."""
        if not self.broker.up:
            if done is not None:
                done(unreachable())
            return

        def answered(reply) -> None:
            if isinstance(reply, int):
                done(reply > 0)
            else:
                done(unreachable())

        self.broker.publish(self.user_prefix + key, self._envelope(message),
                            callback=answered if done is not None else None)

    def _on_user_message(self, key: str, data: bytes) -> None:
        message = self._decode(data, "user message", ("node", "from"))
        if message is None:
            return
        origin, sender = message["node"], message["from"]
        sender_key = str(sender).casefold()
        if origin != self.node.name:
            self.remote_nodes[sender_key] = origin
        if message.get("kind") in ("peer", "probe"):     # where a user is; does it exist
            return
        recipient = self.hub.sessions.get(key)
        new = recipient is not None and sender_key not in recipient.conversations
        self.hub.receive_from_user(key, message)
        if new and message.get("kind") in ("open", "direct"):
            # Tell the sender's node where this user is, so it can end the conversation
            # with SERVER_LOST if this node dies.
            self.send_to_user(sender_key, {"kind": "peer", "from": recipient.name})

    def _users_of_node_lost(self, node_name: str, reason: Reason) -> None:
        """A node is gone: end local users' conversations with its users, with ``reason``."""
        keys = [key for key, node in self.remote_nodes.items() if node == node_name]
        for key in keys:
            del self.remote_nodes[key]
        self.hub.remote_users_lost(keys, reason)
