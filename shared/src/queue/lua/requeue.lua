-- Operator action: move a dead job back to the ready list with a fresh attempt budget.
-- KEYS[1] dead, KEYS[2] ready, KEYS[3] wake
-- ARGV[1] key base, ARGV[2] id
-- Returns 1 when requeued, 0 when the id is not a dead letter (or its data has expired).
local job = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false or redis.call('EXISTS', job) == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[2])
local err = redis.call('HGET', job, 'err')
redis.call('HSET', job, 'state', 'available', 'attempt', 0, 'prev_err', err or '')
redis.call('HDEL', job, 'err', 'finished', 'token')
redis.call('PERSIST', job)
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 63)
return 1
