--! include message_lib
--! include pacing_lib
-- A session's worker claims its next due message under a lease. Every pacing rule is decided
-- here, atomically: pause, cooldown, jittered gap, minute and day budgets (pacing_lib), and for
-- the message itself expiry, suppression of its recipient, the recipient's quiet hours and the
-- tenant's per-recipient daily cap. Held messages move to the time they may go; nothing is dropped.
-- KEYS[1] session:outbox:<id>, KEYS[2] session:leases:<id>, KEYS[3] session:pacing:<id>,
-- KEYS[4] session:sendlog:<id>, KEYS[5] session:<id>
-- ARGV[1] now, ARGV[2] lease seconds, ARGV[3] lease token, ARGV[4] mean interval (s),
-- ARGV[5] jitter fraction, ARGV[6] uniform random in [0,1), ARGV[7] per_minute, ARGV[8] per_day
-- (0: none), ARGV[9] the session's trust_level the numbers were chosen for ('' = do not check),
-- ARGV[10] recipient daily cap (0: none), ARGV[11] most due messages examined in one call,
-- ARGV[12] a second uniform random in [0,1) (jitter on a full window's release)
-- Returns {'claimed', id, failed...} | {'wait', unix time, failed...} | {'empty', '', failed...}
--       | {'level', current trust_level} when it changed since the caller read it
local now = tonumber(ARGV[1])
if ARGV[9] ~= '' then
  local current = redis.call('HGET', KEYS[5], 'trust_level') or ''
  if current ~= ARGV[9] then return {'level', current} end
end
requeue_expired(KEYS[2], KEYS[1], ARGV[1])
-- most calls are long-polls of an idle worker: answer those before any pacing arithmetic
if redis.call('ZCARD', KEYS[1]) == 0 then return {'empty', ''} end
local gate = send_gate(KEYS[3], KEYS[4], KEYS[5], now, tonumber(ARGV[7]), tonumber(ARGV[8]))
local cap = tonumber(ARGV[10])
local failed = {}
local function answer(outcome, value)
  local out = {outcome, value}
  for _, id in ipairs(failed) do out[#out + 1] = id end
  return out
end
local function fail(id, reason, detail)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', MSG .. id, 'reason', reason)
  transition(id, 'failed', ARGV[1], detail)
  failed[#failed + 1] = id
end
-- Rounded up: a caller that comes back at exactly this time must find the gate open.
local function ready(t) return string.format('%.6f', grid_up(t)) end
local function hold(id, until_, due, detail)
  local at = held_score(until_, due, 0)
  redis.call('ZADD', KEYS[1], at, id)
  redis.call('HSET', MSG .. id, 'scheduled_for', at)
  transition(id, 'scheduled', ARGV[1], detail)
end

for _ = 1, tonumber(ARGV[11]) do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #head == 0 then return answer('empty', '') end
  local id, due = head[1], tonumber(head[2])
  if due > now then return answer('wait', ready(math.max(due, gate))) end
  local m = redis.call('HMGET', MSG .. id, 'expires_at', 'tenant', 'to', 'quiet')
  local expires = num(m[1])
  local quiet = quiet_end(m[4], now)
  local recipient_log = 'recipient:sends:' .. (m[2] or '') .. ':' .. (m[3] or '')
  local capped_until = nil
  if cap > 0 and m[2] and m[3] and not quiet then
    redis.call('ZREMRANGEBYSCORE', recipient_log, '-inf', now - DAY + EPS)
    local n = redis.call('ZCARD', recipient_log)
    if n >= cap and not redis.call('ZSCORE', recipient_log, id) then
      local oldest = redis.call('ZRANGE', recipient_log, n - cap, n - cap, 'WITHSCORES')
      capped_until = tonumber(oldest[2]) + DAY
    end
  end
  if expires > 0 and expires <= now then
    fail(id, 'expired', 'expired before it could be sent')
  elseif suppressed(m[2], m[3]) then
    fail(id, 'suppressed', 'the recipient opted out')
  elseif quiet then
    hold(id, quiet, due, "held: quiet hours in the recipient's time zone")
  elseif capped_until then
    hold(id, capped_until, due, 'held: per-recipient daily cap reached')
  else
    if gate > now then return answer('wait', ready(gate)) end
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    redis.call('HSET', MSG .. id, 'lease_token', ARGV[3])
    local attempt = redis.call('HINCRBY', MSG .. id, 'attempts', 1)
    transition(id, 'claimed', ARGV[1], '')
    redis.call('ZADD', KEYS[4], now, id .. ':' .. attempt)
    redis.call('EXPIRE', KEYS[4], DAY + MINUTE)
    if m[2] and m[3] then
      redis.call('ZADD', recipient_log, now, id)
      redis.call('EXPIRE', recipient_log, DAY + MINUTE)
    end
    local interval, jitter = tonumber(ARGV[4]), tonumber(ARGV[5])
    local next_at = math.max(now + jittered(interval, jitter, tonumber(ARGV[6])),
                             window_release(KEYS[4], now, tonumber(ARGV[7]), tonumber(ARGV[8]),
                                            interval * jitter * tonumber(ARGV[12])))
    redis.call('HSET', KEYS[3], 'next_claim', grid_up(next_at), 'last_claim', now)
    return answer('claimed', id)
  end
end
-- Examined enough held or failed messages for one call: the caller asks again shortly.
return answer('wait', string.format('%.6f', now))
