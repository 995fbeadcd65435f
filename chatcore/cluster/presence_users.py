"""Every user of the cluster in shared state: the user list, whois, and what a resume on
another node needs, kept in Redis by each node for its own users (never scatter-gather).

- ``{p}:users``               sorted set, every user's casefolded name (all scored 0, so
  ``ZRANGEBYLEX`` reads them in name order, a page at a time).
- ``{p}:userinfo``            hash, casefolded name -> the user's record (JSON: name, node,
  instance, since, active, rtt, away, rooms; realname for an IRC user). A record is
  believed only while its instance is alive (this node or a live peer): a dead node's
  users vanish from lists and whois at once when it is dropped, before any cleanup.
- ``{p}:iusers:{instance}``   set, the names an instance wrote records for: how any node
  removes a dead instance's records (once its alive key is gone).
- ``{p}:sessions:{instance}`` hash, casefolded name -> the resume record (JSON: name,
  sha256 of the resume token, open chats, rooms and their keys, away, since); expires
  ``node_silence_seconds + resume_grace_seconds`` after the instance's last announcement.
- ``{p}:whowas:{casefolded name}`` list, IRC's WHOWAS history of a name, newest first
  (JSON: name, realname, node, gone in ms): pushed when the user's record is forgotten
  (it left, or renamed away from the name, or its node died), at most ``whowas_per_nick`` entries, expiring
  ``whowas_seconds`` after the last push.

Records are written only while the writer holds the name (checked in the script), so a
node that lost a name during an outage never overwrites its new holder's record. They are
written at once when a user arrives, renames, sets away or resumes, in the same loop turn
when it joins or leaves a room, and otherwise at most once per announcement tick, for what
changed (RTT by more than a tenth, idle, rooms, chats): the tick visits ``REFRESH_SLICE_USERS``
users a loop turn, comparing before it makes any JSON, one script per slice.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time

from .. import events as ev
from ..hub import Page
from ..hub.checks import rtt_us
from ..listing import compile_pattern, split_pattern
from .envelope import log, unreachable

WRITE_BATCH_USERS = 500         # records per script call in a tick's refresh
REFRESH_SLICE_USERS = 100       # users a tick's refresh visits a loop turn (~18 us each that changed)
RTT_REWRITE_FRACTION = 0.1      # an RTT is rewritten once it moved by more than this ...
RTT_REWRITE_MIN_US = 200        # ... and by more than this (a ping's jitter is not news)

# ARGV: prefix, instance, sessions ttl ms, then (key, user record, resume record) triples.
WRITE_USERS_SCRIPT = """
local p, inst = ARGV[1], ARGV[2]
local written = 0
for i = 4, #ARGV, 3 do
  local k = ARGV[i]
  if redis.call('GET', p .. ':name:' .. k) == inst then
    redis.call('HSET', p .. ':userinfo', k, ARGV[i + 1])
    redis.call('ZADD', p .. ':users', 0, k)
    redis.call('SADD', p .. ':iusers:' .. inst, k)
    redis.call('HSET', p .. ':sessions:' .. inst, k, ARGV[i + 2])
    written = written + 1
  end
end
redis.call('PEXPIRE', p .. ':sessions:' .. inst, ARGV[3])
return written
"""
# ``forget``: the record of user ``k`` removed if it is ``inst``'s (true then), and put in
# the name's WHOWAS history (at most ``keep`` entries, ``ttl_ms``), left at ``gone`` ms.
FORGET_LUA = """
local function forget(p, inst, k, gone, keep, ttl_ms)
  local rec = redis.call('HGET', p .. ':userinfo', k)
  if not rec then return false end
  local user = cjson.decode(rec)
  if user['instance'] ~= inst then return false end
  redis.call('HDEL', p .. ':userinfo', k)
  redis.call('ZREM', p .. ':users', k)
  if keep > 0 then
    local history = p .. ':whowas:' .. k
    redis.call('LPUSH', history, cjson.encode({name = user['name'],
      realname = user['realname'], node = user['node'], gone = gone}))
    redis.call('LTRIM', history, 0, keep - 1)
    redis.call('PEXPIRE', history, ttl_ms)
  end
  return true
