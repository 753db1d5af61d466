--! include lib/message
--! include lib/pacing
-- Give routed messages of one session their planned send slots: the next slot is the previous
-- one plus the jittered interval, never before now, the session's pause or its cooldown, and no
-- further ahead than the horizon. The day budget bounds how much is planned: what the send log
-- holds for the last 24 h plus what is already planned. A message whose recipient is in quiet
-- hours at its slot is planned for the end of them and leaves the slot to the next message.
-- Planning only: sending/claim.lua enforces every rule again when the message is claimed.
-- What stays in the FIFO marks the session due for the pump (sessions:pump:due) at the time more
-- could be planned: when the horizon reaches its next slot, when its oldest claim leaves the day
-- window (day budget full), at once (this call's randoms ran out), and at most PUMP_RECHECK s on.
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:pacing:<id>,
-- KEYS[4] session:sendlog:<id>, KEYS[5] session:<id>, KEYS[6] sessions:pump:due
-- ARGV[1] now, ARGV[2] mean interval (s), ARGV[3] jitter fraction, ARGV[4] horizon (s),
-- ARGV[5] per_day (0: none), ARGV[6] session id,
-- ARGV[7..] uniform randoms in [0,1), one per slot this call may plan
-- Returns {scheduled, failed ids...}
local now = tonumber(ARGV[1])
local interval, jitter = tonumber(ARGV[2]), tonumber(ARGV[3])
local horizon, per_day = tonumber(ARGV[4]), tonumber(ARGV[5])
local start = math.max(now, num(redis.call('HGET', KEYS[5], 'paused_until')),
                       num(redis.call('HGET', KEYS[3], 'cooldown_until')))
local room = nil
if per_day > 0 then
  room = per_day - redis.call('ZCOUNT', KEYS[4], above(now - DAY), '+inf')
               - redis.call('ZCARD', KEYS[2])
end
local scheduled, failed = 0, {}
local PUMP_RECHECK = 300
for i = 7, #ARGV do
  if room and room <= 0 then break end
  local slot = math.max(start, num(redis.call('HGET', KEYS[3], 'next_slot')))
  if slot > now + horizon then break end
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if status_of(id) == 'routed' then
    local m = redis.call('HMGET', MSG .. id, 'tenant', 'to', 'quiet')
    if suppressed(m[1], m[2]) then
      redis.call('HSET', MSG .. id, 'reason', 'suppressed')
      transition(id, 'failed', ARGV[1], 'the recipient opted out')
      failed[#failed + 1] = id
    else
      local quiet = quiet_end(m[3], slot)
      local at = slot
      if quiet then at = held_score(quiet, slot, i) end
      redis.call('ZADD', KEYS[2], at, id)
      redis.call('HSET', MSG .. id, 'scheduled_for', at)
      if quiet then
        transition(id, 'scheduled', ARGV[1], "held: quiet hours in the recipient's time zone")
      else
        transition(id, 'scheduled', ARGV[1], '')
        redis.call('HSET', KEYS[3], 'next_slot', slot + jittered(interval, jitter, tonumber(ARGV[i])))
      end
      scheduled = scheduled + 1
      if room then room = room - 1 end
    end
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[6], ARGV[6])
else
  local due = now + PUMP_RECHECK
  local slot = math.max(start, num(redis.call('HGET', KEYS[3], 'next_slot')))
  if slot > now + horizon then
    due = math.min(due, slot - horizon)
  elseif room and room <= 0 then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[4], above(now - DAY), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if oldest[2] then due = math.min(due, math.max(now + 1, tonumber(oldest[2]) + DAY)) end
  else
    due = now
  end
  redis.call('ZADD', KEYS[6], string.format('%.6f', due), ARGV[6])
end
local out = {scheduled}
for _, id in ipairs(failed) do out[#out + 1] = id end
return out
