"""The Lua scripts of the Redis backend (castate/backends/redis.py has the key layout).

Redis runs each script atomically, so every castate write is all-or-nothing on the
server. Numbers that Lua would round (nanosecond times) are built as decimal strings;
microsecond times (about 1.7e15) are exact in Lua's doubles and in sorted-set scores.
"""

from __future__ import annotations

_CAS = """
local function cas(refs, base, m)
  -- check every expectation against a view of the refs, so a conflict changes nothing
  local view, olds = {}, {}
  for j = 0, m - 1 do
    local k = base + 5 * j
    local name, mode, exp, op, new = ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4]
    local cur
    if view[name] ~= nil then cur = view[name] else cur = redis.call('HGET', refs, name) end
    if (mode == 'absent' and cur) or (mode == 'value' and (not cur or cur ~= exp)) then
      return nil, {'conflict', name, cur or ''}
    end
    olds[j] = cur
    if op == 'del' then view[name] = false else view[name] = new end
  end
  return olds, nil
end

local function now()
  local t = redis.call('TIME')
  local us = t[1] .. string.format('%06d', tonumber(t[2]))
  return us, us .. '000'
end

local function apply(refs, refnames, reflog, base, m, olds, ns, msg)
  for j = 0, m - 1 do
    local k = base + 5 * j
    local name, op, new = ARGV[k], ARGV[k + 3], ARGV[k + 4]
    if op == 'del' then
      redis.call('HDEL', refs, name)
      redis.call('ZREM', refnames, name)
    else
      redis.call('HSET', refs, name, new)
      redis.call('ZADD', refnames, 0, name)
    end
    local fields = {'n', name, 't', ns, 'm', msg}
    if olds[j] then fields[#fields + 1] = 'o'; fields[#fields + 1] = olds[j] end
    if op ~= 'del' then fields[#fields + 1] = 'w'; fields[#fields + 1] = new end
    redis.call('XADD', reflog, '*', unpack(fields))
  end
end
"""

# The write of commit, put_blobs and update_refs.
# KEYS: store, gc, gcshared, blobs, blobsize, blobbytes, refs, refnames, reflog, request, then one key per blob
# ARGV: gc ('check' | 'skip'), gc token, shared token, n blobs, c checks, m updates, message,
#       names (n), data (n), then c x (name, mode, value), then m x (name, mode, expected, op, new)
# With 'check', the write is refused while gc holds its lock, unless it carries gc's token (gc's
# own writes) or the token of a live gc_shared holder (gc is still waiting for that holder).
# Blobs go first (SET NX: an existing name is left alone, its time too), then every check and
# expectation is tested before any ref moves. The request key records a done write for a
# minute, so a resend after a lost reply is a no-op that returns the first reply.
COMMIT = (
    _CAS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local done = redis.call('GET', KEYS[10])
if done then return {'ok', tonumber(done)} end
local us, ns = now()
if ARGV[1] == 'check' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[2] then
    local lease = ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[3], ARGV[3])
    if not lease or tonumber(lease) * 1000 <= tonumber(us) then return {'gc'} end
  end
