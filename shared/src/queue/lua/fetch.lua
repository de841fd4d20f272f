-- Lease up to COUNT ready jobs to one worker, after promoting due delayed and retrying jobs,
-- reclaiming expired leases and trimming old dead letters. Every range has a LIMIT, so the
-- cost of one call is bounded by its arguments, never by the size of the backlog.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] retry, KEYS[4] leases, KEYS[5] dead,
-- KEYS[6] stats, KEYS[7] fence counter, KEYS[8] workers zset, KEYS[9] tokens hash,
-- KEYS[10] holders hash, KEYS[11] attempts hash, KEYS[12] done zset
-- ARGV[1] key base, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms,
-- ARGV[5] promote/reclaim/clean-up limit, ARGV[6] dead retention ms, ARGV[7] retention ms
-- Returns { jobs, reclaimed, next_due_in_ms } where
--   jobs      = flat list of 10 fields per leased job:
--               id, token, attempt, max, kind, args, enq, sched, tick, state_was
--   reclaimed = flat list of 10 fields per expired lease taken back:
--               id, attempt, worker, leased_at, kind, args, enq, dead(1/0), sched, tick
--   next_due_in_ms = ms until the earliest delayed/retrying job is due, -1 if none or when
--                    jobs were leased (the caller fetches again at once then)
-- The lease itself (token, holder, attempt count) lives in three per-queue hashes written
-- once per batch, so leasing a job costs one HMGET of its hash and nothing else per job.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, worker = ARGV[1], ARGV[2]
local count, lease_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dead_retention = tonumber(ARGV[6])
local retention = tonumber(ARGV[7])
local PIN = '~hashtable-encoding-pin~' .. string.rep('~', 48)

