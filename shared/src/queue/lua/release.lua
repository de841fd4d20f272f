-- Give leased jobs back to the queue (a worker shutting down, or a fetched job it will not run).
-- KEYS[1] leases, KEYS[2] ready, KEYS[3] wake, KEYS[4] workers, KEYS[5] tokens,
-- KEYS[6] holders, KEYS[7] attempts, KEYS[8] dead, KEYS[9] stats
-- ARGV[1] key base, ARGV[2] worker id ('' = keep it registered), ARGV[3] dead retention ms,
--   then triples: id, token, started (1 if the attempt ran and counts, 0 if it never started
--   and is given back unused)
-- A started attempt counts: on the last attempt the job is a dead letter instead, so max
-- attempts bounds a job that outlives the grace period at every deploy.
-- Returns the number of jobs released (to ready or to the dead letters).
-- The lease is read with lease.lua's functions, prepended (client.rs).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local dead_retention = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, 3 do
  local id, token, started = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lease = redis.call('HGET', KEYS[5], id)
  if lease and lease_holds(lease, token) then
    local job = base .. 'job:' .. id
    local _, attempt = lease_parts(lease)
    attempt = attempt or tonumber(redis.call('HGET', KEYS[7], id)) or 1
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
    if started == '0' then
      -- Not counted: the job has used one attempt fewer (no entry for none, see fetch.lua).
      if attempt > 1 then
        redis.call('HSET', KEYS[7], id, attempt - 1)
      else
        redis.call('HDEL', KEYS[7], id)
      end
      redis.call('HSET', job, 'state', 'available')
      redis.call('RPUSH', KEYS[2], id)
      redis.call('LPUSH', KEYS[3], 1)
    else
      local f = redis.call('HMGET', job, 'max', 'idem')
      local max = tonumber(f[1]) or 1
      redis.call('HINCRBY', KEYS[9], 'failed', 1)
      local minute = base .. 'tp:' .. math.floor(now / 60000)
      redis.call('HINCRBY', minute, 'f', 1)
      redis.call('PEXPIRE', minute, 7200000)
      if attempt >= max then
        redis.call('HSET', job, 'state', 'discarded', 'finished', now, 'attempt', attempt,
          'err', 'worker stopped during attempt ' .. attempt .. ' of ' .. max)
        redis.call('HDEL', KEYS[7], id)
        redis.call('PEXPIRE', job, dead_retention)
        if f[2] then redis.call('PEXPIRE', base .. 'idem:' .. f[2], dead_retention) end
        redis.call('ZADD', KEYS[8], now, id)
        redis.call('HINCRBY', KEYS[9], 'dead', 1)
      else
        redis.call('HSET', job, 'state', 'available', 'avail', now,
          'err', 'worker stopped during attempt ' .. attempt)
        redis.call('HSET', KEYS[7], id, attempt)
        redis.call('HINCRBY', KEYS[9], 'retried', 1)
        redis.call('RPUSH', KEYS[2], id)
        redis.call('LPUSH', KEYS[3], 1)
      end
    end
    n = n + 1
  end
end
redis.call('LTRIM', KEYS[3], 0, 63)
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[4], ARGV[2]) end
return n
