"""Nodes: this node's announcements, the table of live peers with the round trip to each
(through the broker), failure detection, and the server list.

- ``{p}:node:{name}``  string, the node's latest announcement (JSON), expires after the
  silence; a node's name is claimed with it at start-up.
- ``{p}:alive:{instance}`` string, the node's name, same TTL: while it exists the
  instance's user names are held.
- ``{p}:nodes``        sorted set of node names, scored by when their announcement expires
  (ms since the epoch): how a starting node learns who is there.
- ``{p}:control``      channel every node publishes its announcements (and goodbye) on.
- ``{p}:to:{name}``    channel of one node: the pongs of its announcements.

The peer table is pushed state: ``ListServers`` is answered from it at once, never by
asking the other nodes and waiting.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .. import events as ev
from ..broker import RedisAddress, ReplyError, run_blocking
from ..events import Reason
from .envelope import ENVELOPE_VERSION, ROOM_BATCH_FORMAT, key_prefix, log

RTT_SMOOTHING = 1 / 8           # as for clients (RFC 6298's SRTT gain)


class ClusterStartError(Exception):
    """The node cannot join: Redis unreachable, or its name taken by a live node."""


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
    room_batches: bool = False          # it reads room batches (envelope format 2)

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


class Nodes:
    """The membership part of ``Cluster``: announcements out, peers in, RTT to each peer.
    Its state is the Cluster's."""

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
                                  "load": self.load_permille(), "sent": time.monotonic(),
                                  "room_batches": ROOM_BATCH_FORMAT})
        silence_ms = int(self.config.node_silence_seconds * 1000)
        # PEXPIRE answers 0 when the alive key was gone: the lease lapsed (this node was
        # stalled, or its link silent, for longer than the silence), so other nodes may
        # have claimed its users' names meanwhile.
        self.broker.call("PEXPIRE", self.alive_key, silence_ms, callback=self._lease_renewed)
        self.broker.call("SET", self.alive_key, node.name, "PX", silence_ms)
        self.broker.call("SET", self.node_key, message, "PX", silence_ms)
        now_ms = int(time.time() * 1000)
        self.broker.call("ZADD", self.nodes_key, now_ms + silence_ms, node.name)
        self.broker.call("ZREMRANGEBYSCORE", self.nodes_key, "-inf", now_ms)
        self._keep_instance(silence_ms)
        self.broker.publish(self.control_channel, message)
        self.refresh_users()

    def _lease_renewed(self, reply) -> None:
        if reply == 0 and self._lease_held and self.hub.sessions:
            log.warning("cluster: this node's lease had lapsed; claiming its %d name(s) again",
                        len(self.hub.sessions))
            self._reclaim_names()
        self._lease_held = isinstance(reply, int)

    def _control_message(self, fields: dict) -> bytes:
        """A message of the control stream: numbered, so receivers can count gaps."""
        self.seq += 1
        return self._envelope({"seq": self.seq, **fields})

    def _publish_control(self, fields: dict) -> None:
        self.broker.publish(self.control_channel, self._control_message(fields))

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
        message = self._decode(data, "message", ("kind", "node"))
        if message is None:
            return
        kind, name = message["kind"], message["node"]
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
                self._node_gone(name, Reason.SERVER_SHUTDOWN)

    def _on_announce(self, name: str, message: dict, from_discovery: bool) -> None:
        now = time.monotonic()
        instance = message.get("instance", "")
        peer = self.peers.get(name)
        if peer is None or peer.instance != instance:
            if peer is None:
                log.info("cluster: node %r at %s:%s is up", name, message.get("host"),
                         message.get("port"))
            elif peer.instance and instance:
                # Restarted before its silence ran out: its old life's users are gone.
                log.warning("cluster: node %r restarted", name)
                self._node_gone(name, Reason.SERVER_LOST)
            peer = self.peers[name] = Peer(name, instance, "", 0, 0, 0, now)
        peer.host = str(message.get("host", ""))
        peer.port = int(message.get("port", 0))
        peer.users = int(message.get("users", 0))
        peer.load_permille = int(message.get("load", 0))
        peer.room_batches = message.get("room_batches") == ROOM_BATCH_FORMAT
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
                self._node_gone(name, Reason.SERVER_LOST)

    def peer_servers(self) -> list[ev.ServerInfo]:
        """The hub's backplane: every live peer, by name."""
        return [self.peers[name].server_info() for name in sorted(self.peers)]
