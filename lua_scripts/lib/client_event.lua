-- Shared by the client event scripts (included at load time by waorch.core.lua, not a script of its
-- own). `client:events:pending` (ZSET) holds what may still have to become client events:
-- 'msg:<id>' and 'session:<id>' (written by message_lib/session_lib with the state change) and
-- 'inbound:<event id>' (written with the stored inbound message, its event in
-- `client:events:inbound`). Hooks and the sweep of waorch.webhooks.events clear them.
local PENDING = 'client:events:pending'
local INBOUND = 'client:events:inbound'

-- The hash whose client_seq counts what became events, and how far it has to go; nil when the
-- message or session is gone.
local function progress_of(kind, id)
  if kind == 'msg' then
    if redis.call('EXISTS', 'msg:' .. id) == 0 then return nil end
    return 'msg:' .. id, redis.call('LLEN', 'msg:history:' .. id)
  end
  if redis.call('EXISTS', 'session:' .. id) == 0 then return nil end
  return 'session:' .. id, tonumber(redis.call('HGET', 'session:' .. id, 'status_seq') or '0')
end

-- Drop a mark when nothing it stands for is left to emit (compare-and-clear: a change applied
-- after the caller read the state keeps it). Returns 1 when the mark is gone.
local function clear_if_emitted(member)
  local kind, id = string.match(member, '^(%a+):(.+)$')
  if kind == 'inbound' then
    if redis.call('HEXISTS', INBOUND, id) == 1 then return 0 end
  elseif kind == 'msg' or kind == 'session' then
    local key, total = progress_of(kind, id)
    if key and tonumber(redis.call('HGET', key, 'client_seq') or '0') < total then return 0 end
  end
  redis.call('ZREM', PENDING, member)
  return 1
end
