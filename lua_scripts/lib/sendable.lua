-- The index of sessions a tenant's messages may go to (included at load time by waorch.core.lua,
-- not a script of its own). sessions:sendable:<tenant> is a ZSET of the tenant's live sessions
-- (not banned, logged out or stopped), scored by their rank in the sender choice:
--   (healthy * 4 + ready * 2 + waits_less) * RANK_TIER + spare budget
-- ready: connected, desired active, pause over (on the real clock); healthy: ready and not cooling
-- down; waits_less: not paused for longer than WAORCH_REROUTE_AFTER_PAUSE; spare: per_day of its
-- trust level - claims in the last 24 h - messages waiting for it (its FIFO + its outbox). Equal
-- ranks go to the largest id (ZREVRANGE's order), as the old max() over (.., spare, id) did.
-- Every script that changes what a rank depends on re-ranks the session in the same step
-- (status, desired, pause, trust level, cooldown, routing). Claims and ACKs, which are not
-- allowed to know about this index, only ever lower a rank or leave it: a claim moves a message
-- from the outbox to the send log (no change), an ACK or a failure of a leased message ends a
-- lease (leases do not count: the claim is in the send log already), a NACK or an expired lease
-- puts one back in the outbox (one lower). So a stored rank is never below the truth, and the
-- sender choice re-reads the top entry before it trusts it (sendable_best). Ranks that rise with
-- time (a pause or cooldown ends, a claim leaves the 24 h window) are re-ranked at their due time
-- (sessions:sendable:due:<tenant>, ZSET id -> when), which the router catches up on before it
-- chooses; every live session is re-ranked at least every REFRESH_AFTER s for what nothing
-- signals (a scheduled message failing at its claim, a policy edit).
-- Self-contained (no includes): scripts include it beside lib/session or lib/message.
local SENDABLE_CONF = 'sessions:sendable:conf'
local DEAD_STATUS = {banned = true, logged_out = true, stopped = true}  -- sessions.DEAD_STATUSES
local RANK_TIER = 1e9
local SPARE_LIMIT = 1e8
local UNKNOWN_BUDGET = 1e8  -- a level whose budget no router published yet: ranked high, corrected on reading
local AGING_STEP = 60  -- claims leaving the 24 h window are picked up at most this often
local REFRESH_AFTER = 600
local SENDABLE_DAY = 86400

local function k_sendable(tenant) return 'sessions:sendable:' .. tenant end
local function k_sendable_due(tenant) return 'sessions:sendable:due:' .. tenant end

-- Budgets of the trust levels as the last router published them (sessions:sendable:conf:
-- level:<name> -> per_day, fallback -> per_day of the lowest rung, reroute_after_pause), read
-- once per script call. A router sets it from its own arguments instead (sendable_use_budgets).
local sendable_budget_cache = nil
local function sendable_budgets()
  if sendable_budget_cache then return sendable_budget_cache end
  local flat = redis.call('HGETALL', SENDABLE_CONF)
  local found = {levels = {}, fallback = nil, reroute = nil}
  for i = 1, #flat, 2 do
    local name, value = flat[i], tonumber(flat[i + 1])
    if string.sub(name, 1, 6) == 'level:' then
      found.levels[string.sub(name, 7)] = value
    elseif name == 'fallback' then
      found.fallback = value
    elseif name == 'reroute_after_pause' then
      found.reroute = value
    end
  end
  sendable_budget_cache = found
  return found
end

local function sendable_use_budgets(levels, fallback, reroute)
  sendable_budget_cache = {levels = levels, fallback = fallback, reroute = reroute}
end

-- A router's budgets (`levels`: {name: [per_day, ...]}) for this call and, when their signature
-- changed, for every script after it (sessions:sendable:conf; its `built` mark is kept).
local function sendable_configure(sig, levels, fallback, reroute)
  if redis.call('HGET', SENDABLE_CONF, 'sig') ~= sig then
    local built = redis.call('HGET', SENDABLE_CONF, 'built')
    redis.call('DEL', SENDABLE_CONF)
    local fields = {'sig', sig, 'fallback', fallback, 'reroute_after_pause', reroute}
    for name, budget in pairs(levels) do
      fields[#fields + 1] = 'level:' .. name
      fields[#fields + 1] = budget[1]
    end
    if built then
      fields[#fields + 1] = 'built'
      fields[#fields + 1] = built
    end
    redis.call('HSET', SENDABLE_CONF, unpack(fields))
  end
  local per_day = {}
  for name, budget in pairs(levels) do per_day[name] = budget[1] end
  sendable_use_budgets(per_day, tonumber(fallback), tonumber(reroute))
end

local function sendable_num(value) return tonumber(value or '0') or 0 end

-- What the sender choice knows of a session at `now` (`clock`: the real time, which decides
-- whether a pause is over, as sessions.is_sendable does). nil for a session that is gone; `dead`
-- for one that will not send again without an operator.
local function sendable_state(sid, now, clock)
  local s = redis.call('HMGET', 'session:' .. sid, 'tenant', 'status', 'desired', 'paused_until',
                       'trust_level', 'phone')
  if not s[1] then return nil end
  local st = {tenant = s[1], status = s[2] or '', phone = s[6] or '', level = s[5] or ''}
  if DEAD_STATUS[st.status] then
    st.dead = true
    return st
  end
  local budgets = sendable_budgets()
  local per_day = budgets.levels[st.level] or budgets.fallback or UNKNOWN_BUDGET
  local paused = sendable_num(s[4])
  local cooldown = sendable_num(redis.call('HGET', 'session:pacing:' .. sid, 'cooldown_until'))
  local log_key = 'session:sendlog:' .. sid
  local since = string.format('(%.6f', now - SENDABLE_DAY)
  local used = redis.call('ZCOUNT', log_key, since, '+inf')
  st.outbox = redis.call('ZCARD', 'session:outbox:' .. sid)
  local waiting = redis.call('LLEN', 'queue:session:' .. st.phone) + st.outbox
  st.spare = math.max(-SPARE_LIMIT, math.min(SPARE_LIMIT, per_day - used - waiting))
  st.ready = st.status == 'connected' and s[3] == 'active' and paused <= clock
  st.healthy = st.ready and cooldown <= now
  local reroute = budgets.reroute
  st.waits_less = not (reroute and paused - now > reroute)
  st.rank = ((st.healthy and 4 or 0) + (st.ready and 2 or 0) + (st.waits_less and 1 or 0)) * RANK_TIER + st.spare
  -- when this rank rises by itself next
  local due = clock + REFRESH_AFTER
  if paused > clock then due = math.min(due, paused) end
  if reroute and paused - reroute > clock then due = math.min(due, paused - reroute) end
  if cooldown > clock then due = math.min(due, cooldown) end
  if used > 0 then
    local oldest = redis.call('ZRANGEBYSCORE', log_key, since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if oldest[2] then due = math.min(due, math.max(tonumber(oldest[2]) + SENDABLE_DAY, clock + AGING_STEP)) end
  end
  st.due = due
  return st
end

local function sendable_forget(tenant, sid)
  redis.call('ZREM', k_sendable(tenant), sid)
  redis.call('ZREM', k_sendable_due(tenant), sid)
end

local function sendable_store(sid, st)
  if st.dead then
    sendable_forget(st.tenant, sid)
    return
  end
  redis.call('ZADD', k_sendable(st.tenant), string.format('%.17g', st.rank), sid)
  redis.call('ZADD', k_sendable_due(st.tenant), string.format('%.6f', st.due), sid)
end

-- The server's clock: ranks are kept on the real time whatever `now` a caller passes.
local function sendable_clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function sendable_store_rank(sid, st)
  redis.call('ZADD', k_sendable(st.tenant), string.format('%.17g', st.rank), sid)
end

-- Re-rank one session from its stored state (on the real clock); the state, or nil when gone.
local function sendable_refresh(sid, clock)
  clock = clock or sendable_clock()
  local st = sendable_state(sid, clock, clock)
  if st then sendable_store(sid, st) end
  return st
end

-- Re-rank the tenant's sessions whose rank was due to rise by `clock` (at most `limit`).
local function sendable_catch_up(tenant, clock, limit)
  local due = redis.call('ZRANGEBYSCORE', k_sendable_due(tenant), '-inf', clock, 'LIMIT', 0, limit)
  for _, sid in ipairs(due) do
    local st = sendable_state(sid, clock, clock)
    if st and st.tenant == tenant then sendable_store(sid, st) else sendable_forget(tenant, sid) end
  end
  return #due
end

-- The tenant's best sender at `now`: the top of the index, re-read before it is trusted; an entry
-- found stale is re-ranked and the new top looked at. Each session is corrected at most once per
-- call, so this ends; MAX_CORRECTIONS bounds one call's work after a mass change nothing signalled.
local MAX_CORRECTIONS = 1000
local function sendable_best(tenant, now, clock)
  local key = k_sendable(tenant)
  local top, st
  for _ = 1, MAX_CORRECTIONS do
    top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    if #top == 0 then return nil, nil end
    st = sendable_state(top[1], now, clock)
    if not st or st.dead or st.tenant ~= tenant then
      sendable_forget(tenant, top[1])
    elseif st.rank == tonumber(top[2]) then
      return top[1], st
    else
      sendable_store(top[1], st)
    end
  end
  return top[1], st
end
