"""The server-side Lua scripts of :mod:`qmtl_state_redis.backend`, with their SHA1 digests
(``EVALSHA`` names a script by digest; ``SCRIPTS`` maps a digest back to its text to reload it
after a server restart forgot it).

A series' history is a LIST of members in increasing bucket time, each member starting with its
bucket's timestamp (``<ts>;<value>``, or ``<ts> <json>`` as written before the codec). Buckets
newer than the newest are appended (``RPUSH``, the common case); the newest bucket is replaced
in place (``LSET -1``); an older bucket is found by binary search (``LINDEX``) and replaced or
inserted (the slow path). Reads find their time range by binary search too, server-side.
A history still held in the sorted-set layout of earlier versions (score = timestamp) is read
as it is and rewritten as a list by its next write.
"""

from __future__ import annotations

import hashlib

# Shared helpers: the timestamp of a member, and binary searches over a history list.
_COMMON = """
local function stamp(member)
  return tonumber(string.match(member, '^([^; ]+)'))
end
-- The first index whose timestamp is >= t (strict: > t); len when there is none.
local function first(history, len, t, strict)
  local low, high = 0, len
  while low < high do
    local mid = math.floor((low + high) / 2)
    local s = stamp(redis.call('LINDEX', history, mid))
    if s < t or (strict and s == t) then low = mid + 1 else high = mid end
  end
  return low
end
"""

# KEYS: (history, meta) per group of consecutive writes to one series with the same settings.
# ARGV: now, then per group: n, max_items ('' = keep all), ttl ('' = no expiry), the group's
# first timestamp, '1' when its timestamps strictly increase (else '0'), then its n members.
# Returns {groups, run_id}: the (1-based) groups whose series had no metadata before this write
# (new, expired, deleted, or lost in a restart), and the server run's id, which changes when
# redis-server restarts.
WRITE_SCRIPT = (
    _COMMON
    + """
-- Refuse before changing anything when a key holds something QMTL did not write; note the
-- series that have no metadata yet (new, or vanished) and the histories still in the sorted-set
-- layout.
local fresh, legacy = {}, {}
for g = 1, #KEYS, 2 do
  local kind = redis.call('TYPE', KEYS[g]).ok
  if kind == 'zset' then
    legacy[#legacy + 1] = KEYS[g]
  elseif kind ~= 'none' and kind ~= 'list' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[g] .. ' holds a ' .. kind .. ', not a list')
  end
  kind = redis.call('TYPE', KEYS[g + 1]).ok
  if kind == 'none' then
    fresh[#fresh + 1] = (g + 1) / 2
  elseif kind ~= 'hash' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[g + 1] .. ' holds a ' .. kind .. ', not a hash')
  end
end
for _, history in ipairs(legacy) do
  -- members in increasing score (= timestamp) order, kept as they are
  local members = redis.call('ZRANGE', history, 0, -1)
  local ttl = redis.call('PTTL', history)
  redis.call('DEL', history)
  for i = 1, #members, 1000 do
    redis.call('RPUSH', history, unpack(members, i, math.min(i + 999, #members)))
  end
  if ttl > 0 then redis.call('PEXPIRE', history, ttl) end
end
local now = ARGV[1]
local a = 2
for g = 1, #KEYS, 2 do
  local history, meta = KEYS[g], KEYS[g + 1]
  local n, max_items, ttl = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  local from, to = a + 5, a + 4 + n
  local last = redis.call('LINDEX', history, -1)
  local top = last and stamp(last) or -math.huge
  if ARGV[a + 4] == '1' and tonumber(ARGV[a + 3]) > top then
    -- every bucket is newer than the newest stored (the common case): append them as they are
    for i = from, to, 1000 do
      redis.call('RPUSH', history, unpack(ARGV, i, math.min(i + 999, to)))
    end
  else
    -- one by one: a newer bucket is appended, the newest replaced in place, an older one found
    -- by binary search and replaced or inserted
    for i = from, to do
      local member = ARGV[i]
      local t = stamp(member)
      if t > top then
        redis.call('RPUSH', history, member)
        top = t
      elseif t == top then
        redis.call('LSET', history, -1, member)
      else
        local at = first(history, redis.call('LLEN', history), t, false)
        local pivot = redis.call('LINDEX', history, at)
        if stamp(pivot) == t then
          redis.call('LSET', history, at, member)
        else
          redis.call('LINSERT', history, 'BEFORE', pivot, member)
        end
      end
    end
  end
  a = to + 1
  if max_items ~= '' then
    local keep = tonumber(max_items)
    if keep > 0 then
      redis.call('LTRIM', history, -keep, -1)
    else
      redis.call('DEL', history)
    end
  end
  redis.call('HSET', meta, 'max_items', max_items, 'ttl', ttl, 'last_update', now)
  if ttl == '' then
    redis.call('PERSIST', history)
    redis.call('PERSIST', meta)
  else
    local ms = math.floor(tonumber(ttl) * 1000 + 0.5)
    redis.call('PEXPIRE', history, ms)
    redis.call('PEXPIRE', meta, ms)
  end
end
return {fresh, string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''}
"""
)

