--! include message_lib
-- Give queued messages of one session their send slots: the next slot is the previous one plus
-- the jittered interval, never earlier than now, and no further ahead than the horizon.
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:pacing:<id>
-- ARGV[1] now, ARGV[2] base interval (s), ARGV[3] jitter fraction, ARGV[4] horizon (s),
-- ARGV[5..] uniform randoms in [0,1), one per slot that may be reserved in this call
-- Returns the number of messages scheduled.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local jitter = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local scheduled = 0
for i = 5, #ARGV do
  local next_slot = tonumber(redis.call('HGET', KEYS[3], 'next_slot') or '0')
  local slot = math.max(now, next_slot)
  if slot > now + horizon then break end
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if status_of(id) == 'routed' then
    redis.call('ZADD', KEYS[2], slot, id)
    redis.call('HSET', MSG .. id, 'scheduled_for', slot)
    transition(id, 'scheduled', ARGV[1], '')
    local gap = interval * (1 + jitter * (2 * tonumber(ARGV[i]) - 1))
    redis.call('HSET', KEYS[3], 'next_slot', slot + gap)
    scheduled = scheduled + 1
  end
end
return scheduled
