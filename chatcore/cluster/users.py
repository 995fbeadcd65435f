"""Users of other nodes: each user's channel, the direct chats carried on it, and a session
taken over from another node (resume).

- ``{p}:user:{casefolded name}`` channel, messages to one user from users of other nodes;
  the user's node subscribes while the user is connected.

Every message published on a user channel carries ``seq``, numbered per (origin instance,
channel) from 1; the receiving node counts per (origin instance, channel) and logs a jump
(pub/sub is at-most-once: this is how a loss shows). A number lower than the last one seen
is the origin's counter starting over (it keeps at most ``MAX_SEQ_CHANNELS`` counters).
"""
from __future__ import annotations

import json

from ..broker import BrokerUnavailable, ReplyError
from ..events import Reason
from .envelope import log, unreachable
from .presence_users import token_hash

MAX_SEQ_CHANNELS = 65536        # user channels one node numbers its messages for at once

# ARGV: prefix, key, sha256 of the presented token, this instance, sha256 of the session's
# next token, this node's ``who`` entry prefix (roomstate: instance TAB node TAB). The name is taken over from its holder when the token
# matches the holder's resume record: {holder, record, room keys kept}. The record moves to
# this instance's hash with the next token in the same step, so the session can move on
# again at once. So do the user's room memberships (``who`` entries, the instances'
# membership sets), in the same step, before the holder hears of the move: its leave of a
# room then finds the entry another's and changes nothing (the member's operator or voice
# flag and its place in the joining order stay, no heir is named), and a dead holder's
# clean-up passes them by.
TAKE_OVER_SCRIPT = """
local p, k, inst = ARGV[1], ARGV[2], ARGV[4]
local owner = redis.call('GET', p .. ':name:' .. k)
if not owner or owner == inst then return false end
local rec = redis.call('HGET', p .. ':sessions:' .. owner, k)
if not rec then return false end
local decoded = cjson.decode(rec)
if decoded['token'] ~= ARGV[3] then return false end
redis.call('SET', p .. ':name:' .. k, inst)
redis.call('HDEL', p .. ':sessions:' .. owner, k)
local kept, rooms, old = {}, decoded['room_keys'], owner .. '\t'
if type(rooms) == 'table' and type(decoded['name']) == 'string' then
  local entry = ARGV[6] .. decoded['name']
  for _, room in ipairs(rooms) do
    local who = p .. ':room:' .. tostring(room) .. ':who'
    local held = redis.call('HGET', who, k)
    if held and string.sub(held, 1, #old) == old then
      redis.call('HSET', who, k, entry)
      redis.call('SREM', p .. ':memberships:' .. owner, room .. '\t' .. k)
      redis.call('SADD', p .. ':memberships:' .. inst, room .. '\t' .. k)
      kept[#kept + 1] = room
    end
  end
end
decoded['token'] = ARGV[5]
redis.call('HSET', p .. ':sessions:' .. inst, k, cjson.encode(decoded))
return {owner, rec, kept}
"""


