--! include lib/message
-- Take a lost (or long-paused) session's unsent messages back to routing, atomically: its routed
-- messages (queue), scheduled ones (outbox) and leases that already expired go back to `queued`
-- and to messages:unrouted, for the caller to dispatch again to another sender. A message whose
-- explicit `from` named this session fails with `session_lost` in mode 'lost' and stays in mode
-- 'keep' (a paused session still exists). Leases that have not expired stay with their worker:
-- the next call, after they expire or come back by NACK, takes them. Running twice moves nothing
-- twice: only messages still in this session's structures, in their expected state, move.
-- The queue is keyed by phone and may hold messages of a later session of the same phone: those stay.
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:leases:<id>,
-- KEYS[4] messages:unrouted, KEYS[5] sessions:gone
-- ARGV[1] session id, ARGV[2] now, ARGV[3] why ('session <id> banned'), ARGV[4] 'lost' | 'keep',
-- ARGV[5] a deleted session's sessions:gone entry is forgotten once nothing of it is left and it
-- was deleted before this time (late routes of a dispatch that raced the deletion had their chance)
-- Returns {left (outbox + leases still held), rerouted count, rerouted ids..., failed ids...}
local sid, now, why, lost = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'lost'
local rerouted, failed = {}, {}

-- true when the message left the session
local function take(id)
  local wanted = redis.call('HGET', MSG .. id, 'from_requested')
  if wanted and wanted ~= '' then
    if not lost then return false end
    redis.call('HSET', MSG .. id, 'reason', 'session_lost')
    transition(id, 'failed', now, 'the requested sender is gone: ' .. why)
    failed[#failed + 1] = id
    return true
  end
  -- dispatch chooses anew: no trace of the old sender's slot or quiet-hours hold
  redis.call('HDEL', MSG .. id, 'session', 'sender', 'scheduled_for', 'quiet')
  transition(id, 'queued', now, 'rerouted: ' .. why)
  redis.call('ZADD', KEYS[4], now, id)
  rerouted[#rerouted + 1] = id
  return true
end

requeue_expired(KEYS[3], KEYS[2], now)

local queue = redis.call('LRANGE', KEYS[1], 0, -1)
if #queue > 0 then
  local keep, changed = {}, false
  for _, id in ipairs(queue) do
    local status = status_of(id)
    if status == 'routed' and redis.call('HGET', MSG .. id, 'session') == sid then
      if take(id) then changed = true else keep[#keep + 1] = id end
    elseif status == 'routed' then
      keep[#keep + 1] = id  -- a later session of the same phone owns it
    else
      changed = true  -- stale entry (slot planning drops these too)
    end
  end
  if changed then
    redis.call('DEL', KEYS[1])
    for i = 1, #keep, 1000 do
      redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
    end
  end
end

for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local status = status_of(id)
  if status == 'scheduled' then
    if take(id) then redis.call('ZREM', KEYS[2], id) end
  elseif not status or TERMINAL[status] then
    redis.call('ZREM', KEYS[2], id)
  end
end

local left = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
local gone = redis.call('HGET', KEYS[5], sid)
if gone and left == 0 and tonumber(cjson.decode(gone).at) <= tonumber(ARGV[5]) then
  redis.call('HDEL', KEYS[5], sid)
end
local out = {left, #rerouted}
for _, id in ipairs(rerouted) do out[#out + 1] = id end
for _, id in ipairs(failed) do out[#out + 1] = id end
return out
