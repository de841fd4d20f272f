-- Operator action: move a dead job back to the ready list with a fresh attempt budget.
-- KEYS[1] dead, KEYS[2] ready, KEYS[3] wake, KEYS[4] attempts, KEYS[5] stats
-- ARGV[1] key base, ARGV[2] id
-- Returns 1 when requeued, 0 when the id is not a dead letter (or its data has expired).
local job = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false or redis.call('EXISTS', job) == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[2])
-- Attempts keep counting (job_runs is unique on job id + attempt); the budget restarts:
-- `base` is the attempt count when the current budget began, `max` the absolute limit.
local f = redis.call('HMGET', job, 'err', 'attempt', 'max', 'base', 'idem')
local attempt, max, base = tonumber(f[2]) or 0, tonumber(f[3]) or 1, tonumber(f[4]) or 0
local budget = math.max(1, max - base)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', job, 'state', 'available', 'base', attempt, 'max', attempt + budget,
  'prev_err', f[1] or '', 'avail', now)
redis.call('HDEL', job, 'err', 'finished')
redis.call('HSET', KEYS[4], ARGV[2], attempt)
redis.call('PERSIST', job)
-- The job can be acted on again: so can its idempotency key.
if f[5] then redis.call('PERSIST', ARGV[1] .. 'idem:' .. f[5]) end
redis.call('HINCRBY', KEYS[5], 'requeued', 1)
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