end
local n, c, m, msg = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local written = 0
for i = 1, n do
  local name, data = ARGV[7 + i], ARGV[7 + n + i]
  if redis.call('SET', KEYS[10 + i], data, 'NX') then
    written = written + 1
    redis.call('ZADD', KEYS[4], us, name)
    redis.call('HSET', KEYS[5], name, #data)
    redis.call('INCRBY', KEYS[6], #data)
  end
end
local base = 8 + 2 * n
for j = 0, c - 1 do
  local k = base + 3 * j
  local name, mode, want = ARGV[k], ARGV[k + 1], ARGV[k + 2]
  local cur = redis.call('HGET', KEYS[7], name)
  if (mode == 'absent' and cur) or (mode == 'value' and cur ~= want) then
    return {'conflict', name, cur or ''}
  end
end
base = base + 3 * c
local olds, err = cas(KEYS[7], base, m)
if err then return err end
apply(KEYS[7], KEYS[8], KEYS[9], base, m, olds, ns, msg)
redis.call('SET', KEYS[10], written, 'PX', 60000)
return {'ok', written}
"""
)

# KEYS: store, refs, refnames, reflog, request.  ARGV: source, message, then one (name, mode, expected, op, new)
COPY_REF = (
    _CAS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local done = redis.call('GET', KEYS[5])
if done then return {'ok', done} end
local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value then return {'missing'} end
ARGV[7] = value
local olds, err = cas(KEYS[2], 3, 1)
if err then return err end
local _, ns = now()
apply(KEYS[2], KEYS[3], KEYS[4], 3, 1, olds, ns, ARGV[2])
redis.call('SET', KEYS[5], value, 'PX', 60000)
return {'ok', value}
"""
)

# KEYS: store, refs.  ARGV: names
GET_REFS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
return {'ok', redis.call('HMGET', KEYS[2], unpack(ARGV))}
"""

# KEYS: store, refs, refnames.  ARGV: prefix.  Returns names and targets, page by page of names.
LIST_REFS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local names
if ARGV[1] == '' then
  names = redis.call('ZRANGE', KEYS[3], 0, -1)
else
  names = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. ARGV[1], '(' .. ARGV[1] .. '\\127')
end
local out = {'ok'}
for i = 1, #names, 1000 do
  local part = {}
  for j = i, math.min(i + 999, #names) do part[#part + 1] = names[j] end
  local values = redis.call('HMGET', KEYS[2], unpack(part))
  for j = 1, #part do out[#out + 1] = part[j]; out[#out + 1] = values[j] end
end
return out
"""

# KEYS: store, blobs, blobsize.  ARGV: prefix.  Returns (name, write time in us, size) triples.
LIST_BLOBS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local all = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local p = ARGV[1]
local names, times = {}, {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #p) == p then
    names[#names + 1] = all[i]
    times[#times + 1] = all[i + 1]
  end
end
local out = {'ok'}
for i = 1, #names, 1000 do
  local part = {}
  for j = i, math.min(i + 999, #names) do part[#part + 1] = names[j] end
  local sizes = redis.call('HMGET', KEYS[3], unpack(part))
  for j = 1, #part do
    out[#out + 1] = part[j]; out[#out + 1] = times[i + j - 1]; out[#out + 1] = sizes[j] or '0'
  end
end
return out
"""

# KEYS: gc, blobs, blobsize, blobbytes, then one key per blob.  ARGV: gc token ('' = none), names
# A delete that carries gc's token is refused once that token no longer holds the lock.
DELETE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'gclost'} end
local gone = 0
for i = 5, #KEYS do
  local name = ARGV[i - 3]
  local size = redis.call('STRLEN', KEYS[i])
  if redis.call('DEL', KEYS[i]) == 1 then
    gone = gone + 1
    redis.call('DECRBY', KEYS[4], size)
  end
  redis.call('ZREM', KEYS[2], name)
  redis.call('HDEL', KEYS[3], name)
end
return {'ok', gone}
"""

# KEYS: store.  ARGV: the marker as read, the marker to write.  A compare-and-set of the
# store marker (the version-1 -> 2 upgrade); 0 when another client changed it meanwhile.
SET_MARKER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: objects, bytes, then one o:<hex> key per id.  ARGV: ids.  Drops version-1 objects.
DROP_LEGACY = """
local gone = 0
for i = 3, #KEYS do
  local size = redis.call('STRLEN', KEYS[i])
  if redis.call('DEL', KEYS[i]) == 1 then
    gone = gone + 1
    redis.call('DECRBY', KEYS[2], size)
  end
  redis.call('ZREM', KEYS[1], ARGV[i - 2])
end
return gone
"""

# KEYS: reflog.  ARGV: before (ns, decimal), most entries to drop.  Entries are in time order.
EXPIRE = """
local function older(a, b) return #a < #b or (#a == #b and a < b) end
local dropped, limit = 0, tonumber(ARGV[2])
while dropped < limit do
  local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 500)
  if #entries == 0 then return dropped end
  for _, e in ipairs(entries) do
    local f, t = e[2], nil
    for i = 1, #f, 2 do if f[i] == 't' then t = f[i + 1] end end
    if not older(t, ARGV[1]) then return dropped end
    redis.call('XDEL', KEYS[1], e[1])
    dropped = dropped + 1
  end
end
return dropped
"""

# KEYS: gc.  ARGV: token, lease ms ('' = release)
GC_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# gc_shared: join the readers of the gc lock (KEYS[1] the gc lock, KEYS[2] the sorted set of
# shared holders, ARGV[1] token, ARGV[2] lease in ms). Refused while gc holds the lock.
SHARED_JOIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# How many shared holders are alive (expired leases are dropped first).
SHARED_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# Extend one shared holder's lease (server time), if it is still registered.
SHARED_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""
