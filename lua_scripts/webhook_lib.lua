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

local function k_refs(id) return 'client:eventrefs:' .. id end

-- An event record lives while some lane still holds it (client:eventrefs:<id> counts them): the
-- last lane to let it go (delivered, dead-lettered, dropped) deletes it, so delivered events take
-- no memory.
local function hold_event(id, body, ttl)
  redis.call('SET', k_event(id), body, 'EX', ttl)
  redis.call('INCR', k_refs(id))
  redis.call('EXPIRE', k_refs(id), ttl)
end

local function release_event(id)
  if id and redis.call('DECR', k_refs(id)) <= 0 then
    redis.call('DEL', k_event(id), k_refs(id))
  end
end

-- Keep a queued lane entry as dead letter `dl` (the record waorch/dead_letters.py reads), listed
-- by tenant and overall until `keep` seconds after `at`, and let go of the event's own record.
local function dead_letter(dl, sub, tenant, url, lane, entry, attempts, err, at, keep)
  local id, queued = split_entry(entry)
  redis.call('HSET', k_dead(dl), 'id', dl, 'tenant', tenant, 'subscription', sub, 'url', url,
             'lane', lane, 'event_id', id or entry, 'event', redis.call('GET', k_event(id or '')) or '',
             'attempts', attempts, 'last_error', err, 'queued_at', queued or '', 'dead_at', at)
  redis.call('EXPIRE', k_dead(dl), keep)
  redis.call('ZADD', k_tenant_dead(tenant), at, dl)
  redis.call('ZADD', DEAD_ALL, at, dl)
  release_event(id)
end
