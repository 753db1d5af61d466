-- Shared by the session scripts (included at load time by waorch.core.lua, not a script of its own).
-- Session keys are derived from ids inside scripts: waorch runs on one Redis primary.
--! include lib/client_event_mark
local function k_session(sid) return 'session:' .. sid end
local function k_status_log(sid) return 'session:statuslog:' .. sid end
local STATUS_LOG_CAP = 50  -- status changes kept for client events not emitted yet

-- Statuses that only the orchestrator leaves (restart): late worker events keep them. A logged-out
-- session is not one of them: its worker pairs again, and the next QR makes it `pairing`.
local STICKY_STATUS = {banned = true, stopped = true}

local function set_status(sid, status, now)
  redis.call('HSET', k_session(sid), 'status', status, 'status_at', now)
  redis.call('SET', 'session:status:' .. sid, status)
end

-- A status change clients hear about (session.status): numbered (status_seq) and logged with its
-- detail in the same step, and marked as not emitted yet for tenants with webhooks, so the sweep
-- of waorch.webhooks.events emits it if the process that applied it dies before its hook ran.
-- Call it after the change's fields (last_error) are written.
local function note_status_change(sid, old, new, now)
  local seq = redis.call('HINCRBY', k_session(sid), 'status_seq', 1)
  local record = redis.call('HMGET', k_session(sid), 'tenant', 'last_error')
  redis.call('RPUSH', k_status_log(sid), cjson.encode({seq = seq, status = new, previous = old,
                                                       at = tonumber(now), detail = record[2] or ''}))
  redis.call('LTRIM', k_status_log(sid), -STATUS_LOG_CAP, -1)
  mark_client_event(record[1], 'session:' .. sid)
end

-- sessions:last_ping (ZSET id -> last sign of life: the later of its last PING and its (re)start),
-- of desired-active sessions only, kept with the fields it mirrors, so that the watchdog reads
-- only the sessions gone silent.
local function note_sign_of_life(sid)
  local t = redis.call('HMGET', k_session(sid), 'last_ping', 'started_at', 'desired')
  if t[3] ~= 'active' then
    redis.call('ZREM', 'sessions:last_ping', sid)
    return
  end
  local last = math.max(tonumber(t[1] or '0') or 0, tonumber(t[2] or '0') or 0)
  redis.call('ZADD', 'sessions:last_ping', string.format('%.3f', last), sid)
end

local function push_event(sid, event_json, cap)
  if event_json == nil or event_json == '' then return end
  redis.call('LPUSH', 'session:events:' .. sid, event_json)
  redis.call('LTRIM', 'session:events:' .. sid, 0, cap - 1)
end

-- ARGV from index `first` on are field/value pairs for the session hash.
local function set_fields(sid, first)
  if #ARGV >= first + 1 then
    local pairs_ = {}
    for i = first, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
    redis.call('HSET', k_session(sid), unpack(pairs_))
  end
end