# KEYS: history. ARGV: count ('' = all), start ('' = none; exclusive), end ('' = none;
# inclusive). Returns the members of the range, oldest first, at most count (the newest).
READ_SCRIPT = (
    _COMMON
    + """
local history = KEYS[1]
local count, start, stop = ARGV[1], ARGV[2], ARGV[3]
local kind = redis.call('TYPE', history).ok
if kind == 'none' or count == '0' then
  return {}
end
if kind == 'zset' then
  local high = stop == '' and '+inf' or stop
  local low = start == '' and '-inf' or '(' .. start
  local members
  if count == '' then
    members = redis.call('ZREVRANGEBYSCORE', history, high, low)
  else
    members = redis.call('ZREVRANGEBYSCORE', history, high, low, 'LIMIT', 0, count)
  end
  local oldest_first = {}
  for i = #members, 1, -1 do oldest_first[#oldest_first + 1] = members[i] end
  return oldest_first
end
if kind ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. history .. ' holds a ' .. kind .. ', not a list')
end
local len = redis.call('LLEN', history)
local low = start == '' and 0 or first(history, len, tonumber(start), true)
local high = (stop == '' and len or first(history, len, tonumber(stop), true)) - 1
if count ~= '' then
  low = math.max(low, high - tonumber(count) + 1)
end
if high < low then
  return {}
end
return redis.call('LRANGE', history, low, high)
"""
)

# KEYS: history, meta. Returns {count, oldest member or false, newest member or false,
# max_items, ttl, last_update}.
META_SCRIPT = """
local history, meta = KEYS[1], KEYS[2]
local kind = redis.call('TYPE', history).ok
local count, oldest, newest = 0, false, false
if kind == 'list' then
  count = redis.call('LLEN', history)
  oldest = redis.call('LINDEX', history, 0)
  newest = redis.call('LINDEX', history, -1)
elseif kind == 'zset' then
  count = redis.call('ZCARD', history)
  oldest = redis.call('ZRANGE', history, 0, 0)[1] or false
  newest = redis.call('ZRANGE', history, -1, -1)[1] or false
elseif kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. history .. ' holds a ' .. kind .. ', not a list')
end
local fields = redis.call('HMGET', meta, 'max_items', 'ttl', 'last_update')
return {count, oldest, newest, fields[1], fields[2], fields[3]}
"""

# KEYS: history, meta. ARGV: ttl ('' = no expiry). Returns 0 when the series does not exist.
TTL_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return 0 end
local ttl = ARGV[1]
redis.call('HSET', KEYS[2], 'ttl', ttl)
if ttl == '' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  local ms = math.floor(tonumber(ttl) * 1000 + 0.5)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
end
return 1
"""

WRITE_SHA = hashlib.sha1(WRITE_SCRIPT.encode()).hexdigest()
READ_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest()
META_SHA = hashlib.sha1(META_SCRIPT.encode()).hexdigest()
TTL_SHA = hashlib.sha1(TTL_SCRIPT.encode()).hexdigest()
SCRIPTS = {
    WRITE_SHA: WRITE_SCRIPT,
    READ_SHA: READ_SCRIPT,
    META_SHA: META_SCRIPT,
    TTL_SHA: TTL_SCRIPT,
}
