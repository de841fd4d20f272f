-- Extend the leases a worker still holds, and record that the worker is alive. The lease is
-- read with lease.lua's functions, prepended (client.rs).
-- KEYS[1] leases, KEYS[2] workers zset, KEYS[3] tokens
-- ARGV[1] key base, ARGV[2] worker id, ARGV[3] lease ms, then pairs: id, token
-- Returns the ids whose lease this worker no longer holds (stale token or not leased).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[3])
local lost = {}
local ids = {}
for i = 4, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
if #ids > 0 then
  local current = redis.call('HMGET', KEYS[3], unpack(ids))
  local renewed = {}
  for k, id in ipairs(ids) do
    if current[k] and lease_holds(current[k], ARGV[4 + (k - 1) * 2 + 1]) then
      renewed[#renewed + 1] = now + lease_ms
      renewed[#renewed + 1] = id
    else
      lost[#lost + 1] = id
    end
  end
  if #renewed > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(renewed)) end
end
redis.call('ZADD', KEYS[2], now, ARGV[2])
-- Forget workers not seen for an hour, at most 100 per call (every range has a LIMIT).
local gone = redis.call('ZRANGE', KEYS[2], '-inf', now - 3600000, 'BYSCORE', 'LIMIT', 0, 100)
if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
return lost