end
"""
# ARGV: prefix, instance, key, now in ms, WHOWAS entries per name (0: none), their TTL ms.
# The record goes to the name's WHOWAS history in the same step.
FORGET_USER_SCRIPT = FORGET_LUA + """
local p, inst, k = ARGV[1], ARGV[2], ARGV[3]
forget(p, inst, k, tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6])
redis.call('SREM', p .. ':iusers:' .. inst, k)
redis.call('HDEL', p .. ':sessions:' .. inst, k)
return 1
"""
# ARGV: prefix, the dead instance, now in ms, WHOWAS entries per name, their TTL ms.
# Refused (-1) while that instance is alive. Its users still recorded go to WHOWAS here,
# exactly once: the first node to run it removes the records the others would find.
# Answers how many it forgot (a user that resumed on another node has a record of that
# node's: not this instance's, and it did not leave).
FORGET_INSTANCE_SCRIPT = FORGET_LUA + """
local p, inst = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. ':alive:' .. inst) == 1 then return -1 end
local forgotten = 0
for _, k in ipairs(redis.call('SMEMBERS', p .. ':iusers:' .. inst)) do
  if forget(p, inst, k, tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]) then
    forgotten = forgotten + 1
  end
end
redis.call('DEL', p .. ':iusers:' .. inst)
return forgotten
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SharedUsers:
    """The shared-users part of ``Cluster``: records in Redis for this node's users, and the
    user list and whois answered from them. Its state is the Cluster's."""

    shared_users = True

    def _init_shared_users(self) -> None:
        self._published: dict[str, tuple] = {}      # key -> what its records last said
        self._rooms_changed: dict = {}              # key -> Session, written this turn
        self._peer_instances: dict[str, str] = {}   # node name -> instance, for cleanup
        self._forgotten_instances: set[str] = set()
        self._refresh_left = None                   # the tick's refresh: users still to visit

    def _live_instances(self) -> set[str]:
        return {self.instance, *(peer.instance for peer in self.peers.values())}

    # -- writing this node's users ---------------------------------------------------------

    def _records(self, session, now: float, now_ms: int) -> tuple[tuple, str, str]:
        """(what changed-detection compares, the user record, the resume record)."""
        detector = self._detector(session)
        return (detector, *self._record_texts(session, detector, now, now_ms))

    def _detector(self, session) -> tuple:
        """What the records say that matters to readers: compared before any JSON is made
        (a tick visits every user; most did not change)."""
        hub = self.hub
        rooms = tuple(room.name for room in session.rooms.values())
        chats = tuple(sorted(
            peer.name if (peer := hub.sessions.get(key)) is not None
            else hub.remote_peers.get(key, key) for key in session.conversations))
        return (session.name, int(session.last_active), rtt_us(session.rtt_seconds),
                session.away, rooms, chats, session.resume_token, session.realname)

    def _record_texts(self, session, detector: tuple, now: float,
                      now_ms: int) -> tuple[str, str]:
        """(the user record, the resume record) as JSON, from ``_detector``'s tuple."""
        rtt, rooms, chats = detector[2], detector[4], detector[5]
        active_ms = now_ms - int((now - session.last_active) * 1000)
        user = {"name": session.name, "node": self.node.name, "instance": self.instance,
                "since": session.connected_at_ms, "active": active_ms, "rtt": rtt,
                "away": session.away, "rooms": rooms}
        if session.realname:                    # an IRC user's (native users have none)
            user["realname"] = session.realname
        # Room keys for the take-over script (Lua cannot casefold): the memberships it moves.
        resume = json.dumps({"name": session.name, "token": token_hash(session.resume_token),
                             "chats": chats, "rooms": rooms,
                             "room_keys": tuple(session.rooms), "away": session.away,
                             "since": session.connected_at_ms})
        return json.dumps(user), resume

    def _changed(self, key: str, detector: tuple) -> bool:
        last = self._published.get(key)
        if last is None or last[:2] != detector[:2] or last[3:] != detector[3:]:
            return True
        old, new = last[2], detector[2]
        return (old != new and (ev.UNKNOWN_RTT in (old, new) or abs(new - old) >
                                max(RTT_REWRITE_MIN_US, old * RTT_REWRITE_FRACTION)))

    def publish_user(self, session, done=None) -> None:
        """The hub's backplane: write ``session``'s records now (arrival, rename, away,
        chats, resume); ``done()`` once Redis answered (or could not)."""
        if not self.broker.up or self.hub.sessions.get(session.key) is not session:
            if done is not None:
                done()
            return
        detector, user, resume = self._records(session, time.monotonic(),
                                               int(time.time() * 1000))
        self._published[session.key] = detector
        self._write_records([(session.key, user, resume)],
                            None if done is None else (lambda reply: done()))

    def user_rooms_changed(self, session) -> None:
        """The hub's backplane: ``session`` joined or left a room. Its records are written
        before this turn's writes to Redis (one script for every such user of the turn),
        not at the next announcement tick: a resume on another node after this node dies
        rejoins the rooms the user is in now."""
        self._rooms_changed[session.key] = session

    def _write_rooms_changed(self) -> None:
        """Before the broker writes (each loop turn): the records of ``user_rooms_changed``."""
        if not self._rooms_changed:             # (most turns: nothing to allocate)
            return
        changed, self._rooms_changed = self._rooms_changed, {}
        sessions = self.hub.sessions
        still_here = [(key, session) for key, session in changed.items()
                      if sessions.get(key) is session]
        if still_here and self.broker.up:
            self._write_sessions(still_here, only_changed=False)

    def refresh_users(self) -> None:
        """Once per announcement tick: rewrite the records of users whose state changed,
        and keep this instance's resume records alive. ``REFRESH_SLICE_USERS`` users a
        loop turn (the first slice now, always one script): a node of many users never
        holds its clients' messages for the whole visit."""
        if not self.broker.up:
            return
        self._peer_instances = {name: peer.instance for name, peer in self.peers.items()}
        self._refresh_left = iter(list(self.hub.sessions.items()))   # a newer tick restarts
        self._refresh_slice(self._refresh_left, first=True)

    def _refresh_slice(self, left, first: bool = False) -> None:
        if left is not self._refresh_left or not self.broker.up:
            return                              # a newer tick took over, or Redis is away
        chunk = list(itertools.islice(left, REFRESH_SLICE_USERS))
        if not chunk and not first:
            self._refresh_left = None
            return
        sessions = self.hub.sessions
        self._write_sessions([(key, session) for key, session in chunk
                              if sessions.get(key) is session], only_changed=True, always=first)
        self.reactor.call_soon(self._refresh_slice, left)

    def _write_sessions(self, sessions, only_changed: bool, always: bool = True) -> None:
        """Write the records of ``sessions`` ((key, Session) pairs; with ``only_changed``
        those whose state changed since last written) in scripts of WRITE_BATCH_USERS. With
        ``always`` at least one script runs: it also renews this instance's resume records."""
        now, now_ms = time.monotonic(), int(time.time() * 1000)
        batch = []
        for key, session in sessions:
            detector = self._detector(session)
            if only_changed and not self._changed(key, detector):
                continue
            self._published[key] = detector
            batch.append((key, *self._record_texts(session, detector, now, now_ms)))
            if len(batch) >= WRITE_BATCH_USERS:
                self._write_records(batch)
                batch = []
        if batch or always:
            self._write_records(batch)

    def _sessions_ttl_ms(self) -> int:
        """How long an instance's resume records outlive its last announcement."""
        return int((self.config.node_silence_seconds
                    + self.hub.limits.resume_grace_seconds) * 1000)

    def _write_records(self, batch: list, callback=None) -> None:
        args = [item for triple in batch for item in triple]
        self.broker.call("EVAL", WRITE_USERS_SCRIPT, 0, self._prefix, self.instance,
                         self._sessions_ttl_ms(), *args, callback=callback)

    def forget_user(self, key: str) -> None:
        """The hub's backplane: this node's user ``key`` is gone (left, or renamed)."""
        self._published.pop(key, None)
        if self.broker.up:
            config = self.config
            self.broker.call("EVAL", FORGET_USER_SCRIPT, 0, self._prefix, self.instance, key,
                             int(time.time() * 1000), config.whowas_per_nick,
                             config.whowas_seconds * 1000)

    def whowas(self, key: str, count: int, done) -> None:
        """The IRC front end: ``done(list of dict)``, the WHOWAS history of the casefolded
        name ``key`` from every node (entries as ``FORGET_USER_SCRIPT`` writes them), newest
        first (``count`` > 0: at most that many), or ``done(ChatError)`` when Redis is out
        of reach."""
        if not self.broker.up:
            done(unreachable())
            return

        def answered(raws) -> None:
            if not isinstance(raws, list):
                done(unreachable())
                return
            found = []
            for raw in raws:
                try:
                    found.append(json.loads(raw))
                except (ValueError, TypeError):
                    pass                        # not ours to read: left out
            done(found)

        self.broker.call("LRANGE", f"{self._prefix}:whowas:{key}", 0,
                         count - 1 if count > 0 else -1, callback=answered)

    def _republish_users(self) -> None:
        """After an outage (Redis may have restarted empty): every record again."""
        self._published.clear()
        self.refresh_users()

    def _forget_instance(self, instance: str) -> None:
        """Remove a dead instance's records, its users into WHOWAS (any node may; the
        script checks it is dead). Refused while its alive key lasts (a peer is dropped
        about when its key expires): tried again a silence later, unless it came back."""
        if not instance or instance in self._forgotten_instances or not self.broker.up:
            return
        self._forgotten_instances.add(instance)

        def forgotten(reply) -> None:
            if reply == -1:
                self._forgotten_instances.discard(instance)
                self.reactor.call_later(self.config.node_silence_seconds, retry)
            elif isinstance(reply, int):            # 0: another node was first
                log.info("cluster: forgot %d user record(s) of gone node instance %s",
                         reply, instance)

        def retry() -> None:
            if instance not in self._live_instances():
                self._forget_instance(instance)

        config = self.config
        self.broker.call("EVAL", FORGET_INSTANCE_SCRIPT, 0, self._prefix, instance,
                         int(time.time() * 1000), config.whowas_per_nick,
                         config.whowas_seconds * 1000, callback=forgotten)

    def _forget_node_users(self, node_name: str) -> None:
        self._forget_instance(self._peer_instances.pop(node_name, ""))

    # -- reading every node's users --------------------------------------------------------

    def _live_record(self, raw, live: set) -> dict | None:
        if not isinstance(raw, bytes):
            return None
        try:
            record = json.loads(raw)
            instance = record["instance"]
        except (ValueError, KeyError, TypeError):
            return None
        if instance not in live:
            self._forget_instance(instance)       # lazily: its node is gone
            return None
        return record

    def user_details(self, key: str, done) -> None:
        """The hub's backplane: the record of user ``key`` (of another node), or None."""
        if not self.broker.up:
            done(unreachable())
            return

        def answered(raw) -> None:
            if isinstance(raw, Exception):
                done(unreachable())
            else:
                done(self._live_record(raw, self._live_instances()))

        self.broker.call("HGET", f"{self._prefix}:userinfo", key, callback=answered)

    def users_page(self, after: str, pattern: str, page_size: int, scan_limit: int,
                   done) -> None:
        """The hub's backplane: a page of every node's users in name order, from
        ``{p}:users`` (at most ``scan_limit`` names examined) and their records (one
        round trip each). ``total`` counts names in Redis, which may still hold the users of
        a node dropped a moment ago (then ``total_exact`` is False)."""
        if not self.broker.up:
            done(unreachable())
            return
        prefix, rest = split_pattern(pattern)
        users_key = f"{self._prefix}:users"
        if prefix and rest == "":               # a plain name: at most one
            keys = [prefix] if prefix > after else []
            self._page_records(keys, None, True, "", done)
            return
        if after and after >= prefix:
            low = "(" + after
        else:
            low = "[" + prefix if prefix else "-"
        high = "(" + prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "+"
        filtered = rest not in ("", "*")
        count = scan_limit if filtered else page_size + 1
        state = {}

        def got_total(reply) -> None:
            state["total"] = reply

        def got_keys(reply) -> None:
            if not isinstance(reply, list) or not isinstance(state.get("total"), int):
                done(unreachable())
                return
            examined = [key.decode() for key in reply]
            if not filtered:
                keys = examined[:page_size]
                next_after = keys[-1] if len(examined) > page_size else ""
            else:
                keys = list(filter(compile_pattern(pattern), examined))[:page_size]
                if len(keys) == page_size:
                    next_after = keys[-1] if (keys[-1] != examined[-1]
                                              or len(examined) == scan_limit) else ""
                else:
                    next_after = examined[-1] if len(examined) == scan_limit else ""
            self._page_records(keys, state["total"], not filtered, next_after, done)

        self.broker.call("ZLEXCOUNT", users_key, "[" + prefix if prefix else "-", high,
                         callback=got_total)
        self.broker.call("ZRANGEBYLEX", users_key, low, high, "LIMIT", 0, count,
                         callback=got_keys)

    def _page_records(self, keys: list, total: int | None, exact: bool, next_after: str,
                      done) -> None:
        """The page of ``keys`` (``total``: the count in Redis; None: count the entries)."""
        if not keys:
            done(Page([], [], total or 0, exact, next_after))
            return

        def answered(raws) -> None:
            if not isinstance(raws, list):
                done(unreachable())
                return
            live = self._live_instances()
            hub = self.hub
            now, now_ms = time.monotonic(), int(time.time() * 1000)
            entries, listed, dead = [], [], 0
            for key, raw in zip(keys, raws):
                session = hub.sessions.get(key)
                if session is not None:         # this node's own: fresher than Redis
                    entries.append(ev.UserInfo(session.name, rtt_us(session.rtt_seconds),
                                               int(now - session.last_active),
                                               self.node.name, session.away))
                    listed.append(key)
                    continue
                record = self._live_record(raw, live)
                if record is None:
                    dead += raw is not None         # a dead node's, not one gone since
                    continue
                entries.append(ev.UserInfo(
                    str(record["name"]), int(record.get("rtt", ev.UNKNOWN_RTT)),
                    max(0, (now_ms - int(record.get("active", now_ms))) // 1000),
                    str(record.get("node", "")), str(record.get("away", "")),
                    str(record.get("realname", ""))))
                listed.append(key)
            done(Page(entries, listed, len(entries) if total is None else total,
                      exact and not dead, next_after))

        self.broker.call("HMGET", f"{self._prefix}:userinfo", *keys, callback=answered)
