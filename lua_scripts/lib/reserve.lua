-- Slot planning of one session (included at load time by waorch.core.lua, not a script of its
-- own; needs lib/message and lib/pacing). Used by sending/reserve_slots.lua (the pump, one session
-- per call) and by sending/dispatch_batch.lua (every session a batch routed work to).
-- Gives routed messages of the session's FIFO their planned send slots: the next slot is the
-- previous one plus the jittered interval, never before now, the session's pause or its
-- cooldown, and no further ahead than the horizon. The day budget bounds how much is planned:
-- what the send log holds for the last 24 h plus what is already planned. A message whose
-- recipient is in quiet hours at its slot is planned for the end of them and leaves the slot to
-- the next message. Planning only: sending/claim.lua enforces every rule again at the claim.
-- What stays in the FIFO marks the session due for the pump (sessions:pump:due) at the time more
-- could be planned: when the horizon reaches its next slot, when its oldest claim leaves the day
-- window (day budget full), at once (this call's randoms ran out), and at most PUMP_RECHECK s on.
-- `next_random()` gives the uniform randoms in [0,1), one per slot (nil: no more this call).
-- Returns the number scheduled and the ids failed on the way (recipient suppressed).
local PUMP_RECHECK = 300
local function reserve_slots(k, sid, now_s, interval, jitter, horizon, per_day, next_random)
  local now = tonumber(now_s)
  local start = math.max(now, num(redis.call('HGET', k.session, 'paused_until')),
                         num(redis.call('HGET', k.pacing, 'cooldown_until')))
  local room = nil
  if per_day > 0 then
    room = per_day - redis.call('ZCOUNT', k.sendlog, above(now - DAY), '+inf') - redis.call('ZCARD', k.outbox)
  end
  local scheduled, failed, seq = 0, {}, 6
  -- the reservation pointer, read once: only this step writes it meanwhile
  local next_slot = num(redis.call('HGET', k.pacing, 'next_slot'))
  local emptied = false
  while true do
    if room and room <= 0 then break end
    local slot = math.max(start, next_slot)
    if slot > now + horizon then break end
    local u = next_random()
    if not u then break end
    seq = seq + 1
    local id = redis.call('LPOP', k.queue)
    if not id then
      emptied = true
      break
    end
    local m = redis.call('HMGET', MSG .. id, 'tenant', 'to', 'quiet', 'status')
    if m[4] == 'routed' then
      if suppressed(m[1], m[2]) then
        redis.call('HSET', MSG .. id, 'reason', 'suppressed')
        transition(id, 'failed', now_s, 'the recipient opted out')
        failed[#failed + 1] = id
      else
        local quiet = quiet_end(m[3], slot)
        local at = slot
        if quiet then at = held_score(quiet, slot, seq) end
        redis.call('ZADD', k.outbox, at, id)
        redis.call('HSET', MSG .. id, 'scheduled_for', at)
        if quiet then
          transition(id, 'scheduled', now_s, "held: quiet hours in the recipient's time zone")
        else
          transition(id, 'scheduled', now_s, '')
          next_slot = slot + jittered(interval, jitter, u)
          redis.call('HSET', k.pacing, 'next_slot', string.format('%.17g', next_slot))
        end
        scheduled = scheduled + 1
        if room then room = room - 1 end
      end
    end
  end
  if emptied or redis.call('LLEN', k.queue) == 0 then
    redis.call('ZREM', k.pump_due, sid)
  else
    local due = now + PUMP_RECHECK
    local slot = math.max(start, next_slot)
    if slot > now + horizon then
      due = math.min(due, slot - horizon)
    elseif room and room <= 0 then
      local oldest = redis.call('ZRANGEBYSCORE', k.sendlog, above(now - DAY), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if oldest[2] then due = math.min(due, math.max(now + 1, tonumber(oldest[2]) + DAY)) end
    else
      due = now
    end
    redis.call('ZADD', k.pump_due, string.format('%.6f', due), sid)
  end
  return scheduled, failed
end
