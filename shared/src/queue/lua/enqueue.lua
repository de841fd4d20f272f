-- Enqueue a batch of jobs into one queue. Bounded by the batch size the caller sends.
-- KEYS[1] ready list, KEYS[2] delayed zset, KEYS[3] stats hash, KEYS[4] wake list,
-- KEYS[5] done zset, KEYS[6] tokens hash
-- ARGV[1] key base "<prefix>:{<queue>}:" (job and idempotency keys are built from it,
--         and share the queue's hash tag), ARGV[2] idempotency ttl ms (unused here: the key
--         gets its expiry when its job does, see below),
-- then 8 fields per job: id, kind, args, max_attempts, run_at_ms (0 = now), idem_key ('' = none),
--         schedule ('' = none), tick_ms ('' = none)
-- Returns a flat array of 3 fields per job: the id that stands for it; 1 if it was enqueued now,
-- 0 if an earlier job with the same idempotency key already stands for it; and for a duplicate
-- that job's current state (scheduled, available, running, retryable, completed, discarded, or
-- gone when Redis no longer has it), '' for a new job.
-- An idempotency key has no expiry while its job can still be acted on (delayed, ready, leased,
-- retrying, however long that takes): it is given one when the job's own record gets one, the
-- same as a dead letter's (ack.lua, release.lua, fetch.lua), or the later of the job's deletion
-- after retention and enqueue + ttl (fetch.lua). A requeued dead letter's key loses its expiry
-- again (requeue.lua).
-- Every new job's hash records the incarnation of the server that created it (its run_id, new
-- at every start, and its master_replid, new at every promotion): the worker checks the ledger
-- before a first delivery only for jobs from another incarnation, the only ones whose leases
-- and acks a restart or failover can have lost. Without INFO (an ACL that denies it) it is
-- empty, and every first delivery is checked. incarnation() comes from incarnation.lua,
-- prepended to this script (client.rs).
-- A job's hash keeps each field a reader looks up by name (kind, args, max, enq, ...), and also
-- `p`, what a first lease reads, packed once here:
--   'max|enq|tick|#kind|#args|#sched|#inc|' followed by kind, args, sched and the incarnation
--   back to back (#x is x's length in bytes; tick is '' when none).
-- fetch.lua then reads one field per leased job instead of seven: turning a seven-value reply
-- into a Lua table cost Redis more than leasing the job (callgrind: 12,200 fewer instructions
-- per leased job in a scripted fetch, 15,600 fewer per drained job in a benchmark drain).
-- The fields by name stay for every other reader, for workers of an earlier release during a
-- rolling upgrade, and for a lease after a requeue, which rewrites `max` (fetch.lua reads
-- `max` by name whenever the job has an `attempts` entry, which requeue.lua writes). The
-- incarnation is kept only in `p`: a worker of an earlier release reads `inc`, finds none, and
-- checks the ledger first, which is always safe.
local inc = nil
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Formatted once, as an integer: a number argument of redis.call is formatted with printf
-- ('%.14g') on every use. With the incarnation written by the same HSET, an enqueued job
-- costs 40 % fewer instructions (callgrind: 37,000 instead of 61,500).
local now_text = string.format('%d', now)
local base = ARGV[1]
-- The lengths in `p`, each formatted once per call (most are the same every time).
local LENGTHS = {}
local function length(text)
  local n = #text
  local formatted = LENGTHS[n]
  if not formatted then
    formatted = string.format('%d', n)
    LENGTHS[n] = formatted
  end
  return formatted
end
local out = {}
local ready = {}
local n_ready = 0
local n_new = 0
for i = 3, #ARGV, 8 do
  local id, kind, args, max = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local run_at, idem, sched, tick = tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local existing = false
  if idem ~= '' then
    local key = base .. 'idem:' .. idem
    local ok = redis.call('SET', key, id, 'NX')
    if not ok then
      existing = redis.call('GET', key)
    end
  end
  if existing then
    local state
    if redis.call('ZSCORE', KEYS[5], existing) then
      state = 'completed'
    elseif redis.call('HEXISTS', KEYS[6], existing) == 1 then
      state = 'running'
    else
      state = redis.call('HGET', base .. 'job:' .. existing, 'state') or 'gone'
    end
    out[#out + 1] = existing
    out[#out + 1] = 0
    out[#out + 1] = state
  else
    local job = base .. 'job:' .. id
    local state = 'available'
    if run_at > now then state = 'scheduled' end
    inc = inc or incarnation()
    -- One concatenation; the lengths read `LENGTHS` first and call `length` only for a new one.
    local packed = max .. '|' .. now_text .. '|' .. tick .. '|'
      .. (LENGTHS[#kind] or length(kind)) .. '|' .. (LENGTHS[#args] or length(args)) .. '|'
      .. (LENGTHS[#sched] or length(sched)) .. '|' .. (LENGTHS[#inc] or length(inc)) .. '|'
      .. kind .. args .. sched .. inc
    redis.call('HSET', job, 'kind', kind, 'args', args, 'attempt', '0', 'max', max,
      'enq', now_text, 'run_at', run_at > now and ARGV[i + 4] or now_text, 'state', state,
      'p', packed)
    if idem ~= '' then redis.call('HSET', job, 'idem', idem) end
    if sched ~= '' then redis.call('HSET', job, 'sched', sched) end
    if tick ~= '' then redis.call('HSET', job, 'tick', tick) end
    if state == 'scheduled' then
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      n_ready = n_ready + 1
      ready[n_ready] = id
    end
    n_new = n_new + 1
    out[#out + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = ''
  end
end
if n_ready > 0 then redis.call('LPUSH', KEYS[1], unpack(ready)) end
if n_new > 0 then redis.call('HINCRBY', KEYS[3], 'enqueued', n_new) end
if n_ready > 0 then
  -- One wake token per ready job, capped: idle workers block on this list.
  local tokens = math.min(n_ready, 16)
  for _ = 1, tokens do redis.call('LPUSH', KEYS[4], 1) end
  redis.call('LTRIM', KEYS[4], 0, 63)
end
-- A new delayed job wakes one idle worker too, so it learns the due time instead of sleeping past it.
if n_new > n_ready then redis.call('LPUSH', KEYS[4], 1); redis.call('LTRIM', KEYS[4], 0, 63) end
return out
