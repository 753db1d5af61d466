-- Shared by the client webhook scripts (included at load time by waorch.core.lua, not a script of its
-- own). Keys are derived from ids inside scripts, as in waorch/core/keys.py: one Redis primary.
local function k_sub(sub) return 'webhook:' .. sub end
local function k_lane(sub, lane) return 'webhook:lane:' .. sub .. ':' .. lane end
local function k_state(sub, lane) return 'webhook:lanestate:' .. sub .. ':' .. lane end
local function k_event(id) return 'client:event:' .. id end
local function k_dead(id) return 'webhook:dead:' .. id end
local function k_tenant_dead(tenant) return 'webhooks:dead:tenant:' .. tenant end
local DUE = 'webhooks:due'
local DEAD_ALL = 'webhooks:dead:all'

-- "<event id> <queued_at> <order key>" -> id, queued_at, order key (the message or session the
-- event is about). An entry without an order key (queued before keys were kept) is its own entity.
local function split_entry(entry)
  local id, queued, key = string.match(entry, '^(%S+) (%S+) ?(%S*)$')
  if key == '' then key = id end
  return id, tonumber(queued), key
end

-- A lane's state hash holds 'block:<order key>' -> JSON {attempts, next_at, since, error} per
-- entity whose head event is failing (its events wait, the lane's others go on), and the lane's
-- own pause while the endpoint looks down (paused_until, lane_attempts; fail_streak counts failed
-- attempts since the last success). Keep its
-- summary (failing_since, last_error and next_at of the longest-failing entity) up to date, and
-- drop the hash once nothing fails or pauses.
local function summarize_lane(sub, lane)
  local key = k_state(sub, lane)
  local fields = redis.call('HGETALL', key)
  local since, err, next_at, paused, streak = nil, nil, nil, 0, 0
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 6) == 'block:' then
      local block = cjson.decode(fields[i + 1])
      if not since or block.since < since then since, err = block.since, block.error end
      if not next_at or block.next_at < next_at then next_at = block.next_at end
    elseif fields[i] == 'paused_until' then
      paused = tonumber(fields[i + 1]) or 0
    elseif fields[i] == 'fail_streak' then
      streak = tonumber(fields[i + 1]) or 0
    end
  end
  if not since then
    if paused == 0 and streak == 0 then
      redis.call('DEL', key)
    else
      redis.call('HDEL', key, 'failing_since', 'last_error', 'next_at')
    end
    return
  end
  redis.call('HSET', key, 'failing_since', string.format('%.3f', since), 'last_error', err,
             'next_at', string.format('%.3f', math.max(next_at, paused)))
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

-- Keep a queued lane entry as dead letter `dl` (the record waorch/webhooks/dead_letters.py reads), listed
-- by tenant and overall until `keep` seconds after `at`, and let go of the event's own record.
local function dead_letter(dl, sub, tenant, url, lane, entry, attempts, err, at, keep)
  local id, queued, key = split_entry(entry)
  redis.call('HSET', k_dead(dl), 'id', dl, 'tenant', tenant, 'subscription', sub, 'url', url,
             'lane', lane, 'event_id', id or entry, 'event', redis.call('GET', k_event(id or '')) or '',
             'attempts', attempts, 'last_error', err, 'queued_at', queued or '', 'dead_at', at,
             'order_key', key or '')
  redis.call('EXPIRE', k_dead(dl), keep)
  redis.call('ZADD', k_tenant_dead(tenant), at, dl)
  redis.call('ZADD', DEAD_ALL, at, dl)
  release_event(id)
end
