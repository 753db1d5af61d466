--! include lib/message
--! include lib/pacing
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
-- ARGV[12] a second uniform random in [0,1) (jitter on a full window's release),
-- ARGV[13] '1': per-recipient order (a message goes only when no earlier one accepted for the same
-- tenant, recipient and explicit `from` is pending: message_lib's order_lane), '0': off
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

-- Per-recipient order. Skipped messages stay where they are and take nothing from pacing; a
-- skip is re-checked within ORDER_RECHECK s, since its predecessor may finish in another session.
local ORDER_RECHECK = 1
local ordered = ARGV[13] == '1'
local function expire_elsewhere(id, status, session)
  if status == 'queued' then redis.call('ZREM', 'messages:unrouted', id) end
  if status == 'scheduled' and session then redis.call('ZREM', 'session:outbox:' .. session, id) end
  -- a routed one stays in its session's FIFO: slot planning passes over messages not `routed`
  redis.call('HSET', MSG .. id, 'reason', 'expired')
  transition(id, 'failed', ARGV[1], 'expired before it could be sent')
  failed[#failed + 1] = id
end
-- The earliest message to the same person still pending when it is not `id` (nil: `id` may go).
-- An expired predecessor that is not on the wire fails here, so that a forgotten message cannot
-- hold the person's queue.
local function behind(id, pending)
  if not ordered or not pending then return nil end
  if not redis.call('ZSCORE', pending, id) then return nil end  -- accepted before ordering
  local first
  for _ = 1, 8 do
    first = redis.call('ZRANGE', pending, 0, 0)[1]
    if not first or first == id then return nil end
    local b = redis.call('HMGET', MSG .. first, 'status', 'expires_at', 'session')
    if not b[1] or TERMINAL[b[1]] then
      redis.call('ZREM', pending, first)  -- left over (a record restored without its end)
    elseif b[1] ~= 'claimed' and num(b[2]) > 0 and num(b[2]) <= now then
      expire_elsewhere(first, b[1], b[3])
    else
      return first
    end
  end
  return first
end

local offset, progressed, skipped = 0, false, false
-- order lane -> the pending message found holding it in this call: its later ones wait too
local waiting = {}
local examined, limit = 0, tonumber(ARGV[11])
-- What to answer when nothing could be claimed: skipped messages are looked at again soon.
local function later(t)
  if skipped then t = math.min(t or math.huge, now + ORDER_RECHECK) end
  if not t then return answer('empty', '') end
  return answer('wait', ready(math.max(t, gate)))
end
-- `limit` bounds the messages examined in full; skipping one more of a recipient already found
-- waiting costs two reads and counts only against the larger bound.
for _ = 1, 10 * limit do
  if examined >= limit then break end
  local head = redis.call('ZRANGE', KEYS[1], offset, offset, 'WITHSCORES')
  if #head == 0 then return later(nil) end
  local id, due = head[1], tonumber(head[2])
  if due > now then return later(due) end
  local m = redis.call('HMGET', MSG .. id, 'expires_at', 'tenant', 'to', 'quiet', 'from_requested')
  local lane = order_lane(m[2], m[3], m[5])
  local holder = lane and waiting[lane]
  local known = holder and holder ~= id
  if not known then examined = examined + 1 end
  local expires = num(m[1])
  local quiet = quiet_end(m[4], now)
  local recipient_log = 'recipient:sends:' .. (m[2] or '') .. ':' .. (m[3] or '')
  local capped_until = nil
  if cap > 0 and m[2] and m[3] and not quiet and not known then
    redis.call('ZREMRANGEBYSCORE', recipient_log, '-inf', now - DAY + EPS)
    local n = redis.call('ZCARD', recipient_log)
    if n >= cap and not redis.call('ZSCORE', recipient_log, id) then
      local oldest = redis.call('ZRANGE', recipient_log, n - cap, n - cap, 'WITHSCORES')
      capped_until = tonumber(oldest[2]) + DAY
    end
  end
  if known then
    offset = offset + 1
  elseif expires > 0 and expires <= now then
    fail(id, 'expired', 'expired before it could be sent')
    progressed = true
  elseif suppressed(m[2], m[3]) then
    fail(id, 'suppressed', 'the recipient opted out')
    progressed = true
  elseif quiet then
    hold(id, quiet, due, "held: quiet hours in the recipient's time zone")
    progressed = true
  elseif capped_until then
    hold(id, capped_until, due, 'held: per-recipient daily cap reached')
    progressed = true
  elseif gate > now then
    return answer('wait', ready(gate))
  else
    local blocker = holder ~= id and behind(id, lane) or nil
    if blocker then
      offset, skipped = offset + 1, true
      waiting[lane] = blocker
    else
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
end
-- Examined enough held or failed messages for one call: the caller asks again shortly.
if progressed then return answer('wait', string.format('%.6f', now)) end
return later(nil)
