--! include lib/message
-- The worker could not send. Retryable failures go back to the outbox after an exponential
-- backoff until attempts run out; the rest fail with their reason.
-- KEYS[1] session:leases:<id>, KEYS[2] session:outbox:<id>
-- ARGV[1] msg id, ARGV[2] lease token, ARGV[3] reason, ARGV[4] retryable (1/0), ARGV[5] detail,
-- ARGV[6] now, ARGV[7] max attempts, ARGV[8] backoff base (s)
-- Returns 'retry' | 'failed' | 'stale'
local id = ARGV[1]
if status_of(id) ~= 'claimed' or redis.call('HGET', MSG .. id, 'lease_token') ~= ARGV[2] then
  return 'stale'
end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', MSG .. id, 'lease_token')
local attempts = tonumber(redis.call('HGET', MSG .. id, 'attempts') or '1')
local detail = ARGV[3]
if ARGV[5] ~= '' then detail = ARGV[3] .. ': ' .. ARGV[5] end
if ARGV[4] == '1' and attempts < tonumber(ARGV[7]) then
  local due = tonumber(ARGV[6]) + tonumber(ARGV[8]) * 2 ^ (attempts - 1)
  redis.call('ZADD', KEYS[2], due, id)
  redis.call('HSET', MSG .. id, 'scheduled_for', due)
  transition(id, 'scheduled', ARGV[6], 'retry after ' .. detail)
  return 'retry'
end
redis.call('HSET', MSG .. id, 'reason', 'send_error', 'error_detail', detail)
transition(id, 'failed', ARGV[6], detail)
return 'failed'
