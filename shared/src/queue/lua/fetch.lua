-- Lease up to COUNT ready jobs to one worker, after promoting due delayed and retrying jobs,
-- taking over expired leases and trimming old dead letters and completed jobs. Every range has a LIMIT, so the
-- cost of one call is bounded by its arguments, never by the size of the backlog.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] retry, KEYS[4] leases, KEYS[5] dead,
-- KEYS[6] stats, KEYS[7] fence counter, KEYS[8] workers zset, KEYS[9] tokens hash,
-- KEYS[10] holders hash, KEYS[11] attempts hash, KEYS[12] done zset
-- ARGV[1] key base, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms,
-- ARGV[5] promote/reclaim/clean-up limit, ARGV[6] dead retention ms, ARGV[7] retention ms,
-- ARGV[8] idempotency ttl ms
-- Returns { jobs, reclaimed, next_due_in_ms, incarnation } where
--   jobs      = one string, the leased jobs one after another, each
--               'token|attempt|max|state_was|#id|#p|' followed by the id and the job's packed
--               part `p` (enqueue.lua: 'max|enq|tick|#kind|#args|#sched|#inc|' then kind, args,
--               sched and the incarnation that created the job), back to back (#x is x's length
--               in bytes, so the free-text fields need no escaping). `max` here is empty when
--               the one in `p` holds, and the job's current limit when a requeue may have
--               changed it. One reply string for the whole batch instead of four per job: Redis
--               converts, and the worker's RESP parser reads, one value instead of hundreds.
--               state_was is '' or 'missing' (no job data: dead-lettered here).
--   incarnation = this server's incarnation (incarnation.lua; '' when INFO is denied): a job
--               whose packed incarnation differs was created by another incarnation of this
--               server, so a restart or failover may have lost its earlier leases and acks, and
--               the worker asks the ledger before running it even on attempt 1. The worker
--               compares them: no per-job comparison here.
--   reclaimed = flat list of 11 fields per expired lease taken back as a verdict lease:
--               id, new token, attempt, worker, leased_at, kind, args, enq, max, sched, tick
--   next_due_in_ms = ms until the earliest delayed/retrying job is due, -1 if none, or -2
--                    when the ready list may hold more (as many were leased as asked for): the
--                    caller fetches again at once then. Computed whenever the list ran out,
--                    with or without jobs leased, so a worker that drained it waits on the
--                    wake list instead of paying a fetch that finds nothing.
-- A lease is one value in the tokens hash, 'token|attempt|worker|leased_at' (lease.lua, which
-- also reads the three-hash leases of an earlier release), written once per batch: leasing a
-- job costs one HGET of its hash's `p` and nothing else per job. `attempts` holds the attempts a
-- job has used only once that count matters beyond its lease: from its second attempt on, and
-- after an attempt that ended without completing it (ack.lua, release.lua). A job on its first
-- attempt, the common case, has no entry, and while the hash does not exist (no job of the
-- queue was ever retried, given back or requeued within the retention) it is not read at all.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, worker = ARGV[1], ARGV[2]
local count, lease_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dead_retention = tonumber(ARGV[6])
local retention = tonumber(ARGV[7])
local idem_ttl = tonumber(ARGV[8])
local dead_reason = 'attempt limit reached before the attempt started'
local PIN = '~hashtable-encoding-pin~' .. string.rep('~', 48)
-- A number passed to redis.call is turned into text with printf('%.14g'), a multi-precision
-- float conversion; tokens and attempts are formatted as integers instead ('%d', or a table for
-- the common attempt numbers): 2 % fewer instructions per leased and settled job (callgrind).
local format = string.format
-- Four reply strings per leased job instead of ten: each one costs Redis a reply conversion
-- and the worker a RESP parse, which together cost about as much as leasing the job.
local concat = table.concat
local DIGITS = { '1', '2', '3', '4', '5', '6', '7', '8', '9' }
-- The lengths in the packed reply, each formatted once per call (most are the same every time).
local LENGTHS = {}
local function length(s)
  local n = #s
  local text = LENGTHS[n]
  if not text then
    text = format('%d', n)
    LENGTHS[n] = text
  end
  return text
