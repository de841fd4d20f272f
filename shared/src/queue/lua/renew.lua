-- Extend the leases a worker still holds, and record that the worker is alive.
-- KEYS[1] leases, KEYS[2] workers zset
-- ARGV[1] key base, ARGV[2] worker id, ARGV[3] lease ms, then pairs: id, token
-- Returns the ids whose lease this worker no longer holds (stale token or not running).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, lease_ms = ARGV[1], tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', base .. 'job:' .. id, 'token', 'state')
  if f[1] == token and f[2] == 'running' then
    redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, id)
  else
    lost[#lost + 1] = id
  end
end
redis.call('ZADD', KEYS[2], now, ARGV[2])
-- Forget workers not seen for an hour; bounded by the number of workers that ever ran.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 3600000)
return lost
