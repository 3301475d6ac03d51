"""The server-side Lua scripts of :mod:`qmtl_state_redis.backend`, with their SHA1 digests
(``EVALSHA`` names a script by digest; ``SCRIPTS`` maps a digest back to its text to reload it
after a server restart forgot it)."""

from __future__ import annotations

import hashlib

# KEYS: (history, meta) per group of consecutive writes to one series with the same settings.
# ARGV: now, then per group: n, max_items ('' = keep all), ttl ('' = no expiry), then n pairs
# (ts, member).
# Returns {groups, run_id}: the (1-based) groups whose series had no metadata before this write
# (new, expired, deleted, or lost in a restart), and the server run's id, which changes when
# redis-server restarts.
WRITE_SCRIPT = """
-- Refuse before changing anything when a key holds something QMTL did not write; note the
-- series that have no metadata yet (new, or vanished).
local fresh = {}
for g = 1, #KEYS, 2 do
  local kind = redis.call('TYPE', KEYS[g]).ok
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[g] .. ' holds a ' .. kind .. ', not a sorted set')
  end
  kind = redis.call('TYPE', KEYS[g + 1]).ok
  if kind == 'none' then
    fresh[#fresh + 1] = (g + 1) / 2
  elseif kind ~= 'hash' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[g + 1] .. ' holds a ' .. kind .. ', not a hash')
  end
end
local now = ARGV[1]
local a = 2
for g = 1, #KEYS, 2 do
  local history, meta = KEYS[g], KEYS[g + 1]
  local n, max_items, ttl = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  -- Buckets newer than the newest stored one cannot replace anything: add them in one ZADD.
  -- An older bucket first drops the member it replaces.
  local top = redis.call('ZRANGE', history, -1, -1, 'WITHSCORES')[2]
  top = top and tonumber(top) or -math.huge
  local newer = {}
  for _ = 1, n do
    local ts = ARGV[a]
    local t = tonumber(ts)
    if t > top then
      top = t
      newer[#newer + 1] = ts
      newer[#newer + 1] = ARGV[a + 1]
    else
      if #newer > 0 then
        redis.call('ZADD', history, unpack(newer))
        newer = {}
      end
      redis.call('ZREMRANGEBYSCORE', history, ts, ts)
      redis.call('ZADD', history, ts, ARGV[a + 1])
    end
    a = a + 2
  end
  if #newer > 0 then
    redis.call('ZADD', history, unpack(newer))
  end
  if max_items ~= '' then
    local keep = tonumber(max_items)
    if keep > 0 then
      redis.call('ZREMRANGEBYRANK', history, 0, -keep - 1)
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
TTL_SHA = hashlib.sha1(TTL_SCRIPT.encode()).hexdigest()
SCRIPTS = {WRITE_SHA: WRITE_SCRIPT, TTL_SHA: TTL_SCRIPT}
