-- Settle a batch of attempts. Each settlement carries the lease's fencing token; one whose token
-- is no longer the job's current token (the lease expired and the job was leased again) is
-- refused and reported, never applied.
-- KEYS[1] leases, KEYS[2] retry, KEYS[3] dead, KEYS[4] stats, KEYS[5] wake
-- ARGV[1] key base, ARGV[2] retention ms (finished jobs), ARGV[3] dead retention ms,
-- then 5 fields per settlement: id, token, verdict (done|retry|dead), retry delay ms, error
-- Returns a flat list of 2 fields per settlement: id, applied state
--   (completed|retryable|discarded) or 'refused' when the token is stale.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local retention, dead_retention = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local n_done, n_failed, n_dead, n_retried = 0, 0, 0, 0
local unleased = {}
for i = 4, #ARGV, 5 do
  local id, token, verdict, delay, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  local job = base .. 'job:' .. id
  local f = redis.call('HMGET', job, 'token', 'state', 'attempt', 'max')
  local state
  if f[1] ~= token or f[2] ~= 'running' then
    state = 'refused'
  else
    unleased[#unleased + 1] = id
    if verdict == 'retry' and tonumber(f[3]) >= tonumber(f[4]) then verdict = 'dead' end
    if verdict == 'done' then
      redis.call('HSET', job, 'state', 'completed', 'finished', now)
      if tonumber(f[3]) > 1 then redis.call('HDEL', job, 'err') end
      redis.call('PEXPIRE', job, retention)
      n_done = n_done + 1
      state = 'completed'
    elseif verdict == 'retry' then
      redis.call('HSET', job, 'state', 'retryable', 'err', err)
      redis.call('ZADD', KEYS[2], now + delay, id)
      n_failed = n_failed + 1
      n_retried = n_retried + 1
      state = 'retryable'
    else
      redis.call('HSET', job, 'state', 'discarded', 'err', err, 'finished', now)
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('PEXPIRE', job, dead_retention)
      n_failed = n_failed + 1
      n_dead = n_dead + 1
      state = 'discarded'
    end
  end
  out[#out + 1] = id
  out[#out + 1] = state
end
-- One ZREM for the batch; the batch size is bounded by the caller (at most 1024).
if #unleased > 0 then redis.call('ZREM', KEYS[1], unpack(unleased)) end
if n_done > 0 then redis.call('HINCRBY', KEYS[4], 'succeeded', n_done) end
if n_failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', n_failed) end
if n_retried > 0 then redis.call('HINCRBY', KEYS[4], 'retried', n_retried) end
if n_dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead', n_dead) end
-- A scheduled retry wakes one idle worker, so it learns the due time instead of sleeping past it.
if n_retried > 0 then
  redis.call('LPUSH', KEYS[5], 1)
  redis.call('LTRIM', KEYS[5], 0, 63)
end
return out