-- 1. Promote due delayed and retrying jobs (oldest due first).
for _, zkey in ipairs({ KEYS[2], KEYS[3] }) do
  local due = redis.call('ZRANGE', zkey, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', zkey, unpack(due))
    for _, id in ipairs(due) do
      redis.call('HSET', base .. 'job:' .. id, 'state', 'available')
    end
    redis.call('LPUSH', KEYS[1], unpack(due))
  end
end

-- 2. Take back expired leases. An expired lease counts as an attempt: a job that kills its
--    worker every time ends in the dead letters instead of looping forever.
local reclaimed = {}
local expired = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
if #expired > 0 then
  redis.call('ZREM', KEYS[4], unpack(expired))
  local holders = redis.call('HMGET', KEYS[10], unpack(expired))
  local attempts = redis.call('HMGET', KEYS[11], unpack(expired))
  redis.call('HDEL', KEYS[9], unpack(expired))
  redis.call('HDEL', KEYS[10], unpack(expired))
  for i, id in ipairs(expired) do
    local job = base .. 'job:' .. id
    local f = redis.call('HMGET', job, 'max', 'kind', 'args', 'enq', 'sched', 'tick')
    local holder = holders[i] or '|'
    local sep = string.find(holder, '|', 1, true) or (#holder + 1)
    local held_by, leased_at = string.sub(holder, 1, sep - 1), string.sub(holder, sep + 1)
    local attempt = tonumber(attempts[i]) or 1
    local max = tonumber(f[1]) or 1
    local dead = 0
    if attempt >= max then
      dead = 1
      redis.call('HSET', job, 'state', 'discarded', 'finished', now, 'attempt', attempt,
        'err', 'lease expired on attempt ' .. attempt .. ' of ' .. max .. ' (worker ' .. held_by .. ')')
      redis.call('HDEL', KEYS[11], id)
      redis.call('ZADD', KEYS[5], now, id)
      redis.call('PEXPIRE', job, dead_retention)
      redis.call('HINCRBY', KEYS[6], 'dead', 1)
    else
      redis.call('HSET', job, 'err', 'lease expired (worker ' .. held_by .. ')')
      -- The job already waited its turn: put it where the next pop takes it.
      redis.call('RPUSH', KEYS[1], id)
    end
    redis.call('HINCRBY', KEYS[6], 'reclaimed', 1)
    for _, v in ipairs({ id, attempt, held_by, leased_at, f[2] or '', f[3] or '', f[4] or '', dead, f[5] or '', f[6] or '' }) do
      reclaimed[#reclaimed + 1] = v
    end
  end
end

-- 3. Forget dead letters past their retention (their hashes expire by themselves), and delete
--    completed jobs past theirs, in bulk: completing a job costs no per-job command.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - dead_retention)
local more_to_clean = false
local finished = redis.call('ZRANGE', KEYS[12], '-inf', now - retention, 'BYSCORE', 'LIMIT', 0, limit)
if #finished > 0 then
  local job_keys = {}
  for i, id in ipairs(finished) do job_keys[i] = base .. 'job:' .. id end
  redis.call('UNLINK', unpack(job_keys))
  redis.call('HDEL', KEYS[11], unpack(finished))
  redis.call('ZREM', KEYS[12], unpack(finished))
  more_to_clean = #finished == limit
end

-- 4. Lease ready jobs.
local jobs = {}
if count > 0 then
  local ids = redis.call('RPOP', KEYS[1], count)
  if ids then
    local n = #ids
    local first_token = redis.call('INCRBY', KEYS[7], n) - n
    local previous = redis.call('HMGET', KEYS[11], unpack(ids))
    local holder = worker .. '|' .. now
    -- Formatted once: Lua turns a number argument into text with printf on every use.
    local deadline = tostring(now + lease_ms)
    local leases, tokens, holders, attempts = {}, {}, {}, {}
    for i, id in ipairs(ids) do
      local job = base .. 'job:' .. id
      local f = redis.call('HMGET', job, 'kind', 'args', 'max', 'enq', 'sched', 'tick')
      local k = #jobs
      if f[1] then
        local token = first_token + i
        local attempt = (tonumber(previous[i]) or 0) + 1
        local l = #leases
        leases[l + 1] = deadline
        leases[l + 2] = id
        tokens[l + 1] = id
        tokens[l + 2] = token
        holders[l + 1] = id
        holders[l + 2] = holder
        attempts[l + 1] = id
        attempts[l + 2] = attempt
        jobs[k + 1] = id
        jobs[k + 2] = token
        jobs[k + 3] = attempt
        jobs[k + 4] = f[3] or '1'
        jobs[k + 5] = f[1]
        jobs[k + 6] = f[2] or ''
        jobs[k + 7] = f[4] or '0'
        jobs[k + 8] = f[5] or ''
        jobs[k + 9] = f[6] or ''
        jobs[k + 10] = 'ok'
      else
        -- An id with no job behind it (pushed by hand, or its hash was deleted): keep a record
        -- in the dead letters instead of dropping it silently.
        redis.call('HSET', job, 'kind', '', 'args', '', 'attempt', 0, 'max', 0, 'enq', now,
          'state', 'discarded', 'finished', now, 'err', 'no job data for this id')
        redis.call('PEXPIRE', job, dead_retention)
        redis.call('ZADD', KEYS[5], now, id)
        redis.call('HINCRBY', KEYS[6], 'dead', 1)
        jobs[k + 1] = id
        jobs[k + 2] = 0
        jobs[k + 3] = 0
        jobs[k + 4] = 0
        jobs[k + 5] = ''
        jobs[k + 6] = ''
        jobs[k + 7] = now
        jobs[k + 8] = ''
        jobs[k + 9] = ''
        jobs[k + 10] = 'missing'
      end
    end
    if #leases > 0 then
      redis.call('ZADD', KEYS[4], unpack(leases))
      -- PIN, a field longer than hash-max-listpack-value, keeps these two hashes in hashtable
      -- encoding for good: as listpacks (up to 128 live leases) every field lookup would be a
      -- linear scan of 36-byte ids, about a sixth of Redis's time per job. It is never read.
      redis.call('HSET', KEYS[9], PIN, '', unpack(tokens))
      redis.call('HSET', KEYS[10], PIN, '', unpack(holders))
      redis.call('HSET', KEYS[11], unpack(attempts))
    end
  end
end

redis.call('ZADD', KEYS[8], now, worker)

-- 5. When is the next delayed or retrying job due, or the next completed job to delete?
--    Idle workers sleep at most that long. A worker that got jobs fetches again without
--    waiting, so this is only computed for an empty fetch.
local next_due = -1
if #jobs == 0 then
  for z, zkey in ipairs({ KEYS[2], KEYS[3], KEYS[12] }) do
    local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if z == 3 then at = at + retention end
      local wait = math.max(0, at - now)
      if next_due < 0 or wait < next_due then next_due = wait end
    end
  end
end
if more_to_clean then next_due = 0 end
return { jobs, reclaimed, next_due }
