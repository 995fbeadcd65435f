"""The rooms' shared state in Redis: who is in which room (kept by each node for its own
members, atomically with the notice it publishes), the room list, each room's kept state
(name, topic), and the clean-up of a dead node's members.

- ``{p}:rooms``                 sorted set (all scores 0): every room key, in name order
- ``{p}:room:{key}:info``       hash: ``name`` (as first spelt) and the kept state
  (``topic``, ``topic_by``, ``topic_at``; see hub.remote_rooms.ROOM_STATE_FIELDS)
- ``{p}:room:{key}:members``    sorted set (all scores 0): the members' keys, in name order
- ``{p}:room:{key}:who``        hash: member key -> ``instance TAB node TAB name``
- ``{p}:memberships:{instance}`` set of ``room key TAB member key``: what to remove when
  that instance is gone
- ``{p}:instances``             sorted set: node instances, scored by when their lease ends
  (ms since the epoch); one past its end (plus a silence) has its members removed

A member entry is believed only while its instance's alive key exists (as for user names),
so a dead node's members drop out of member lists at once and out of counts and the room
list within one announcement of its lease ending, whoever cleans up first.
"""
from __future__ import annotations

import time

from .. import events as ev
from ..hub.model import RoomSnapshot
from .envelope import log
from .moderation_scripts import HEIR_LUA, WITH_FIELD_LUA

