-- O(1) queue statistics.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] retry, KEYS[4] leases, KEYS[5] dead, KEYS[6] stats,
-- KEYS[7] workers
-- ARGV[1] key base, ARGV[2] worker liveness window ms
-- Returns { pending, scheduled, retrying, running, dead, workers, oldest_pending_enq_ms (-1),
--           now_ms, counters (flat field/value list), succeeded_1h, failed_1h, processed_5m,
--           per_minute (flat succeeded/failed pairs of the 60 minutes, oldest first, the last
--           being the current minute) }
-- The 1 h and 5 min figures sum the per-minute rollup hashes `tp:<unix minute>` that ack.lua
-- and release.lua increment: the current minute and the 59 (or 4) before it, so at most 60
-- HMGETs, whatever the history.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = -1
local tail = redis.call('LINDEX', KEYS[1], -1)
if tail then
  -- When the job last became ready (`avail`: promoted, given back, requeued, restored), else
  -- when it was enqueued to run (`run_at`): not its first enqueue, which may be days old.
  local f = redis.call('HMGET', ARGV[1] .. 'job:' .. tail, 'avail', 'run_at', 'enq')
  local since = f[1] or f[2] or f[3]
  if since then oldest = tonumber(since) end
end
local minute = math.floor(now / 60000)
local s1h, f1h, p5m = 0, 0, 0
local per_minute = {}
for m = minute - 59, minute do
  local c = redis.call('HMGET', ARGV[1] .. 'tp:' .. m, 's', 'f')
  local s, f = tonumber(c[1]) or 0, tonumber(c[2]) or 0
  s1h = s1h + s
  f1h = f1h + f
  per_minute[#per_minute + 1] = s
  per_minute[#per_minute + 1] = f
  if m > minute - 5 then p5m = p5m + s + f end
end
return {
  redis.call('LLEN', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('ZCOUNT', KEYS[7], now - tonumber(ARGV[2]), '+inf'),
  oldest,
  now,
  redis.call('HGETALL', KEYS[6]),
  s1h,
  f1h,
  p5m,
  per_minute,
}
