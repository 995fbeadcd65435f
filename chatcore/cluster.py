"""Cluster nodes on Redis: each node announces itself, keeps the table of live peers, and
measures the round trip to each peer through the broker.

Every key and channel starts with ``{cluster_name}:v1:`` and every message carries
``"v": 1``, so a later layout can run beside this one during a rolling upgrade (see
docs/cluster.md for the full list with TTLs):

- ``{p}:node:{name}``  string, the node's latest announcement (JSON), expires after the
  silence; a node's name is claimed with it at start-up.
- ``{p}:nodes``        sorted set of node names, scored by when their announcement expires
  (ms since the epoch): how a starting node learns who is there.
- ``{p}:control``      channel every node publishes its announcements (and goodbye) on.
- ``{p}:to:{name}``    channel of one node: the pongs of its announcements.

The peer table is pushed state: ``ListServers`` is answered from it at once, never by
asking the other nodes and waiting.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from . import events as ev
from .broker import Broker, BrokerUnavailable, RedisAddress, ReplyError, run_blocking
from .errors import ChatError, ErrorCode
from .events import Reason

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1            # the "v" of every message; bumped with the layout
KEY_VERSION = "v1"              # in every key and channel name
RTT_SMOOTHING = 1 / 8           # as for clients (RFC 6298's SRTT gain)

# A user name is held by a node instance for as long as that instance's alive key exists:
# the lease is the node's, refreshed with each announcement (one command per node, not one
# per user), so a dead node's names are free once its alive key expires.
CLAIM_NAME_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
RELEASE_NAME_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClusterStartError(Exception):
    """The node cannot join: Redis unreachable, or its name taken by a live node."""


def key_prefix(cluster_name: str) -> str:
    return f"{cluster_name}:{KEY_VERSION}"


@dataclass(eq=False, slots=True)
class Peer:
    """Another live node, as its announcements describe it."""
    name: str
    instance: str
    host: str
    port: int
    users: int
    load_permille: int
    last_seen: float                    # monotonic time of its last announcement
    last_seq: int = 0
    gaps: int = 0                       # announcements of this instance we never received
    rtt_seconds: float | None = None

    def record_rtt(self, sample_seconds: float) -> None:
        if self.rtt_seconds is None:
            self.rtt_seconds = sample_seconds
        else:
            self.rtt_seconds += (sample_seconds - self.rtt_seconds) * RTT_SMOOTHING

    def server_info(self) -> ev.ServerInfo:
        rtt_us = (ev.UNKNOWN_RTT if self.rtt_seconds is None
                  else min(int(self.rtt_seconds * 1_000_000), ev.UNKNOWN_RTT - 1))
        return ev.ServerInfo(self.name, self.host, self.port, self.users,
                             self.load_permille, rtt_us)


def claim_node_name(address: RedisAddress, cluster_name: str, name: str, host: str,
                    port: int, ttl_seconds: float, timeout_seconds: float,
                    instance: str) -> None:
    """At start-up (blocking): make ``name`` this node's, or raise ClusterStartError.

    A key held for the same advertised address is this node's previous life (killed, then
    restarted before its key expired) and is taken over.
    """
    key = f"{key_prefix(cluster_name)}:node:{name}"
    alive = ("SET", f"{key_prefix(cluster_name)}:alive:{instance}", name, "PX",
             int(ttl_seconds * 1000))
    claim = json.dumps({"v": ENVELOPE_VERSION, "kind": "claim", "node": name,
                        "host": host, "port": port})
    ttl_ms = int(ttl_seconds * 1000)
    try:
        set_reply, held, _ = run_blocking(address, [("SET", key, claim, "NX", "PX", ttl_ms),
                                                    ("GET", key), alive], timeout_seconds)
    except OSError as exc:
        raise ClusterStartError(f"cannot reach Redis at {address.url}: {exc}") from None
    if isinstance(set_reply, ReplyError):
        raise ClusterStartError(f"Redis at {address.url} refused: {set_reply}")
    if set_reply is not None:
        return
    try:
        owner = json.loads(held)
    except (TypeError, ValueError):
        owner = {}
    if (owner.get("host"), owner.get("port")) != (host, port):
        raise ClusterStartError(
            f"server name {name!r} is in use by the live node at "
            f"{owner.get('host')}:{owner.get('port')} (cluster {cluster_name!r}); choose "
            f"another --server-name, or wait {ttl_seconds:g}s if that node is gone")
    run_blocking(address, [("SET", key, claim, "PX", ttl_ms)], timeout_seconds)


class Cluster:
    """This node's membership: announcements out, peers in, RTT to each peer."""

    def __init__(self, reactor, config, address: RedisAddress, hub, load_permille,
                 instance: str):
        self.reactor = reactor
        self.config = config
        self.hub = hub
        node = self.node = hub.node                 # name and advertised address
        self.load_permille = load_permille
        self.instance = instance                    # tells a restarted node from its old life
        prefix = key_prefix(config.cluster_name)
        self.alive_prefix = f"{prefix}:alive:"
        self.alive_key = self.alive_prefix + instance
        self.name_prefix = f"{prefix}:name:"
        self.user_prefix = f"{prefix}:user:"
        self.name_conflicts = 0
        self.remote_nodes: dict[str, str] = {}      # user key on another node -> its node
        self.node_key = f"{prefix}:node:{node.name}"
        self.nodes_key = f"{prefix}:nodes"
        self.control_channel = f"{prefix}:control"
        self.inbox_channel = f"{prefix}:to:{node.name}"
        self._prefix = prefix
        self.peers: dict[str, Peer] = {}
        self.seq = 0
        self._unknown_versions: set = set()
        self._announce_timer = None
        self.broker = Broker(reactor, address, timeout_seconds=config.redis_timeout_seconds,
                             max_output_bytes=config.redis_max_output_bytes,
                             on_up=self._on_broker_up, on_down=self._on_broker_down)

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self.broker.subscribe(self.control_channel, self._on_control)
        self.broker.subscribe(self.inbox_channel, self._on_inbox)
        self.broker.start()
        self._announce_timer = self.reactor.call_later(self.config.node_announce_seconds,
                                                       self._on_announce_timer)

    def leave(self) -> None:
        """Clean shutdown: tell the peers at once instead of letting them wait the silence."""
        if self._announce_timer is not None:
            self._announce_timer.cancel()
            self._announce_timer = None
        self._publish_control({"kind": "leave"})
        self.broker.call("DEL", self.node_key, self.alive_key)     # frees its users' names
        self.broker.call("ZREM", self.nodes_key, self.node.name)

    def close(self) -> None:
        self.broker.flush()
        self.broker.close()

    # -- announcing ------------------------------------------------------------------------

    def _on_announce_timer(self) -> None:
        self.announce()
        self.drop_silent_peers()
        self._announce_timer = self.reactor.call_later(self.config.node_announce_seconds,
                                                       self._on_announce_timer)

    def announce(self) -> None:
        """Refresh this node's key and tell every peer how it is (users, load)."""
        if not self.broker.up:
            return
        node = self.node
        message = self._control_message({"kind": "announce", "host": node.host, "port": node.port,
                                  "users": len(self.hub.sessions),
                                  "load": self.load_permille(), "sent": time.monotonic()})
        silence_ms = int(self.config.node_silence_seconds * 1000)
        self.broker.call("SET", self.alive_key, node.name, "PX", silence_ms)
        self.broker.call("SET", self.node_key, message, "PX", silence_ms)
        now_ms = int(time.time() * 1000)
        self.broker.call("ZADD", self.nodes_key, now_ms + silence_ms, node.name)
        self.broker.call("ZREMRANGEBYSCORE", self.nodes_key, "-inf", now_ms)
        self.broker.publish(self.control_channel, message)

    def _envelope(self, fields: dict) -> bytes:
        return json.dumps({"v": ENVELOPE_VERSION, "node": self.node.name,
                           "instance": self.instance, **fields}).encode()

    def _control_message(self, fields: dict) -> bytes:
        """A message of the control stream: numbered, so receivers can count gaps."""
        self.seq += 1
        return self._envelope({"seq": self.seq, **fields})

    def _publish_control(self, fields: dict) -> None:
        self.broker.publish(self.control_channel, self._control_message(fields))

    def _on_broker_up(self) -> None:
        log.info("cluster %r: connected to Redis at %s as node %r (advertised %s:%d)",
                 self.config.cluster_name, self.broker.address.url, self.node.name,
                 self.node.host, self.node.port)
        self.announce()
        self._discover()
        self._reclaim_names()

    def _on_broker_down(self) -> None:
        log.warning("cluster %r: other nodes are out of reach until Redis is back",
                    self.config.cluster_name)

    def _discover(self) -> None:
        """Learn the nodes already there from their keys (announcements take over then)."""
        def got_names(names) -> None:
            names = [n for n in names if isinstance(n, bytes)
                     and n.decode() != self.node.name] if isinstance(names, list) else []
            if names:
                keys = [f"{self._prefix}:node:{n.decode()}" for n in names]
                self.broker.call("MGET", *keys, callback=got_nodes)

        def got_nodes(values) -> None:
            if isinstance(values, list):
                for value in values:
                    if value is not None:
                        self._on_message(value, from_discovery=True)

        now_ms = int(time.time() * 1000)
        self.broker.call("ZRANGEBYSCORE", self.nodes_key, now_ms, "+inf", callback=got_names)

    # -- peers -----------------------------------------------------------------------------

    def _on_control(self, channel: bytes, data: bytes) -> None:
        self._on_message(data)

    def _on_inbox(self, channel: bytes, data: bytes) -> None:
        self._on_message(data)

    def _on_message(self, data: bytes, from_discovery: bool = False) -> None:
        try:
            message = json.loads(data)
            version = message.get("v")
            kind, name = message["kind"], message["node"]
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("cluster: ignoring a malformed message: %.80r", data)
            return
        if version != ENVELOPE_VERSION:
            self._unknown_version(version, name)
            return
        if name == self.node.name:
            if message.get("instance") != self.instance and kind == "announce":
                log.error("cluster: another node announces itself as %r (at %s:%s)",
                          name, message.get("host"), message.get("port"))
            return
        if kind == "announce" or (kind == "claim" and from_discovery):
            self._on_announce(name, message, from_discovery)
        elif kind == "pong":
            self._on_pong(name, message)
        elif kind == "leave":
            peer = self.peers.pop(name, None)
            if peer is not None:
                log.info("cluster: node %r left", name)
                self._lost_users_of(name, Reason.SERVER_SHUTDOWN)

    def _unknown_version(self, version, origin) -> None:
        if version not in self._unknown_versions:
            self._unknown_versions.add(version)
            log.warning("cluster: ignoring messages of envelope version %r from %r "
                        "(this node speaks %d)", version, origin, ENVELOPE_VERSION)

    def _on_announce(self, name: str, message: dict, from_discovery: bool) -> None:
        now = time.monotonic()
        instance = message.get("instance", "")
        peer = self.peers.get(name)
        if peer is None or peer.instance != instance:
            if peer is None:
                log.info("cluster: node %r at %s:%s is up", name, message.get("host"),
                         message.get("port"))
            peer = self.peers[name] = Peer(name, instance, "", 0, 0, 0, now)
        peer.host = str(message.get("host", ""))
        peer.port = int(message.get("port", 0))
        peer.users = int(message.get("users", 0))
        peer.load_permille = int(message.get("load", 0))
        peer.last_seen = now
        seq = int(message.get("seq", 0))
        if not from_discovery:
            self._count_gap(peer, seq)
            # The pong goes to the announcer's own channel: its RTT through the broker.
            self.broker.publish(f"{self._prefix}:to:{name}", self._envelope(
                {"kind": "pong", "echo": message.get("sent", 0)}))
        peer.last_seq = max(peer.last_seq, seq)

    def _count_gap(self, peer: Peer, seq: int) -> None:
        if peer.last_seq and seq > peer.last_seq + 1:
            missed = seq - peer.last_seq - 1
            peer.gaps += missed
            log.warning("cluster: missed %d message(s) from node %r (seq %d after %d)",
                        missed, peer.name, seq, peer.last_seq)

    def _on_pong(self, name: str, message: dict) -> None:
        peer = self.peers.get(name)
        if peer is None:
            return
        sent = message.get("echo")
        if isinstance(sent, int | float):
            peer.record_rtt(max(0.0, time.monotonic() - sent))

    def drop_silent_peers(self) -> None:
        deadline = time.monotonic() - self.config.node_silence_seconds
        for name, peer in list(self.peers.items()):
            if peer.last_seen < deadline:
                del self.peers[name]
                log.warning("cluster: node %r silent for %gs: dropped", name,
                            self.config.node_silence_seconds)
                self._lost_users_of(name, Reason.SERVER_LOST)

    def _lost_users_of(self, node_name: str, reason: Reason) -> None:
        keys = [key for key, node in self.remote_nodes.items() if node == node_name]
        for key in keys:
            del self.remote_nodes[key]
        self.hub.remote_users_lost(keys, reason)

    # -- names -----------------------------------------------------------------------------

    def claim_name(self, key: str, done) -> None:
        """The hub's backplane: claim a casefolded user name cluster-wide (see LocalBackplane)."""
        if not self.broker.up:
            done(self._unreachable())
            return

        def answered(reply) -> None:
            if isinstance(reply, BrokerUnavailable):
                done(self._unreachable())
            elif isinstance(reply, ReplyError):
                log.error("cluster: Redis refused a name claim: %s", reply)
                done(self._unreachable())
            elif reply == 1:
                # Welcome only once this node hears the user's channel, so a message sent
                # to the user right after cannot find it missing.
                self._subscribe_user(key, lambda ok: subscribed(ok))
            else:
                done(False)

        def subscribed(ok: bool) -> None:
            if ok:
                done(True)
            else:
                self.release_name(key)
                done(self._unreachable())

        self.broker.call("EVAL", CLAIM_NAME_SCRIPT, 1, self.name_prefix + key, self.instance,
                         self.alive_prefix, callback=answered)

    def release_name(self, key: str) -> None:
        self.broker.unsubscribe(self.user_prefix + key)
        self.broker.call("EVAL", RELEASE_NAME_SCRIPT, 1, self.name_prefix + key,
                         self.instance)

    # -- users of other nodes --------------------------------------------------------------

    def _subscribe_user(self, key: str, on_subscribed) -> None:
        self.broker.subscribe(self.user_prefix + key,
                              lambda channel, data: self._on_user_message(key, data),
                              on_subscribed)

    def send_to_user(self, key: str, message: dict, done=None) -> None:
        """The hub's backplane: one PUBLISH on the user's channel; its subscriber count says
        whether any node has that user."""
        if not self.broker.up:
            if done is not None:
                done(self._unreachable())
            return

        def answered(reply) -> None:
            if isinstance(reply, int):
                done(reply > 0)
            else:
                done(self._unreachable())

        self.broker.publish(self.user_prefix + key, self._envelope(message),
                            callback=answered if done is not None else None)

    def _on_user_message(self, key: str, data: bytes) -> None:
        try:
            message = json.loads(data)
            version, origin, sender = message["v"], message["node"], message["from"]
        except (ValueError, KeyError, TypeError):
            log.warning("cluster: ignoring a malformed user message: %.80r", data)
            return
        if version != ENVELOPE_VERSION:
            self._unknown_version(version, origin)
            return
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

    def _unreachable(self) -> ChatError:
        return ChatError(ErrorCode.CLUSTER_UNREACHABLE,
                         "the cluster is out of reach (Redis); try again shortly")

    def _reclaim_names(self) -> None:
        """After an outage, hold this node's names again. One that a user of another node
        took meanwhile (possible once the outage outlasted the alive key) stays with both
        users until one leaves; it is logged."""
        for key, session in list(self.hub.sessions.items()):
            def answered(reply, name=session.name) -> None:
                if reply == 0:
                    self.name_conflicts += 1
                    log.warning("cluster: name %r was claimed on another node while Redis "
                                "was out of reach; both users keep it until one leaves", name)
            self.broker.call("EVAL", CLAIM_NAME_SCRIPT, 1, self.name_prefix + key,
                             self.instance, self.alive_prefix, callback=answered)

    # -- for the hub -----------------------------------------------------------------------

    def peer_servers(self) -> list[ev.ServerInfo]:
        """Every live peer, by name."""
        return [self.peers[name].server_info() for name in sorted(self.peers)]
