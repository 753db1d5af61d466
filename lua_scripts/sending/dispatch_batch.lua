--! include lib/message
--! include lib/pacing
--! include lib/reserve
--! include lib/demand
--! include lib/sendable
-- Route a batch of queued messages in one step, each as waorch.sending.dispatch describes:
-- expired -> failed `expired`; recipient suppressed -> failed `suppressed`; else the sender:
-- explicit `from` (a live session of the tenant with that phone, else failed `no_session`), else
-- the recipient's sticky sender if it is live and not paused long (or every live session is
-- paused long), else the top of the tenant's sender index (lib/sendable: healthy with the most
-- spare budget, else connected in cooldown, else not connected yet; none: `no_session`). A
-- routed message gets its quiet-hours window, goes to the session's FIFO (state routed), makes
-- the session the person's sticky sender, lowers its rank, marks it due for slot planning, and
-- is judged for a demand burst (lib/demand). Then every session that got work has its slots
-- planned (lib/reserve) and its parked claims woken (PUBLISH outbox:wake), in the same step.
-- KEYS[1] messages:unrouted, KEYS[2] sessions:pump:due, KEYS[3] sessions:sendable:conf
-- ARGV[1] now, ARGV[2] signature of the budgets below, ARGV[3] JSON {level: [per_day, demand
-- threshold, mean interval (s)]}, ARGV[4] per_day of the fallback level (unknown names), ARGV[5]
-- its demand threshold, ARGV[6] WAORCH_REROUTE_AFTER_PAUSE, ARGV[7] demand cooldown (s), ARGV[8]
-- sticky sender TTL (s), ARGV[9] most due index entries caught up per tenant, ARGV[10] jitter,
-- ARGV[11] schedule horizon (s), ARGV[12] the default level (the pace of a session without one),
-- ARGV[13] the fallback level's mean interval, ARGV[14] most slots planned per session,
-- ARGV[15] number of messages n, ARGV[16 .. 15 + 2n] pairs of message id and quiet-hours window
-- ("start,end" or ''), then uniform randoms in [0,1) for the jittered slots
-- Returns {-1} when the fleet indexes were never built, else {routed, failed, skip, unknown,
--          #failed ids, failed ids (also those failed at slot planning)..., #sessions,
--          (id, phone, trust level) per session routed to..., #bursts,
--          (session id, pending, cooldown_until) per demand burst...}
local now_s = ARGV[1]
local now = tonumber(now_s)
local clock = sendable_clock()
local levels = cjson.decode(ARGV[3])
local fallback_day, fallback_threshold = tonumber(ARGV[4]), tonumber(ARGV[5])
local demand_cooldown, sticky_ttl, catch_up_limit = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local jitter, horizon, default_level = tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12]
local fallback_interval, reserve_batch = tonumber(ARGV[13]), tonumber(ARGV[14])
local last_message_arg = 15 + 2 * tonumber(ARGV[15])
-- a Redis from before the fleet indexes: the caller builds them (sending/build_indexes.lua) first
if not redis.call('HGET', KEYS[3], 'built') then return {-1} end
-- the budgets every other script ranks with: this router's policy
sendable_configure(ARGV[2], levels, ARGV[4], ARGV[6])

local counts = {routed = 0, failed = 0, skip = 0, unknown = 0}
local failed_ids, routed_to, bursts = {}, {}, {}
local caught_up = {}