class Users:
    """The users part of ``Cluster``. Its state is the Cluster's (``remote_nodes``)."""

    def _init_users(self) -> None:
        self._out_seqs: dict[str, int] = {}         # user channel -> last seq published
        self._in_seqs: dict[str, dict] = {}         # local user key -> {instance: last seq}
        self.user_message_gaps = 0

    def _subscribe_user(self, key: str, on_subscribed) -> None:
        self.broker.subscribe(self.user_prefix + key,
                              lambda channel, data: self._on_user_message(key, data),
                              on_subscribed)

    def _unsubscribe_user(self, key: str) -> None:
        self._in_seqs.pop(key, None)
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

        seqs = self._out_seqs
        if key not in seqs and len(seqs) >= MAX_SEQ_CHANNELS:
            seqs.clear()                # receivers see the numbers start over, not a gap
        seq = seqs[key] = seqs.get(key, 0) + 1
        self.broker.publish(self.user_prefix + key, self._envelope({**message, "seq": seq}),
                            callback=answered if done is not None else None)

    def _count_user_gap(self, key: str, message: dict) -> None:
        seq, instance = message.get("seq"), message.get("instance")
        if not isinstance(seq, int) or not instance:
            return
        seen = self._in_seqs.setdefault(key, {})
        last = seen.get(instance)
        if last is not None and seq > last + 1:
            missed = seq - last - 1
            self.user_message_gaps += missed
            log.warning("cluster: missed %d message(s) from node %r to user %r (seq %d "
                        "after %d)", missed, message.get("node"), key, seq, last)
        seen[instance] = seq

    def _on_user_message(self, key: str, data: bytes) -> None:
        message = self._decode(data, "user message", ("node", "from"))
        if message is None:
            return
        self._count_user_gap(key, message)
        origin, sender = message["node"], message["from"]
        sender_key = str(sender).casefold()
        kind = message.get("kind")
        if kind == "moved":
            session = self.hub.sessions.get(key)
            if (message.get("holder") == self.instance and session is not None
                    and token_hash(session.resume_token) == message.get("token")):
                self._moved_away(key, origin)
            return
        if message.get("instance") == self.instance and kind == "conflict":
            return                      # our own notice to the name's holder
        if origin != self.node.name:
            self.remote_nodes[sender_key] = origin
        if kind in ("peer", "probe"):   # where a user is; does it exist
            return
        if kind == "invite":            # to a room (cluster.moderation)
            self.hub.invitation_arrived(key, message)
            return
        recipient = self.hub.sessions.get(key)
        new = recipient is not None and sender_key not in recipient.conversations
        self.hub.receive_from_user(key, message)
        if new and kind in ("open", "direct", "action"):
            # Tell the sender's node where this user is, so it can end the conversation
            # with SERVER_LOST if this node dies.
            self.send_to_user(sender_key, {"kind": "peer", "from": recipient.name})

    def _users_of_node_lost(self, node_name: str, reason: Reason) -> None:
        """A node is gone: end local users' conversations with its users, with ``reason``."""
        keys = [key for key, node in self.remote_nodes.items() if node == node_name]
        for key in keys:
            del self.remote_nodes[key]
        self.hub.remote_users_lost(keys, reason)

    # -- a session moving between nodes ----------------------------------------------------

    def take_over_session(self, key: str, token: str, token_after: str, done) -> None:
        """The hub's backplane: take the session ``key`` over from the node holding it, if
        ``token`` matches its resume record (which becomes ``token_after``'s); then tell that node (on the user's channel,
        which it hears) to let it go, and the user's chat partners where it is now."""
        if not self.broker.up:
            done(unreachable())
            return

        def answered(reply) -> None:
            if isinstance(reply, BrokerUnavailable | ReplyError):
                if isinstance(reply, ReplyError):
                    log.error("cluster: Redis refused a session take-over: %s", reply)
                done(unreachable())
                return
            if not isinstance(reply, list) or len(reply) != 3:
                done(None)
                return
            holder, raw = reply[0].decode(), reply[1]
            try:
                record = json.loads(raw)
            except ValueError:
                done(None)
                return
            record["kept_rooms"] = [room.decode() for room in reply[2] or ()]
            self.remote_nodes.pop(key, None)
            self._subscribe_user(key, lambda ok: subscribed(ok, holder, record))

        def subscribed(ok: bool, holder: str, record: dict) -> None:
            if not ok:
                self.release_name(key)
                done(unreachable())
                return
            name = str(record.get("name", key))
            # ``token`` names the session taken over: a later session of the same name on
            # that instance (this move read late, after the user came back) is not it.
            self.send_to_user(key, {"kind": "moved", "from": name, "holder": holder,
                                    "token": record.get("token", "")})
            for peer_name in record.get("chats", ()):
                peer_key = str(peer_name).casefold()
                if peer_key not in self.hub.sessions:
                    self.send_to_user(peer_key, {"kind": "peer", "from": name})
            log.info("cluster: %s resumed here, taken over from instance %s", name, holder)
            done(record)

        self.broker.call("EVAL", TAKE_OVER_SCRIPT, 0, self._prefix, key, token_hash(token),
                         self.instance, token_hash(token_after), self._who_prefix(),
                         callback=answered)

    def _moved_away(self, key: str, node_name: str) -> None:
        """Our user ``key`` resumed on ``node_name``: let the session go (the name and its
        records are that node's now)."""
        self._published.pop(key, None)
        self._unsubscribe_user(key)
        self.remote_nodes[key] = node_name
        if self.hub.moved_elsewhere(key, node_name):
            log.info("cluster: %s resumed on node %r: session handed over", key, node_name)
