-- Give leased jobs back to the queue (a worker shutting down, or a fetched job it will not run).
-- KEYS[1] leases, KEYS[2] ready, KEYS[3] wake, KEYS[4] workers, KEYS[5] tokens,
-- KEYS[6] holders, KEYS[7] attempts
-- ARGV[1] key base, ARGV[2] worker id ('' = keep it registered), then triples: id, token,
--   started (1 if the attempt ran and counts, 0 if it never started and is given back unused)
-- Returns the number of jobs released.
local n = 0
for i = 3, #ARGV, 3 do
  local id, token, started = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HGET', KEYS[5], id) == token then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
    if started == '0' then redis.call('HINCRBY', KEYS[7], id, -1) end
    redis.call('RPUSH', KEYS[2], id)
    redis.call('LPUSH', KEYS[3], 1)
    n = n + 1
  end
end
redis.call('LTRIM', KEYS[3], 0, 63)
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[4], ARGV[2]) end
return n
