-- Shared by the pacing scripts (included at load time by waorch.core.lua, not a script of its own).
-- The send log of a session (session:sendlog:<id>, ZSET "<msg>:<attempt>" -> claim time) is the
-- truth for its budgets: at most floor(per_minute) (at least 1) claims in any 60 s window and
-- per_day in any 24 h. Claims are only ever added at or after the last one (the gap gate), so
-- checking the window that ends at a new claim checks every window that contains it.
local MINUTE = 60
local DAY = 86400
-- Times travel as microsecond strings; half a microsecond absorbs float error at window edges
-- (without it, a caller told to come back at `oldest + 60` could find the entry still inside).
local EPS = 5e-7

local function num(value) return tonumber(value or '0') or 0 end

-- An exclusive range bound with full precision ('..' on a number keeps only 14 digits).
local function above(t) return string.format('(%.17g', t) end

-- Times are exchanged as microsecond strings. Gates are rounded up onto that grid, so a caller
-- told "come back at T" (T formatted, parsed, passed back) always finds the gate open at T.
local function grid_up(t)
  local k = math.ceil(t * 1e6)
  local g = k / 1e6
  if g < t then g = (k + 1) / 1e6 end
  return g
end

local function jittered(interval, jitter, u)
  return interval * (1 + jitter * (2 * u - 1))
end

-- When the minute and the day window of the send log let one more claim in: the oldest claim
-- that must leave each full window, plus its length (nil for a window that is not full).
local function window_opens(log_key, now, per_minute, per_day)
  local minute, day = nil, nil
  local per_window = math.max(1, math.floor(per_minute))
  local in_minute = redis.call('ZCOUNT', log_key, above(now - MINUTE + EPS), '+inf')
  if in_minute >= per_window then
    local oldest = redis.call('ZRANGEBYSCORE', log_key, above(now - MINUTE + EPS), '+inf',
                              'WITHSCORES', 'LIMIT', in_minute - per_window, 1)
    minute = tonumber(oldest[2]) + MINUTE
  end
  if per_day > 0 then
    local in_day = redis.call('ZCARD', log_key)
    if in_day >= per_day then
      local oldest = redis.call('ZRANGE', log_key, in_day - per_day, in_day - per_day, 'WITHSCORES')
      day = tonumber(oldest[2]) + DAY
    end
  end
  return minute, day
end

-- Earliest time the session may send again: after its pause (WhatsApp restriction), its
-- cooldown (burst), the jittered gap after its last claim, and its minute and day windows.
local function send_gate(pacing_key, log_key, session_key, now, per_minute, per_day)
  local gate = now
  local function later(t) if t then gate = math.max(gate, grid_up(t)) end end
  local paced = redis.call('HMGET', pacing_key, 'cooldown_until', 'next_claim')
  later(num(redis.call('HGET', session_key, 'paused_until')))
  later(num(paced[1]))  -- cooldown
  later(num(paced[2]))  -- gap
  redis.call('ZREMRANGEBYSCORE', log_key, '-inf', now - DAY + EPS)
  local minute, day = window_opens(log_key, now, per_minute, per_day)
  later(minute)
  later(day)
  return gate
end

-- After a claim at `now` (already in the log): when the minute or day window lets the next one
-- in, plus `extra` (jitter, so that a full window does not release sends on a fixed beat).
local function window_release(log_key, now, per_minute, per_day, extra)
  local minute, day = window_opens(log_key, now, per_minute, per_day)
  local release = 0
  if minute then release = minute + extra end
  if day then release = math.max(release, day + extra) end
  return release
end

-- When `spec` ("start,end" in UTC seconds of the day, from the recipient's time zone) says `t`
-- is inside the recipient's quiet hours: the time they end. nil when sending is fine.
local function quiet_end(spec, t)
  if not spec or spec == '' then return nil end
  local s, e = string.match(spec, '^(%d+),(%d+)$')
  s, e = tonumber(s), tonumber(e)
  if not s or not e or s == e then return nil end
  local day = math.floor(t / DAY) * DAY
  local tod = t - day
  if s < e then
    if tod >= s and tod < e then return day + e end
  else
    if tod >= s then return day + DAY + e end
    if tod < e then return day + e end
  end
  return nil
end

-- Where a held message goes in the outbox: after `until_`, and in the order the held messages
-- were due (the earlier one was due, the earlier it is released, within 90 s after `until_`),
-- so that a person never gets part 2 before part 1. `seq` orders messages held with the same due.
local function held_score(until_, due, seq)
  return until_ + 90 + (due - until_) / 1000 + seq / 1000
end

local function suppressed(tenant, to)
  if not tenant or not to then return false end
  return redis.call('HEXISTS', 'suppressions:' .. tenant, to) == 1
end