local function fail(id, reason, detail)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', MSG .. id, 'reason', reason)
  transition(id, 'failed', now_s, detail)
  failed_ids[#failed_ids + 1] = id
  counts.failed = counts.failed + 1
end

local function live_in(tenant, sid)
  if not sid then return nil end
  local st = sendable_state(sid, now, clock)
  if st and not st.dead and st.tenant == tenant then return st end
  return nil
end

-- (session id, its state, why) or (nil, nil, why not)
local function choose(tenant, to, wanted)
  if wanted and wanted ~= '' then
    local sid = redis.call('GET', 'session:by_phone:' .. wanted)
    local st = live_in(tenant, sid)
    if st then return sid, st, 'requested sender' end
    return nil, nil, 'no usable session of this tenant for sender ' .. wanted
  end
  if not caught_up[tenant] then
    sendable_catch_up(tenant, clock, catch_up_limit)
    caught_up[tenant] = true
  end
  local sticky = redis.call('GET', 'sticky:sender:' .. tenant .. ':' .. to)
  local sticky_st = live_in(tenant, sticky)
  if sticky_st and sticky_st.waits_less then return sticky, sticky_st, 'sticky sender of this recipient' end
  local best, st = sendable_best(tenant, now, clock)
  -- a sticky sender paused long still beats a new number when every live session is paused long
  if sticky_st and not (st and st.waits_less) then return sticky, sticky_st, 'sticky sender of this recipient' end
  if not best then return nil, nil, 'the tenant has no usable session' end
  if st.healthy then
    return best, st, string.format('healthy session with the most spare budget (%d today)', st.spare)
  end
  if st.ready then return best, st, 'connected session in cooldown (no healthy one)' end
  return best, st, 'session not connected yet (no connected one)'
end

local function route(id, tenant, to, quiet, sid, st, why)
  if quiet ~= '' then
    redis.call('HSET', MSG .. id, 'session', sid, 'sender', st.phone, 'quiet', quiet)
  else
    redis.call('HSET', MSG .. id, 'session', sid, 'sender', st.phone)
  end
  transition(id, 'routed', now_s, why)
  local queue = 'queue:session:' .. st.phone
  local waiting = redis.call('RPUSH', queue, id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('SET', 'sticky:sender:' .. tenant .. ':' .. to, sid, 'EX', sticky_ttl)
  -- one more message waits for it: one less to spare (st was read in this step; its due time
  -- does not change). Its slots are planned below, in this same step: no sessions:pump:due yet.
  st.spare = st.spare - 1
  st.rank = st.rank - 1
  sendable_store_rank(sid, st)
  if not routed_to[sid] then routed_to[#routed_to + 1] = sid end
  routed_to[sid] = {st.phone, st.level, waiting}
  local threshold = levels[st.level] and levels[st.level][2] or fallback_threshold
  local judged = judge_demand(queue, 'session:outbox:' .. sid, 'session:leases:' .. sid,
                              'session:pacing:' .. sid, now_s, threshold, demand_cooldown,
                              waiting + st.outbox)
  if judged[1] == 'burst' then
    sendable_refresh(sid, clock)
    bursts[#bursts + 1] = {sid, judged[2], judged[3]}
  end
  counts.routed = counts.routed + 1
end

for i = 16, last_message_arg - 1, 2 do
  local id, quiet = ARGV[i], ARGV[i + 1]
  local m = redis.call('HMGET', MSG .. id, 'status', 'tenant', 'to', 'from_requested', 'expires_at')
  local expires = tonumber(m[5] or '0') or 0
  if not m[1] then
    counts.unknown = counts.unknown + 1
  elseif m[1] ~= 'queued' then
    counts.skip = counts.skip + 1  -- a redelivered task: already handled
  elseif expires > 0 and expires <= now then
    fail(id, 'expired', 'expired before it was routed')
  elseif m[2] and m[3] and redis.call('HEXISTS', 'suppressions:' .. m[2], m[3]) == 1 then
    fail(id, 'suppressed', 'the recipient opted out')
  else
    local sid, st, why = choose(m[2] or '', m[3] or '', m[4])
    if sid then route(id, m[2] or '', m[3] or '', quiet, sid, st, why) else fail(id, 'no_session', why) end
  end
end

-- slots for every session that got work, at the pace of its level (waorch.policy.pacing.pace_for:
-- no level is the default level, an unknown one the fallback), with the randoms after the messages
local next_arg = last_message_arg
for _, sid in ipairs(routed_to) do
  local phone, level, waiting = routed_to[sid][1], routed_to[sid][2], routed_to[sid][3]
  local pace = levels[level ~= '' and level or default_level]
  local per_day, interval = fallback_day, fallback_interval
  if pace then per_day, interval = pace[1], pace[3] end
  local allowed = math.min(waiting, reserve_batch)
  local function next_random()
    if allowed <= 0 or next_arg >= #ARGV then return nil end
    allowed = allowed - 1
    next_arg = next_arg + 1
    return tonumber(ARGV[next_arg])
  end
  local planned, dropped = reserve_slots(
    {queue = 'queue:session:' .. phone, outbox = 'session:outbox:' .. sid, pacing = 'session:pacing:' .. sid,
     sendlog = 'session:sendlog:' .. sid, session = 'session:' .. sid, pump_due = KEYS[2]},
    sid, now_s, interval, jitter, horizon, per_day, next_random)
  for _, id in ipairs(dropped) do failed_ids[#failed_ids + 1] = id end
  if planned > 0 then redis.call('PUBLISH', 'outbox:wake', sid) end
end

local out = {counts.routed, counts.failed, counts.skip, counts.unknown, #failed_ids}
for _, id in ipairs(failed_ids) do out[#out + 1] = id end
out[#out + 1] = #routed_to
for _, sid in ipairs(routed_to) do
  out[#out + 1] = sid
  out[#out + 1] = routed_to[sid][1]
  out[#out + 1] = routed_to[sid][2]
end
out[#out + 1] = #bursts
for _, burst in ipairs(bursts) do
  out[#out + 1] = burst[1]
  out[#out + 1] = burst[2]
  out[#out + 1] = burst[3]
end
return out
