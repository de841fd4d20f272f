-- Lease up to COUNT ready jobs to one worker, after promoting due delayed and retrying jobs,
-- reclaiming expired leases and trimming old dead letters. Every range has a LIMIT, so the
-- cost of one call is bounded by its arguments, never by the size of the backlog.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] retry, KEYS[4] leases, KEYS[5] dead,
-- KEYS[6] stats, KEYS[7] fence counter, KEYS[8] workers zset
-- ARGV[1] key base, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms,
-- ARGV[5] promote/reclaim limit, ARGV[6] dead retention ms
-- Returns { jobs, reclaimed, next_due_in_ms } where
--   jobs      = flat list of 10 fields per leased job:
--               id, token, attempt, max, kind, args, enq, sched, tick, state_was
--   reclaimed = flat list of 10 fields per expired lease taken back:
--               id, attempt, worker, leased_at, kind, args, enq, dead(1/0), sched, tick
--   next_due_in_ms = ms until the earliest delayed/retrying job is due, -1 if none
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, worker = ARGV[1], ARGV[2]
local count, lease_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dead_retention = tonumber(ARGV[6])

-- 1. Promote due delayed and retrying jobs (oldest due first).
for _, zkey in ipairs({ KEYS[2], KEYS[3] }) do
  local due = redis.call('ZRANGE', zkey, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', zkey, id)
    redis.call('HSET', base .. 'job:' .. id, 'state', 'available')
    redis.call('LPUSH', KEYS[1], id)
  end
end

-- 2. Take back expired leases. An expired lease counts as an attempt: a job that kills its
--    worker every time ends in the dead letters instead of looping forever.
local reclaimed = {}
local expired = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[4], id)
  local job = base .. 'job:' .. id
  local f = redis.call('HMGET', job, 'attempt', 'max', 'worker', 'leased_at', 'kind', 'args', 'enq', 'sched', 'tick')
  if f[1] then
    local attempt, max = tonumber(f[1]), tonumber(f[2])
    local dead = 0
    if attempt >= max then
      dead = 1
      redis.call('HSET', job, 'state', 'discarded', 'finished', now,
        'err', 'lease expired on attempt ' .. attempt .. ' of ' .. max .. ' (worker ' .. (f[3] or '?') .. ')')
      redis.call('ZADD', KEYS[5], now, id)
      redis.call('PEXPIRE', job, dead_retention)
      redis.call('HINCRBY', KEYS[6], 'dead', 1)
    else
      redis.call('HSET', job, 'state', 'available', 'err', 'lease expired (worker ' .. (f[3] or '?') .. ')')
      -- The job already waited its turn: put it where the next pop takes it.
      redis.call('RPUSH', KEYS[1], id)
    end
    redis.call('HINCRBY', KEYS[6], 'reclaimed', 1)
    for _, v in ipairs({ id, f[1], f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[7] or '', dead, f[8] or '', f[9] or '' }) do
      reclaimed[#reclaimed + 1] = v
    end
  end
end

-- 3. Forget dead letters past their retention (their hashes expire by themselves).
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - dead_retention)

-- 4. Lease ready jobs: one HMGET, one HSET and one ZADD per job; tokens come from one INCRBY.
local jobs = {}
if count > 0 then
  local ids = redis.call('RPOP', KEYS[1], count)
  if ids then
    local last_token = redis.call('INCRBY', KEYS[7], #ids)
    local token = last_token - #ids
    for _, id in ipairs(ids) do
      token = token + 1
      local job = base .. 'job:' .. id
      local f = redis.call('HMGET', job, 'kind', 'args', 'attempt', 'max', 'enq', 'sched', 'tick')
      if f[1] then
        local attempt = (tonumber(f[3]) or 0) + 1
        redis.call('HSET', job, 'attempt', attempt, 'state', 'running', 'token', token,
          'worker', worker, 'leased_at', now)
        redis.call('ZADD', KEYS[4], now + lease_ms, id)
        for _, v in ipairs({ id, token, attempt, f[4] or '1', f[1], f[2] or '', f[5] or '0', f[6] or '', f[7] or '', 'ok' }) do
          jobs[#jobs + 1] = v
        end
      else
        -- An id with no job behind it (pushed by hand, or its hash was deleted): keep a record
        -- in the dead letters instead of dropping it silently.
        redis.call('HSET', job, 'kind', '', 'args', '', 'attempt', 0, 'max', 0, 'enq', now,
          'state', 'discarded', 'finished', now, 'err', 'no job data for this id')
        redis.call('PEXPIRE', job, dead_retention)
        redis.call('ZADD', KEYS[5], now, id)
        redis.call('HINCRBY', KEYS[6], 'dead', 1)
        for _, v in ipairs({ id, 0, 0, 0, '', '', now, '', '', 'missing' }) do
          jobs[#jobs + 1] = v
        end
      end
    end
  end
end

redis.call('ZADD', KEYS[8], now, worker)

-- 5. When is the next delayed or retrying job due? Idle workers sleep at most that long.
local next_due = -1
for _, zkey in ipairs({ KEYS[2], KEYS[3] }) do
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or wait < next_due then next_due = wait end
  end
end
return { jobs, reclaimed, next_due }
