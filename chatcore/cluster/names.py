"""User names unique cluster-wide: claimed atomically in Redis before the Welcome, held by
the node instance's lease, released when the user leaves, claimed again after an outage.

- ``{p}:name:{casefolded name}`` string, the instance holding the name: free once that
  instance's alive key (``{p}:alive:{instance}``, see ``node``) is gone.
"""
from __future__ import annotations

import time

from ..broker import BrokerUnavailable, ReplyError
from .envelope import log, unreachable

# A user name is held by a node instance for as long as that instance's alive key exists:
# the lease is the node's, refreshed with each announcement (one command per node, not one
# per user), so a dead node's names are free once its alive key expires.
#
# With a user arriving (ARGV[3..7]: prefix, key, sessions ttl ms, user record, resume record)
# the script also writes the user's records, as WRITE_USERS_SCRIPT (presence_users) does, so
# claim and records are one round trip, and a refused claim writes nothing.
CLAIM_NAME_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] then
  local p, k, inst = ARGV[3], ARGV[4], ARGV[1]
  redis.call('HSET', p .. ':userinfo', k, ARGV[6])
  redis.call('ZADD', p .. ':users', 0, k)
  redis.call('SADD', p .. ':iusers:' .. inst, k)
  redis.call('HSET', p .. ':sessions:' .. inst, k, ARGV[7])
  redis.call('PEXPIRE', p .. ':sessions:' .. inst, ARGV[5])
end
return 1
"""
RELEASE_NAME_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Names:
    """The names part of ``Cluster``. Its state is the Cluster's."""

    def claim_name(self, key: str, done) -> None:
        """The hub's backplane: claim a casefolded user name cluster-wide (see LocalBackplane).

        The claim script and the subscription of the user's channel go out together (one
        round trip, not two): the answer waits for both, so a message sent to the user right
        after cannot find it missing; a refused claim drops the subscription again."""
        self._claim(key, done, ())

    def claim_user(self, session, done) -> None:
        """The hub's backplane: claim an arriving user's name and write its records (user
        list, whois, resume) in the same script: Hello -> Welcome is one round trip."""
        key = session.key
        detector, user, resume = self._records(session, time.monotonic(),
                                               int(time.time() * 1000))
        self._published[key] = detector
        self._claim(key, done, (self._prefix, key, self._sessions_ttl_ms(), user, resume))

    def _claim(self, key: str, done, records: tuple) -> None:
        if not self.broker.up:
            self._published.pop(key, None)
            done(unreachable())
            return
        state = {"claimed": None, "subscribed": None}

        def settle() -> None:
            claimed, subscribed = state["claimed"], state["subscribed"]
            if claimed is None or (claimed is True and subscribed is None):
                return
            state["claimed"] = "told"
            if claimed is True and subscribed:
                done(True)
                return
            if records:
                self._published.pop(key, None)
            if claimed is True:
                if records:
                    self.forget_user(key)
                self.release_name(key)
                done(unreachable())
            else:
                if key not in self.hub.sessions:
                    self._unsubscribe_user(key)
                done(unreachable() if claimed == "unreachable" else False)

        def answered(reply) -> None:
            if isinstance(reply, BrokerUnavailable):
                state["claimed"] = "unreachable"
            elif isinstance(reply, ReplyError):
                log.error("cluster: Redis refused a name claim: %s", reply)
                state["claimed"] = "unreachable"
            else:
                state["claimed"] = reply == 1
            settle()

        def subscribed(ok: bool) -> None:
            if state["claimed"] != "told":
                state["subscribed"] = ok
                settle()

        self.broker.call("EVAL", CLAIM_NAME_SCRIPT, 1, self.name_prefix + key, self.instance,
                         self.alive_prefix, *records, callback=answered)
        self._subscribe_user(key, subscribed)

    def release_name(self, key: str) -> None:
        self._unsubscribe_user(key)
        self.broker.call("EVAL", RELEASE_NAME_SCRIPT, 1, self.name_prefix + key,
                         self.instance)

    def _reclaim_names(self) -> None:
        """After an outage, or after this node's lease lapsed (a stall longer than the
        silence), hold this node's names again. A name that a user of another node claimed
        meanwhile stays with that user (the cluster has known that user by it since); ours
        is renamed to a guest name, and both are told (``Hub.name_lost``)."""
        for key, session in list(self.hub.sessions.items()):
            def answered(reply, key=key, name=session.name) -> None:
                if reply == 0:
                    self.name_conflicts += 1
                    log.warning("cluster: name %r was claimed on another node while this "
                                "node was cut off; its user here gets a guest name", name)
                    self.hub.name_lost(key)
            self.broker.call("EVAL", CLAIM_NAME_SCRIPT, 1, self.name_prefix + key,
                             self.instance, self.alive_prefix, callback=answered)
