-- Settle a batch of attempts. Each settlement carries the lease's fencing token; one whose token
-- is no longer the job's current token (the lease expired and the job was leased again, or it
-- was already settled) is refused and reported, never applied. The lease is read with
-- lease.lua's functions, prepended (client.rs).
-- KEYS[1] leases, KEYS[2] retry, KEYS[3] dead, KEYS[4] stats, KEYS[5] wake,
-- KEYS[6] tokens, KEYS[7] holders, KEYS[8] attempts, KEYS[9] done zset, KEYS[10] ready
-- A completed job costs no per-job command: it joins the `done` zset (one ZADD per batch), and
-- fetch deletes its hash in bulk once the retention has passed.
-- ARGV[1] key base, ARGV[2] dead retention ms,
-- then 3 fields per settlement: id, token, and either 'done' or 'verdict|retry delay ms|error'
-- (the error, free text, last): a completion, the common case, costs three arguments instead
-- of five (2 % less CPU per job in interleaved benchmark pairs). Verdicts:
--   done       completed
--   retry      failed; retry after the delay (dead when it was the last attempt)
--   dead       failed for good
--   release    the attempt counts but has no result (its lease expired, or the worker stopped
--              mid-attempt): back to `ready`, or dead when it was the last attempt
--   unstarted  the attempt never began: back to `ready`, and it does not count
-- The caller sends at most a few hundred settlements per call.
-- Returns one string with a letter per settlement, in the order given: the applied state,
--   c(ompleted), r(etryable), d(iscarded), a(vailable), or x when the token is stale (refused).
--   One string instead of two per settlement: replying with them cost Redis and the worker's
--   RESP parser about as much as settling.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base = ARGV[1]
local dead_retention = tonumber(ARGV[2])
-- Formatted once: Lua turns a number argument into text with printf on every use.
local now_text = tostring(now)
local ids = {}
-- Every settlement is read before anything is written, so a malformed one fails the call whole;
-- the parts of the few that are not completions are kept by position.
local verdicts, delays, errors = {}, {}, {}
local n_ids = 0
for i = 3, #ARGV, 3 do
  n_ids = n_ids + 1
  local k = n_ids
  ids[k] = ARGV[i]
  local verdict = ARGV[i + 2]
  if verdict ~= 'done' then
    local a = verdict and string.find(verdict, '|', 1, true)
    local b = a and string.find(verdict, '|', a + 1, true)
    if not b then
      return redis.error_reply('ERR settlement ' .. k .. ' has no verdict|delay|error')
    end
    verdicts[k] = string.sub(verdict, 1, a - 1)
    delays[k] = tonumber(string.sub(verdict, a + 1, b - 1)) or 0
    errors[k] = string.sub(verdict, b + 1)
  end