end
-- A job's packed part as enqueue.lua writes it, from its fields by name: for a job enqueued by
-- an earlier release, or restored (restore.lua), whose hash has no `p`. `f` is the HMGET of
-- kind, args, max, enq, sched, tick, inc; numbers that are not numbers become the defaults.
local function pack(f)
  local kind, args, sched, inc = f[1], f[2] or '', f[5] or '', f[7] or ''
  return (tonumber(f[3]) and f[3] or '1') .. '|' .. (tonumber(f[4]) and f[4] or '0') .. '|'
    .. (tonumber(f[6]) and f[6] or '') .. '|' .. length(kind) .. '|' .. length(args) .. '|'
    .. length(sched) .. '|' .. length(inc) .. '|' .. kind .. args .. sched .. inc
end

-- 1. Promote due delayed and retrying jobs (oldest due first). `avail` records when a job
--    became ready, so the oldest pending age measures the wait since then.
for _, zkey in ipairs({ KEYS[2], KEYS[3] }) do
  local due = redis.call('ZRANGE', zkey, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
  if #due > 0 then
    local ids = {}
    for i = 1, #due, 2 do
      ids[#ids + 1] = due[i]
      redis.call('HSET', base .. 'job:' .. due[i], 'state', 'available', 'avail', due[i + 1])
    end
    redis.call('ZREM', zkey, unpack(ids))
    redis.call('LPUSH', KEYS[1], unpack(ids))
  end
end

-- 2. Take back expired leases. The script cannot know whether the lost attempt's result is
--    already committed in the ledger (a worker that committed and was paused before its ack),
--    so it decides nothing: each expired lease becomes a new lease of this worker, a *verdict
--    lease* with a new token and the same attempt count. The worker records the attempt as
--    abandoned, reads back what the ledger holds for it, and settles the job to that: done or
--    dead when the ledger has that verdict, otherwise given back to `ready` (or dead on the
--    last attempt) with the attempt counted, so a job that kills its worker ends dead instead
--    of looping. If this worker dies too, the verdict lease expires and the next fetch takes
--    it over in the same way.
local reclaimed = {}
local expired = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
if #expired > 0 then
  local current = redis.call('HMGET', KEYS[9], unpack(expired))
  local first_token = redis.call('INCRBY', KEYS[7], #expired) - #expired
  local deadline = tostring(now + lease_ms)
  local holder = worker .. '|' .. now
  local leases, tokens, gone, legacy = {}, {}, {}, {}
  for i, id in ipairs(expired) do
    local job = base .. 'job:' .. id
    local f = redis.call('HMGET', job, 'max', 'kind', 'args', 'enq', 'sched', 'tick')
    if f[2] then
      local _, attempt, previous = lease_parts(current[i] or '')
      if not previous then
        -- A lease of an earlier release: its holder and count are in their own hashes.
        previous = redis.call('HGET', KEYS[10], id)
        legacy[#legacy + 1] = id
      end
      attempt = attempt or tonumber(redis.call('HGET', KEYS[11], id)) or 1
      previous = previous or '|'
      local sep = string.find(previous, '|', 1, true) or (#previous + 1)
      local held_by, leased_at = string.sub(previous, 1, sep - 1), string.sub(previous, sep + 1)
      local token = format('%d', first_token + i)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      tokens[#tokens + 1] = id
      tokens[#tokens + 1] = token .. '|' .. format('%d', attempt) .. '|' .. holder
      for _, v in ipairs({ id, token, attempt, held_by, leased_at, f[2], f[3] or '',
          f[4] or '', f[1] or '1', f[5] or '', f[6] or '' }) do
        reclaimed[#reclaimed + 1] = v
      end
    else
      -- The job's hash is gone (deleted by hand): nothing to run or settle.
      gone[#gone + 1] = id
    end
  end
  if #leases > 0 then
    redis.call('ZADD', KEYS[4], unpack(leases))
    redis.call('HSET', KEYS[9], PIN, '', unpack(tokens))
    redis.call('HINCRBY', KEYS[6], 'reclaimed', #leases / 2)
  end
  if #legacy > 0 then redis.call('HDEL', KEYS[10], unpack(legacy)) end
  if #gone > 0 then
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('HDEL', KEYS[9], unpack(gone))
    redis.call('HDEL', KEYS[10], unpack(gone))
    redis.call('HDEL', KEYS[11], unpack(gone))
  end
end

-- 3. Forget dead letters past their retention (their hashes and idempotency keys expire by
--    themselves), and delete completed jobs past theirs, in bulk: completing a job costs no
--    per-job command. Both ranges are bounded; what is left is taken by the next fetch.
local more_to_clean = false
local stale = redis.call('ZRANGE', KEYS[5], '-inf', now - dead_retention, 'BYSCORE', 'LIMIT', 0, limit)
if #stale > 0 then
  redis.call('ZREM', KEYS[5], unpack(stale))
  more_to_clean = #stale == limit
end
local finished = redis.call('ZRANGE', KEYS[12], '-inf', now - retention, 'BYSCORE', 'LIMIT', 0, limit)
if #finished > 0 then
  local job_keys = {}
  for i, id in ipairs(finished) do
    job_keys[i] = base .. 'job:' .. id
    -- An idempotency key lives as long as its job, and at least its own TTL from enqueue.
    local f = redis.call('HMGET', job_keys[i], 'idem', 'enq')
    if f[1] then
      redis.call('PEXPIREAT', base .. 'idem:' .. f[1], math.max(now + 1, (tonumber(f[2]) or 0) + idem_ttl))
    end
  end
  redis.call('UNLINK', unpack(job_keys))
  redis.call('HDEL', KEYS[11], unpack(finished))
  redis.call('ZREM', KEYS[12], unpack(finished))
  more_to_clean = more_to_clean or #finished == limit
end

-- 4. Lease ready jobs.
local jobs = {}
local drained = count <= 0
-- Read only when something is leased: INFO is the costliest call of an otherwise idle fetch.
local current = ''
if count > 0 then
  local ids = redis.call('RPOP', KEYS[1], count)
  drained = not ids or #ids < count
  if ids then
    local n = #ids
    local first_token = redis.call('INCRBY', KEYS[7], n) - n
    -- Attempts used so far, for the jobs that have an entry (see the top of this script).
    local previous = {}
    if redis.call('EXISTS', KEYS[11]) == 1 then
      previous = redis.call('HMGET', KEYS[11], unpack(ids))
    end
    local holder = worker .. '|' .. now
    -- Formatted once: Lua turns a number argument into text with printf on every use.
    local deadline = tostring(now + lease_ms)
    -- incarnation() comes from incarnation.lua.
    current = incarnation()
    local leases, tokens, counted = {}, {}, {}
    local job_prefix = base .. 'job:'
    -- Filled slots of `jobs` and of `leases`/`tokens`, counted here: `#t` is a search.
    local k, l = 0, 0
    -- A numeric loop: `ipairs` calls a C function per step.
    for i = 1, n do
      local id = ids[i]
      local job = job_prefix .. id
      local packed = redis.call('HGET', job, 'p')
      -- `previous[i]` is false for a job without an entry: attempt 1, nothing to parse.
      local used = previous[i]
      local attempt = used and (tonumber(used) or 0) + 1 or 1
      -- The limit when it may differ from the packed one, '' otherwise.
      local max_text = ''
      local over
      if packed then
        if used then
          -- requeue.lua rewrites `max` and always leaves an `attempts` entry; a job without
          -- one still has the limit it was enqueued with, the one packed in `p`.
          max_text = redis.call('HGET', job, 'max') or '1'
          over = attempt > (tonumber(max_text) or 1)
        else
          -- Attempt 1 is over the limit only when the limit is 0: `p` then starts with '0|'.
          over = string.byte(packed, 1) == 48 and string.byte(packed, 2) == 124
        end
      else
        local f = redis.call('HMGET', job, 'kind', 'args', 'max', 'enq', 'sched', 'tick', 'inc')
        if f[1] then
          packed = pack(f)
          over = attempt > (tonumber(f[3]) or 1)
        end
      end
      if packed and over then
        -- Max attempts is a hard bound on every path: a job that already used its budget (an
        -- older release that did not count it) is a dead letter, not an extra attempt.
        redis.call('HSET', job, 'state', 'discarded', 'finished', now, 'attempt', attempt - 1,
          'err', dead_reason)
        redis.call('HDEL', KEYS[11], id)
        redis.call('PEXPIRE', job, dead_retention)
        redis.call('ZADD', KEYS[5], now, id)
        redis.call('HINCRBY', KEYS[6], 'dead', 1)
        local idem = redis.call('HGET', job, 'idem')
        if idem then redis.call('PEXPIRE', base .. 'idem:' .. idem, dead_retention) end
      elseif packed then
        local token_text = format('%d', first_token + i)
        local attempt_text = DIGITS[attempt] or format('%d', attempt)
        leases[l + 1] = deadline
        leases[l + 2] = id
        tokens[l + 1] = id
        tokens[l + 2] = token_text .. '|' .. attempt_text .. '|' .. holder
        l = l + 2
        if attempt > 1 then
          counted[#counted + 1] = id
          counted[#counted + 1] = attempt_text
        end
        -- One concatenation: Lua builds the header in one buffer, no table per job. The lengths
        -- read `LENGTHS` first and call `length` only for a new one.
        jobs[k + 1] = token_text .. '|' .. attempt_text .. '|' .. max_text .. '||'
          .. (LENGTHS[#id] or length(id)) .. '|' .. (LENGTHS[#packed] or length(packed)) .. '|'
          .. id
        jobs[k + 2] = packed
        k = k + 2
      else
        -- An id with no job behind it (pushed by hand, or its hash was deleted): keep a record
        -- in the dead letters instead of dropping it silently.
        redis.call('HSET', job, 'kind', '', 'args', '', 'attempt', 0, 'max', 0, 'enq', now,
          'state', 'discarded', 'finished', now, 'err', 'no job data for this id')
        redis.call('PEXPIRE', job, dead_retention)
        redis.call('ZADD', KEYS[5], now, id)
        redis.call('HINCRBY', KEYS[6], 'dead', 1)
        local missing = '0|' .. now .. '||0|0|0|0|'
        jobs[k + 1] = '0|0|0|missing|' .. length(id) .. '|' .. length(missing) .. '|' .. id
          .. missing
        k = k + 1
      end
    end
    if l > 0 then
      redis.call('ZADD', KEYS[4], unpack(leases))
      -- PIN, a field longer than hash-max-listpack-value, keeps this hash in hashtable
      -- encoding for good: as a listpack (up to 128 live leases) every field lookup would be a
      -- linear scan of 36-byte ids, about a sixth of Redis's time per job. It is never read.
      redis.call('HSET', KEYS[9], PIN, '', unpack(tokens))
      -- From its second attempt on, a job's count is also kept where it outlives the lease (and
      -- where a worker of an earlier release reads it).
      if #counted > 0 then redis.call('HSET', KEYS[11], unpack(counted)) end
    end
  end
end

redis.call('ZADD', KEYS[8], now, worker)

-- 5. When is the next delayed or retrying job due, or the next completed job to delete?
--    Idle workers sleep at most that long. A worker whose fetch filled up fetches again
--    without waiting, so this is only computed when the ready list ran out.
local next_due = -2
if drained then
  next_due = -1
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
-- More to clean: fetch again soon, even when idle (at once anyway when the list may hold more).
if more_to_clean and next_due ~= -2 then next_due = 0 end
return { concat(jobs), reclaimed, next_due, current }
