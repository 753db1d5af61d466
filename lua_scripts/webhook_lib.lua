-- Shared by the client webhook scripts (included at load time by waorch.lua, not a script of its
-- own). Keys are derived from ids inside scripts, as in waorch/keys.py: one Redis primary.
local function k_sub(sub) return 'webhook:' .. sub end
local function k_lane(sub, lane) return 'webhook:lane:' .. sub .. ':' .. lane end
local function k_state(sub, lane) return 'webhook:lanestate:' .. sub .. ':' .. lane end
local function k_event(id) return 'client:event:' .. id end
local function k_dead(id) return 'webhook:dead:' .. id end
local function k_tenant_dead(tenant) return 'webhooks:dead:tenant:' .. tenant end
local DUE = 'webhooks:due'
local DEAD_ALL = 'webhooks:dead:all'

-- "<event id> <queued_at>" -> id, queued_at
local function split_entry(entry)
  local id, queued = string.match(entry, '^(%S+) (%S+)$')
  return id, tonumber(queued)
end
