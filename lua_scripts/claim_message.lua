--! include message_lib
-- A session's worker claims its next due message under a lease. Pacing holds here too: no claim
-- before the session's next_claim time, which every claim pushes one jittered interval ahead.
-- KEYS[1] session:outbox:<id>, KEYS[2] session:leases:<id>, KEYS[3] session:pacing:<id>
-- ARGV[1] now, ARGV[2] lease seconds, ARGV[3] lease token, ARGV[4] base interval,
-- ARGV[5] jitter, ARGV[6] uniform random in [0,1)
-- Returns {'claimed', id} | {'wait', unix time when something may be due} | {'empty'}
local now = tonumber(ARGV[1])
requeue_expired(KEYS[2], KEYS[1], ARGV[1])
local next_claim = tonumber(redis.call('HGET', KEYS[3], 'next_claim') or '0')
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #head == 0 then return {'empty'} end
  local id, due = head[1], tonumber(head[2])
  local expires = tonumber(redis.call('HGET', MSG .. id, 'expires_at') or '0')
  if expires > 0 and expires <= now then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', MSG .. id, 'reason', 'expired')
    transition(id, 'failed', ARGV[1], 'expired before it could be sent')
  else
    local ready = math.max(due, next_claim)
    if ready > now then return {'wait', tostring(ready)} end
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    redis.call('HSET', MSG .. id, 'lease_token', ARGV[3])
    redis.call('HINCRBY', MSG .. id, 'attempts', 1)
    transition(id, 'claimed', ARGV[1], '')
    local gap = tonumber(ARGV[4]) * (1 + tonumber(ARGV[5]) * (2 * tonumber(ARGV[6]) - 1))
    redis.call('HSET', KEYS[3], 'next_claim', now + gap, 'last_claim', now)
    return {'claimed', id}
  end
end
