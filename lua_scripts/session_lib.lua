-- Shared by the session scripts (included at load time by waorch.lua, not a script of its own).
-- Session keys are derived from ids inside scripts: waorch runs on one Redis primary.
local function k_session(sid) return 'session:' .. sid end

-- Statuses that only the orchestrator leaves (restart): late worker events keep them. A logged-out
-- session is not one of them: its worker pairs again, and the next QR makes it `pairing`.
local STICKY_STATUS = {banned = true, stopped = true}

local function set_status(sid, status, now)
  redis.call('HSET', k_session(sid), 'status', status, 'status_at', now)
  redis.call('SET', 'session:status:' .. sid, status)
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
