-- Burst detection on demand: a session with far more work waiting than its budget allows (a bulk
-- dump) goes into cooldown and is reported once per episode; the episode ends when the pending
-- work falls back under the threshold.
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:leases:<id>,
-- KEYS[4] session:pacing:<id>
-- ARGV[1] now, ARGV[2] threshold (pending messages), ARGV[3] cooldown (s)
-- Returns {'burst', pending, cooldown_until} | {'over', pending, ''} | {'ok', pending, ''}
local now, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
local pending = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if pending <= threshold then
  redis.call('HDEL', KEYS[4], 'demand_burst')
  return {'ok', pending, ''}
end
if redis.call('HSETNX', KEYS[4], 'demand_burst', ARGV[1]) == 0 then return {'over', pending, ''} end
local running = tonumber(redis.call('HGET', KEYS[4], 'cooldown_until') or '0') or 0
local until_ = math.max(running, now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[4], 'cooldown_until', until_)
if until_ > running then redis.call('HSET', KEYS[4], 'cooldown_reason', 'demand burst') end
return {'burst', pending, string.format('%.6f', until_)}