end
if #ids == 0 then return '' end
local current = redis.call('HMGET', KEYS[6], unpack(ids))
local out = {}
local settled, buried, retries, deaths, completions, ready = {}, {}, {}, {}, {}, {}
-- Counts of attempts that ended without completing their job: kept in `attempts` (fetch.lua).
local counted, uncounted, legacy = {}, {}, {}
local n_done, n_failed, n_dead, n_retried, n_settled = 0, 0, 0, 0, 0
for k = 1, n_ids do
  local id = ids[k]
  local token, verdict, delay, err = ARGV[1 + k * 3], ARGV[2 + k * 3], 0, ''
  if verdict ~= 'done' then verdict, delay, err = verdicts[k], delays[k], errors[k] end
  local state
  local lease = current[k]
  if not lease or not lease_holds(lease, token) then
    state = 'x'
  else
    n_settled = n_settled + 1
    settled[n_settled] = id
    -- A bare token: a lease of an earlier release (lease.lua).
    if #lease == #token then legacy[#legacy + 1] = id end
    -- The job's key and its attempt count matter only for a verdict other than done (is it the
    -- last attempt?): a completion, the common case, builds and parses neither.
    local attempt, job = 0, nil
    if verdict ~= 'done' then
      job = base .. 'job:' .. id
      local _, n = lease_parts(lease)
      attempt = n or tonumber(redis.call('HGET', KEYS[8], id)) or 0
    end
    if (verdict == 'retry' or verdict == 'release')
        and attempt >= (tonumber(redis.call('HGET', job, 'max')) or 1) then
      verdict = 'dead'
    end
    if verdict == 'done' then
      completions[2 * n_done + 1] = now_text
      completions[2 * n_done + 2] = id
      n_done = n_done + 1
      state = 'c'
    elseif verdict == 'retry' then
      redis.call('HSET', job, 'state', 'retryable', 'err', err)
      counted[#counted + 1] = id
      counted[#counted + 1] = attempt
      retries[#retries + 1] = now + delay
      retries[#retries + 1] = id
      n_failed = n_failed + 1
      n_retried = n_retried + 1
      state = 'r'
    elseif verdict == 'release' or verdict == 'unstarted' then
      if verdict == 'release' then
        redis.call('HSET', job, 'state', 'available', 'err', err, 'avail', now_text)
        counted[#counted + 1] = id
        counted[#counted + 1] = attempt
        n_failed = n_failed + 1
        n_retried = n_retried + 1
      else
        redis.call('HSET', job, 'state', 'available')
        if attempt > 1 then
          counted[#counted + 1] = id
          counted[#counted + 1] = attempt - 1
        else
          uncounted[#uncounted + 1] = id
        end
      end
      ready[#ready + 1] = id
      state = 'a'
    else
      redis.call('HSET', job, 'state', 'discarded', 'err', err, 'finished', now, 'attempt', attempt)
      redis.call('PEXPIRE', job, dead_retention)
      -- The idempotency key stands for the dead letter as long as it is kept.
      local f = redis.call('HMGET', job, 'idem', 'enq')
      if f[1] then
        redis.call('PEXPIRE', base .. 'idem:' .. f[1], dead_retention)
      end
      deaths[#deaths + 1] = now
      deaths[#deaths + 1] = id
      buried[#buried + 1] = id
      n_failed = n_failed + 1
      n_dead = n_dead + 1
      state = 'd'
    end
  end
  out[k] = state
end
if n_settled > 0 then
  redis.call('ZREM', KEYS[1], unpack(settled))
  redis.call('HDEL', KEYS[6], unpack(settled))
end
-- Leases of an earlier release (see lease.lua) keep their holder in a hash of its own.
if #legacy > 0 then redis.call('HDEL', KEYS[7], unpack(legacy)) end
if #counted > 0 then redis.call('HSET', KEYS[8], unpack(counted)) end
if #uncounted > 0 then redis.call('HDEL', KEYS[8], unpack(uncounted)) end
if #buried > 0 then redis.call('HDEL', KEYS[8], unpack(buried)) end
if n_done > 0 then redis.call('ZADD', KEYS[9], unpack(completions)) end
if #retries > 0 then redis.call('ZADD', KEYS[2], unpack(retries)) end
if #deaths > 0 then redis.call('ZADD', KEYS[3], unpack(deaths)) end
-- Given back jobs already waited their turn: the next pop takes them.
if #ready > 0 then redis.call('RPUSH', KEYS[10], unpack(ready)) end
if n_done > 0 then redis.call('HINCRBY', KEYS[4], 'succeeded', n_done) end
if n_failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', n_failed) end
if n_retried > 0 then redis.call('HINCRBY', KEYS[4], 'retried', n_retried) end
if n_dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead', n_dead) end
-- Per-minute rollup for the 1 h / throughput stats (stats.lua): one hash per minute, kept 2 h.
-- A few commands per batch inside this script, so the settle path pays no extra round trip.
if n_done > 0 or n_failed > 0 then
  local minute = base .. 'tp:' .. math.floor(now / 60000)
  if n_done > 0 then redis.call('HINCRBY', minute, 's', n_done) end
  if n_failed > 0 then redis.call('HINCRBY', minute, 'f', n_failed) end
  redis.call('PEXPIRE', minute, 7200000)
end
-- A scheduled retry or a job given back wakes one idle worker, so it learns the due time
-- (or takes the job) instead of sleeping past it.
if n_retried > 0 or #ready > 0 then
  redis.call('LPUSH', KEYS[5], 1)
  redis.call('LTRIM', KEYS[5], 0, 63)
end
return table.concat(out)
