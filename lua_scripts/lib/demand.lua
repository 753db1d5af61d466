-- Burst detection on demand (included at load time by waorch.core.lua, not a script of its own):
-- a session with far more work waiting than its budget allows (a bulk dump) goes into cooldown
-- and is reported once per episode; the episode ends when the pending work falls back under the
-- threshold. Used by policy/judge_demand.lua and by the router (sending/dispatch_batch.lua).
-- Returns {'burst', pending, cooldown_until} | {'over', pending, ''} | {'ok', pending, ''}
-- `waiting`: the FIFO and outbox lengths when the caller knows them (nil: read here)
local function judge_demand(queue_key, outbox_key, leases_key, pacing_key, now, threshold, cooldown, waiting)
  waiting = waiting or (redis.call('LLEN', queue_key) + redis.call('ZCARD', outbox_key))
  local pending = waiting + redis.call('ZCARD', leases_key)
  if pending <= threshold then
    redis.call('HDEL', pacing_key, 'demand_burst')
    return {'ok', pending, ''}
  end
  if redis.call('HSETNX', pacing_key, 'demand_burst', now) == 0 then return {'over', pending, ''} end
  local running = tonumber(redis.call('HGET', pacing_key, 'cooldown_until') or '0') or 0
  local until_ = math.max(running, tonumber(now) + cooldown)
  redis.call('HSET', pacing_key, 'cooldown_until', until_)
  if until_ > running then redis.call('HSET', pacing_key, 'cooldown_reason', 'demand burst') end
  return {'burst', pending, string.format('%.6f', until_)}
end
