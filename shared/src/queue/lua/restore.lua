-- Reconciliation: put back jobs that Redis lost (their hash is gone) although the ledger says
-- they never finished. A job whose hash exists is left alone, whatever its state, so running
-- this twice (two replicas, or an operator and the periodic pass) restores a job once.
-- KEYS[1] ready list, KEYS[2] wake list, KEYS[3] attempts hash, KEYS[4] stats hash
-- A restored job counts as enqueued: it is a job Redis holds again.
-- ARGV[1] key base, then 8 fields per job: id, kind, args, attempts so far, attempt budget,
--         enqueue time ms, schedule ('' = none), tick ms ('' = none)
-- Attempts keep counting from the ledger's last one (job_runs is unique on job id + attempt),
-- with a fresh budget, as requeue.lua does for a dead job.
-- Returns one integer per job: 1 restored, 0 already known to Redis.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local out = {}
local n_restored = 0
for i = 2, #ARGV, 8 do
  local id, kind, args = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local attempts, budget, enq = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), ARGV[i + 5]
  local sched, tick = ARGV[i + 6], ARGV[i + 7]
  local job = base .. 'job:' .. id
  if redis.call('EXISTS', job) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', job, 'kind', kind, 'args', args, 'attempt', attempts,
      'base', attempts, 'max', attempts + math.max(1, budget), 'enq', enq, 'run_at', now,
      'state', 'available', 'restored', now, 'avail', now)
    if sched ~= '' then redis.call('HSET', job, 'sched', sched) end
    if tick ~= '' then redis.call('HSET', job, 'tick', tick) end
    if attempts > 0 then redis.call('HSET', KEYS[3], id, attempts) end
    -- It waited its turn once already: the next pop takes it.
    redis.call('RPUSH', KEYS[1], id)
    n_restored = n_restored + 1
    out[#out + 1] = 1
  end
end
if n_restored > 0 then
  redis.call('HINCRBY', KEYS[4], 'enqueued', n_restored)
  for _ = 1, math.min(n_restored, 16) do redis.call('LPUSH', KEYS[2], 1) end
  redis.call('LTRIM', KEYS[2], 0, 63)
end
return out
