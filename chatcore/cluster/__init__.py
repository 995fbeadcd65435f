"""The cluster on Redis (docs/cluster.md): a ``Cluster`` is this node's backplane of the hub.

It is a facade over one module per job, sharing the state set up here:

- ``envelope``: the versioned key prefix, the message envelope and its version check;
- ``node``: announcements, the live peers with the RTT to each, the server list, and the
  node name claimed at start-up (``claim_node_name``);
- ``names``: user names claimed cluster-wide;
- ``users``: each user's channel, the direct chats carried on it, sessions taken over;
- ``presence_users``: every user of the cluster in Redis (user list, whois, resume records);
- ``rooms``: each room's channel, its events in the broker's order, sequence numbers;
- ``roomstate``: who is in which room, kept in Redis, and a dead node's members removed;
- ``roomlists``: the room list and member lists, paged from that state;
- ``moderation``: room moderation decided in that state (``moderation_scripts``).

A server without ``--redis`` never imports this package (nor hiredis).
"""
from __future__ import annotations

from ..broker import Broker, RedisAddress
from ..events import Reason
from .envelope import ENVELOPE_VERSION, KEY_VERSION, Envelopes, key_prefix, log, unreachable
from .moderation import ClusterModeration
from .names import CLAIM_NAME_SCRIPT, RELEASE_NAME_SCRIPT, Names
from .node import RTT_SMOOTHING, ClusterStartError, Nodes, Peer, claim_node_name
from .presence_users import SharedUsers
from .roomlists import RoomLists
from .envelope import ROOM_EVENT_KINDS
from .rooms import ClusterRooms
from .users import Users

__all__ = ["CLAIM_NAME_SCRIPT", "ENVELOPE_VERSION", "KEY_VERSION", "RELEASE_NAME_SCRIPT",
           "ROOM_EVENT_KINDS",
           "RTT_SMOOTHING", "Cluster", "ClusterStartError", "Peer", "claim_node_name",
           "key_prefix", "unreachable"]


class Cluster(Envelopes, Nodes, Names, Users, SharedUsers, ClusterRooms, ClusterModeration,
              RoomLists):
    """This node's membership and backplane: announcements out, peers in, RTT to each peer,
    names claimed, users reached and rooms shared cluster-wide."""

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
        self.rooms_key = f"{prefix}:rooms"
        self.memberships_key = f"{prefix}:memberships:{instance}"
        self.instances_key = f"{prefix}:instances"
        self.room_links: dict = {}                  # room key -> RoomLink (rooms.py)
        self.room_gaps = 0                          # room messages missed, all channels
        self._batching: list = []                   # RoomLinks with a batch this turn
        self.room_batches_sent = 0
        self._unknown_room_kinds: set = set()
        self._announce_timer = None
        self._lease_held = False
        self._init_users()
        self._init_shared_users()
        self.broker = Broker(reactor, address, timeout_seconds=config.redis_timeout_seconds,
                             max_output_bytes=config.redis_max_output_bytes,
                             on_up=self._on_broker_up, on_down=self._on_broker_down,
                             before_flush=self._before_flush)

    # -- life ------------------------------------------------------------------------------

    def _before_flush(self) -> None:
        """The turn's last commands, just before the broker writes: room batches, then the
        records of users whose rooms changed."""
        self._flush_batches()
        self._write_rooms_changed()

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
        self._clean_instance(self.instance)                         # its room memberships
        self.broker.call("DEL", self.node_key, self.alive_key)     # frees its users' names
        self.broker.call("ZREM", self.nodes_key, self.node.name)
        self._forget_instance(self.instance)                        # and their records

    def close(self) -> None:
        self.broker.flush()
        self.broker.close()

    def _on_broker_up(self) -> None:
        log.info("cluster %r: connected to Redis at %s as node %r (advertised %s:%d)",
                 self.config.cluster_name, self.broker.address.url, self.node.name,
                 self.node.host, self.node.port)
        self._lease_held = False        # claimed again below: no lapse to report
        self.announce()
        self._discover()
        self._reclaim_names()
        self._republish_users()
        self._rooms_up()

    def _on_broker_down(self) -> None:
        log.warning("cluster %r: other nodes are out of reach until Redis is back",
                    self.config.cluster_name)
        self._rooms_down()

    def _node_gone(self, node_name: str, reason: Reason) -> None:
        """A peer was dropped (silent) or left: what its users had with ours ends."""
        self._users_of_node_lost(node_name, reason)
        self._forget_node_users(node_name)
        self._rooms_node_lost(node_name, reason)
