"""The Lua scripts that decide room moderation in Redis (docs/cluster.md, "Room moderation
across nodes"). Each checks the request against the room's shared state, changes it and
publishes the outcome on the room's channel in one atomic step, so every node applies the
same outcomes in the same order, and two nodes can never decide one question two ways.

Keys beside a room's ``{p}:room:{key}:members`` (``base`` below is ``{p}:room:{key}``):

- ``{base}:modes``  hash: ``flags`` (the letters of i m s t set), ``key``, ``limit``
  (0: none), ``bans`` (JSON ``[[mask, set by, set at ms], ...]``, oldest first),
  ``created`` (ms), ``joins`` (the join counter)
- ``{base}:privs``  hash: member key -> ``o``, ``v`` or ``ov``
- ``{base}:order``  sorted set: member key scored by the join counter when it joined: the
  longest-present member is the lowest

A script learns ``base`` from its room's ``:info`` key and the cluster prefix from the
``{p}:rooms`` key, so the keys it names stay those of the join and leave scripts.

A published outcome is the request's envelope (JSON, made by the node) with the script's
fields added before its closing brace: ``changes`` / ``refused`` / ``heir``.
"""
from __future__ import annotations

# The message with a field added before its closing brace (``json``: the value, encoded).
WITH_FIELD_LUA = r"""
local function with_field(message, name, json)
  return string.sub(message, 1, -2) .. ',"' .. name .. '":' .. json .. '}'
end
"""

# Shared by the scripts below and the leave script (roomstate): the name of the member made
# operator because none is left (nil if an operator is still there, or nobody is). A
# member counts while its instance's alive key exists and it is not of ``dead_node``.
HEIR_LUA = WITH_FIELD_LUA + r"""
local function with_letter(value, letter)
  if string.find(value, letter, 1, true) then return value end
  if letter == 'o' then return 'o' .. value end
  return value .. letter
end
local function name_heir(base, alive_prefix, dead_node, gone)
  local alive = {}
  local function live(member)
    local held = redis.call('HGET', base .. ':who', member)
    if not held then return nil end
    local instance, node, name = string.match(held, '^([^\t]*)\t([^\t]*)\t(.*)$')
    if not instance or node == dead_node then return nil end
    if alive[instance] == nil then
      alive[instance] = redis.call('EXISTS', alive_prefix .. instance) == 1
    end
    if alive[instance] then return name end
    return nil
  end
  local privs = redis.call('HGETALL', base .. ':privs')
  for i = 1, #privs, 2 do
    if privs[i] ~= gone and string.find(privs[i + 1], 'o', 1, true) and live(privs[i]) then
      return nil
    end
  end
  local start = 0
  while true do
    local page = redis.call('ZRANGE', base .. ':order', start, start + 99)
    if #page == 0 then return nil end
    for _, member in ipairs(page) do
      if member ~= gone then
        local name = live(member)
        if name then
          local had = redis.call('HGET', base .. ':privs', member) or ''
          redis.call('HSET', base .. ':privs', member, with_letter(had, 'o'))
          return name
        end
      end
    end
    start = start + 100
  end
end
"""


# KEYS: {p}:rooms, {base}:info, {base}:members
# ARGV: channel, envelope, actor key, now ms, max bans, actor name, then (sign, letter,
#       argument, target key) per change, already checked for form by the node
MODES_SCRIPT = HEIR_LUA + r"""
local base = string.sub(KEYS[2], 1, -6)
local modes_key, privs_key = base .. ':modes', base .. ':privs'
local actor = ARGV[3]
local mine = redis.call('HGET', privs_key, actor) or ''
if not redis.call('ZSCORE', KEYS[3], actor) or not string.find(mine, 'o', 1, true) then
  redis.call('PUBLISH', ARGV[1], with_field(with_field(ARGV[2], 'changes', '[]'),
                                             'refused', '"not_operator"'))
  return 0
end
local state = {}
local raw = redis.call('HGETALL', modes_key)
for i = 1, #raw, 2 do state[raw[i]] = raw[i + 1] end
local flags, key, limit = state['flags'] or '', state['key'] or '', state['limit'] or '0'
local bans = {}
if state['bans'] then
  local ok, list = pcall(cjson.decode, state['bans'])
  if ok and type(list) == 'table' then bans = list end
end
local function toggled(value, letter, on)
  local set, out = {}, {}
  for ch in string.gmatch(value, '.') do set[ch] = true end
  if on then set[letter] = true else set[letter] = nil end
  for ch in pairs(set) do out[#out + 1] = ch end
  table.sort(out)
  return table.concat(out)
end
local out = {}
for i = 7, #ARGV, 4 do
  local adding, letter, arg, target = ARGV[i] == '+', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if letter == 'i' or letter == 'm' or letter == 's' or letter == 't' then
    if (string.find(flags, letter, 1, true) ~= nil) ~= adding then
      flags = toggled(flags, letter, adding)
      out[#out + 1] = {adding, letter, ''}
    end
  elseif letter == 'k' then
    if adding and key ~= arg then
      key = arg
      out[#out + 1] = {true, 'k', arg}
    elseif not adding and key ~= '' then
      out[#out + 1] = {false, 'k', key}
      key = ''
    end
  elseif letter == 'l' then
    local wanted = adding and arg or '0'
    if wanted ~= limit then
      limit = wanted
      out[#out + 1] = {adding, 'l', adding and arg or ''}
    end
  elseif letter == 'o' or letter == 'v' then
    if redis.call('ZSCORE', KEYS[3], target) then
      local had = redis.call('HGET', privs_key, target) or ''
      if (string.find(had, letter, 1, true) ~= nil) ~= adding then
        local allowed = true
        if letter == 'o' and not adding then       -- the last operator keeps o
          local count, all = 0, redis.call('HGETALL', privs_key)
          for j = 2, #all, 2 do
            if string.find(all[j], 'o', 1, true) then count = count + 1 end
          end
          allowed = count > 1
        end
        if allowed then
          local now = toggled(had, letter, adding)
          if now == 'vo' then now = 'ov' end
          if now == '' then redis.call('HDEL', privs_key, target)
          else redis.call('HSET', privs_key, target, now) end
          out[#out + 1] = {adding, letter, arg}
        end
      end
    end
  elseif letter == 'b' then
    local found = nil
    for j, ban in ipairs(bans) do
      if ban[1] == arg then found = j end
    end
    if adding and not found and #bans < tonumber(ARGV[5]) then
      bans[#bans + 1] = {arg, ARGV[6], tonumber(ARGV[4])}
      out[#out + 1] = {true, 'b', arg, tonumber(ARGV[4])}
    elseif not adding and found then
      table.remove(bans, found)
      out[#out + 1] = {false, 'b', arg}
    end
  end
end
local encoded_bans = '[]'
if #bans > 0 then encoded_bans = cjson.encode(bans) end
redis.call('HSET', modes_key, 'flags', flags, 'key', key, 'limit', limit,
           'bans', encoded_bans)
if not state['created'] then redis.call('HSET', modes_key, 'created', ARGV[4]) end
local changes = '[]'
if #out > 0 then changes = cjson.encode(out) end
redis.call('PUBLISH', ARGV[1], with_field(with_field(ARGV[2], 'changes', changes),
                                           'refused', '""'))
return #out
"""