SYNC_SCRIPT = """
redis.call('PUBLISH', ARGV[1], ARGV[2])
local who = redis.call('HGETALL', KEYS[2])
local alive, out, away = {}, {}, {}
for i = 1, #who, 2 do
  local instance = string.match(who[i + 1], '^[^\\t]*')
  if alive[instance] == nil then
    alive[instance] = redis.call('EXISTS', ARGV[3] .. instance) == 1
  end
  if alive[instance] then
    out[#out + 1] = who[i]
    out[#out + 1] = who[i + 1]
    local record = redis.call('HGET', KEYS[3], who[i])
    if record then
      local ok, user = pcall(cjson.decode, record)
      if ok and type(user) == 'table' and type(user['away']) == 'string'
          and user['away'] ~= '' then
        away[#away + 1] = who[i]
        away[#away + 1] = user['away']
      end
    end
  end
end
local base = string.sub(KEYS[1], 1, -6)
return {redis.call('HGETALL', KEYS[1]), out, away, redis.call('HGETALL', base .. ':modes'),
        redis.call('HGETALL', base .. ':privs')}
"""
# A join of one member that makes the room (ARGV[5], the room limit, > 0: not a node
# registering its members again after an outage) makes it the room's operator, its
# founder: the notice gets ``"founder": 1`` and the script answers 2.
JOIN_SCRIPT = WITH_FIELD_LUA + """
local base = string.sub(KEYS[2], 1, -6)
local founder, message = false, ARGV[4]
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local limit = tonumber(ARGV[5])
  if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then
    return 0
  end
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
  redis.call('HSET', KEYS[2], 'name', ARGV[2])
  redis.call('DEL', base .. ':modes', base .. ':privs', base .. ':order')
  founder = limit > 0 and #ARGV == 8
end
for i = 7, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], 0, ARGV[i])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[6] .. ARGV[i + 1])
  redis.call('SADD', KEYS[5], ARGV[1] .. '\\t' .. ARGV[i])
  if not redis.call('ZSCORE', base .. ':order', ARGV[i]) then
    redis.call('ZADD', base .. ':order', redis.call('HINCRBY', base .. ':modes', 'joins', 1),
               ARGV[i])
  end
end
if founder then
  redis.call('HSET', base .. ':privs', ARGV[7], 'o')
  local ok, envelope = pcall(cjson.decode, ARGV[4])
  local at = ok and type(envelope) == 'table' and envelope['created']
  if type(at) ~= 'number' then
    local now = redis.call('TIME')
    at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  end
  redis.call('HSET', base .. ':modes', 'created', string.format('%.0f', at))
  message = with_field(message, 'founder', '1')
end
redis.call('PUBLISH', ARGV[3], message)
if founder then return 2 end
return 1
"""
# The leave of the room's last operator names the next one (``"heir"`` in the notice). A
# leave of a membership another instance holds now (the session resumed there) changes
# nothing and is published ``"stale"``, for the sender's order only.
LEAVE_SCRIPT = HEIR_LUA + """
local base = string.sub(KEYS[2], 1, -6)
local message = ARGV[4]
local held = redis.call('HGET', KEYS[4], ARGV[2])
if held and string.sub(held, 1, #ARGV[5]) ~= ARGV[5] then
  message = with_field(message, 'stale', '1')
elseif held then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
  local was = redis.call('HGET', base .. ':privs', ARGV[2]) or ''
  redis.call('HDEL', base .. ':privs', ARGV[2])
  redis.call('ZREM', base .. ':order', ARGV[2])
  if string.find(was, 'o', 1, true) and redis.call('ZCARD', KEYS[3]) > 0 then
    local heir = name_heir(base, string.sub(KEYS[1], 1, -7) .. ':alive:', '', ARGV[2])
    if heir then message = with_field(message, 'heir', cjson.encode(heir)) end
  end
end
redis.call('SREM', KEYS[5], ARGV[1] .. '\\t' .. ARGV[2])
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[4], base .. ':modes', base .. ':privs', base .. ':order')
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], message)
return 1
"""
RENAME_SCRIPT = """
local held = redis.call('HGET', KEYS[4], ARGV[2])
if held and string.sub(held, 1, #ARGV[5]) == ARGV[5] then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('SREM', KEYS[5], ARGV[1] .. '\\t' .. ARGV[2])
  redis.call('ZADD', KEYS[3], 0, ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[6])
  redis.call('SADD', KEYS[5], ARGV[1] .. '\\t' .. ARGV[3])
  local base = string.sub(KEYS[2], 1, -6)
  local flags = redis.call('HGET', base .. ':privs', ARGV[2])
  if flags then
    redis.call('HDEL', base .. ':privs', ARGV[2])
    redis.call('HSET', base .. ':privs', ARGV[3], flags)
  end
  local joined = redis.call('ZSCORE', base .. ':order', ARGV[2])
  if joined then
    redis.call('ZREM', base .. ':order', ARGV[2])
    redis.call('ZADD', base .. ':order', joined, ARGV[3])
  end
end
redis.call('PUBLISH', ARGV[7], ARGV[4])
return 1
"""
STATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 and #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
CLEANUP_SCRIPT = """
local entries = redis.call('SMEMBERS', KEYS[1])
local mine = ARGV[2] .. '\\t'
for _, entry in ipairs(entries) do
  local tab = string.find(entry, '\\t', 1, true)
  local room, member = string.sub(entry, 1, tab - 1), string.sub(entry, tab + 1)
  local base = ARGV[1] .. ':room:' .. room
  local held = redis.call('HGET', base .. ':who', member)
  if held and string.sub(held, 1, #mine) == mine then
    redis.call('HDEL', base .. ':who', member)
    redis.call('ZREM', base .. ':members', member)
    redis.call('HDEL', base .. ':privs', member)
    redis.call('ZREM', base .. ':order', member)
    if redis.call('ZCARD', base .. ':members') == 0 then
      redis.call('DEL', base .. ':info', base .. ':who', base .. ':modes', base .. ':privs',
                 base .. ':order')
      redis.call('ZREM', KEYS[2], room)
    end
  end
end
redis.call('DEL', KEYS[1])
return #entries
"""
# Member entries of one list page checked for a live instance, and their details read
# (key, who entry, away message, realname: four per member).
MEMBERS_SCRIPT = """
local who = redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
local alive, out = {}, {}
for i, value in ipairs(who) do
  if value then
    local instance = string.match(value, '^[^\\t]*')
    if alive[instance] == nil then
      alive[instance] = redis.call('EXISTS', ARGV[1] .. instance) == 1
    end
    if alive[instance] then
      local away, realname, record = '', '', redis.call('HGET', KEYS[2], ARGV[i + 1])
      if record then
        local ok, user = pcall(cjson.decode, record)
        if ok and type(user) == 'table' then
          if type(user['away']) == 'string' then away = user['away'] end
          if type(user['realname']) == 'string' then realname = user['realname'] end
        end
      end
      out[#out + 1] = ARGV[i + 1]
      out[#out + 1] = value
      out[#out + 1] = away
      out[#out + 1] = realname
    end
  end
end
return out
"""
ROOMS_SCRIPT = """
local out = {}
for i, key in ipairs(ARGV) do
  local base = KEYS[1] .. key
  out[#out + 1] = redis.call('HGET', base .. ':info', 'name') or key
  out[#out + 1] = redis.call('ZCARD', base .. ':members')
  out[#out + 1] = redis.call('HGET', base .. ':modes', 'flags') or ''
end
return out
"""


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RoomState:
    """Key names, snapshots and the clean-up of dead instances, for ``ClusterRooms``."""

    def room_channel(self, key: str) -> str:
        return f"{self._prefix}:room:{key}"

    def room_info_key(self, key: str) -> str:
        return f"{self._prefix}:room:{key}:info"

    def room_who_key(self, key: str) -> str:
        return f"{self._prefix}:room:{key}:who"

    def room_keys(self, key: str) -> tuple:
        """The KEYS of JOIN_SCRIPT and LEAVE_SCRIPT."""
        base = f"{self._prefix}:room:{key}"
        return (self.rooms_key, base + ":info", base + ":members", base + ":who",
                self.memberships_key)

    def _who_prefix(self) -> str:
        return f"{self.instance}\t{self.node.name}\t"

    def parse_snapshot(self, reply: list) -> RoomSnapshot:
        """SYNC_SCRIPT's reply: the room's kept fields, its members on other nodes and
        which of them are away (from their user records)."""
        raw_fields, raw_who = reply[0] or [], reply[1] or []
        raw_away = (reply[2] or []) if len(reply) > 2 else []
        fields = {_text(raw_fields[i]): _text(raw_fields[i + 1])
                  for i in range(0, len(raw_fields) - 1, 2)}
        for prefix, raw in (("mode:", reply[3] if len(reply) > 3 else None),
                            ("priv:", reply[4] if len(reply) > 4 else None)):
            raw = raw or []             # moderation's shared state (hub.shared_moderation)
            fields.update((prefix + _text(raw[i]), _text(raw[i + 1]))
                          for i in range(0, len(raw) - 1, 2))
        members = {}
        for i in range(0, len(raw_who) - 1, 2):
            parts = _text(raw_who[i + 1]).split("\t", 2)
            if len(parts) == 3 and parts[0] != self.instance:
                members[_text(raw_who[i])] = (parts[2], parts[1])
        away = {_text(raw_away[i]): _text(raw_away[i + 1])
                for i in range(0, len(raw_away) - 1, 2) if _text(raw_away[i]) in members}
        return RoomSnapshot(fields, members, away)

    # -- liveness --------------------------------------------------------------------------

    def _keep_instance(self, silence_ms: int) -> None:
        """With each announcement: this instance's lease in the instances set, and the
        members of instances whose lease ended removed."""
        now_ms = int(time.time() * 1000)
        self.broker.call("ZADD", self.instances_key, now_ms + silence_ms, self.instance)
        self.broker.call("ZRANGEBYSCORE", self.instances_key, "-inf", now_ms - silence_ms,
                         "LIMIT", 0, 10, callback=self._clean_instances)

    def _clean_instances(self, reply) -> None:
        if not isinstance(reply, list):
            return
        for raw in reply:
            instance = _text(raw)
            if instance == self.instance:
                continue
            self._clean_instance(instance)

    def _clean_instance(self, instance: str) -> None:
        def cleaned(reply) -> None:
            if isinstance(reply, int) and reply:
                log.info("cluster: removed %d room membership(s) of a gone node instance",
                         reply)
        self.broker.call("EVAL", CLEANUP_SCRIPT, 2, f"{self._prefix}:memberships:{instance}",
                         self.rooms_key, self._prefix, instance, callback=cleaned)
        self.broker.call("ZREM", self.instances_key, instance)

    # -- entries for lists -----------------------------------------------------------------

    def member_info(self, key: str, value, away=b"",
                    realname=b"") -> tuple[str, ev.UserInfo] | None:
        """A ``who`` entry as a user list entry (this node's own users from their session;
        ``away`` and ``realname``: another node's user's, from its record)."""
        parts = _text(value).split("\t", 2)
        if len(parts) != 3:
            return None
        instance, node, name = parts
        if instance == self.instance:
            session = self.hub.sessions.get(key)
            if session is None:
                return None
            return key, self.hub.user_info(session)
        return key, ev.UserInfo(name, ev.UNKNOWN_RTT, 0, node, _text(away),
                                _text(realname))