# KEYS: {p}:rooms, {base}:info, {base}:members, {base}:who
# ARGV: channel, envelope, actor key, victim key, room key
KICK_SCRIPT = HEIR_LUA + r"""
local base = string.sub(KEYS[2], 1, -6)
local prefix = string.sub(KEYS[1], 1, -7)
local privs_key = base .. ':privs'
local actor, victim = ARGV[3], ARGV[4]
local mine = redis.call('HGET', privs_key, actor) or ''
if not redis.call('ZSCORE', KEYS[3], actor) or not string.find(mine, 'o', 1, true) then
  redis.call('PUBLISH', ARGV[1], with_field(ARGV[2], 'refused', '"not_operator"'))
  return 0
end
if not redis.call('ZSCORE', KEYS[3], victim) then
  redis.call('PUBLISH', ARGV[1], with_field(ARGV[2], 'refused', '"not_member"'))
  return 0
end
local held = redis.call('HGET', KEYS[4], victim)
if held then
  local instance = string.match(held, '^[^\t]*')
  redis.call('SREM', prefix .. ':memberships:' .. instance, ARGV[5] .. '\t' .. victim)
end
local was = redis.call('HGET', privs_key, victim) or ''
redis.call('ZREM', KEYS[3], victim)
redis.call('HDEL', KEYS[4], victim)
redis.call('HDEL', privs_key, victim)
redis.call('ZREM', base .. ':order', victim)
local message = with_field(ARGV[2], 'refused', '""')
if string.find(was, 'o', 1, true) then
  local heir = name_heir(base, prefix .. ':alive:', '', victim)
  if heir then message = with_field(message, 'heir', cjson.encode(heir)) end
end
redis.call('PUBLISH', ARGV[1], message)
return 1
"""

# A node noticed that ``dead_node`` is gone: if the room has no live operator left, the
# longest-present live member becomes one. Every node that notices runs it; the first
# names the heir, the others find one. Always publishes (the channel's numbering).
# KEYS: {p}:rooms, {base}:info;  ARGV: channel, envelope, dead node
LOST_SCRIPT = HEIR_LUA + r"""
local base = string.sub(KEYS[2], 1, -6)
local prefix = string.sub(KEYS[1], 1, -7)
local heir = name_heir(base, prefix .. ':alive:', ARGV[3], '')
local changes = '[]'
if heir then changes = '[[true,"o",' .. cjson.encode(heir) .. ']]' end
redis.call('PUBLISH', ARGV[1], with_field(with_field(ARGV[2], 'changes', changes),
                                           'refused', '""'))
return heir and 1 or 0
"""

# After an outage (Redis may have restarted empty): a node writes its view of the room's
# modes if the shared state has none, and its own members' flags; the flags it changed are
# published as a server-made ``modes`` outcome (always published, maybe with no changes, so
# the channel's numbering has no gap), for the nodes whose snapshot was read before.
# KEYS: {base}:modes, {base}:privs
# ARGV: channel, envelope, flags, key, limit, bans JSON, created, then (member key, flags,
# member name) triples
RESTORE_SCRIPT = WITH_FIELD_LUA + r"""
if redis.call('HEXISTS', KEYS[1], 'created') == 0 then
  redis.call('HSET', KEYS[1], 'flags', ARGV[3], 'key', ARGV[4], 'limit', ARGV[5],
             'bans', ARGV[6], 'created', ARGV[7])
end
local changes = {}
for i = 8, #ARGV, 3 do
  local had, now = redis.call('HGET', KEYS[2], ARGV[i]) or '', ARGV[i + 1]
  for _, letter in ipairs({'o', 'v'}) do
    local was = string.find(had, letter, 1, true) ~= nil
    local is = string.find(now, letter, 1, true) ~= nil
    if was ~= is then changes[#changes + 1] = cjson.encode({is, letter, ARGV[i + 2]}) end
  end
  if now == '' then redis.call('HDEL', KEYS[2], ARGV[i])
  else redis.call('HSET', KEYS[2], ARGV[i], now) end
end
redis.call('PUBLISH', ARGV[1], with_field(ARGV[2], 'changes',
                                          '[' .. table.concat(changes, ',') .. ']'))
return #changes
"""
