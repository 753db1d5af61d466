--! include lib/webhook
--! include lib/client_event
-- Record client events and queue them, in order, on one lane of every enabled subscription of
-- the tenant that wants their type. Guarded so that racing emitters (the hook that applied a
-- change, the sweep of pending marks) emit each change once: with a sequence key, only if
-- nobody advanced its client_seq meanwhile; an inbound mark is taken by exactly one emitter.
-- ARGV[1] tenant, ARGV[2] lane, ARGV[3] now, ARGV[4] event ttl (s), ARGV[5] due time of a lane
-- that was empty, ARGV[6] sequence hash key or '', ARGV[7] expected sequence, ARGV[8] new sequence,
-- ARGV[9] pending mark to settle or '', ARGV[10] order key (the message or session: kept with
-- each lane entry, so one failing entity holds back only its own events),
-- ARGV[11..] triples: event id, event type, event JSON
-- Returns {'ok', '<sub>:<lane>' of each lane that was empty} or {'conflict'}
if ARGV[6] ~= '' then
  if redis.call('EXISTS', ARGV[6]) == 0 then return {'conflict'} end
  local seq = tonumber(redis.call('HGET', ARGV[6], 'client_seq') or '0')
  if seq ~= tonumber(ARGV[7]) then return {'conflict'} end
  redis.call('HSET', ARGV[6], 'client_seq', ARGV[8])
  if ARGV[9] ~= '' then clear_if_emitted(ARGV[9]) end
elseif ARGV[9] ~= '' then
  local event_id = string.match(ARGV[9], '^inbound:(.+)$')
  if not event_id or redis.call('HDEL', INBOUND, event_id) == 0 then return {'conflict'} end
  redis.call('ZREM', PENDING, ARGV[9])
end
local woken = {'ok'}
local subs = redis.call('SMEMBERS', 'webhooks:tenant:' .. ARGV[1])
table.sort(subs)
for _, sub in ipairs(subs) do
  local found = redis.call('HMGET', k_sub(sub), 'events', 'disabled_at')
  local wanted = found[1]
  if wanted and not found[2] then
    wanted = ',' .. wanted .. ','
    local lane_key = k_lane(sub, ARGV[2])
    for i = 11, #ARGV, 3 do
      if string.find(wanted, ',' .. ARGV[i + 1] .. ',', 1, true) then
        hold_event(ARGV[i], ARGV[i + 2], ARGV[4])
        if redis.call('RPUSH', lane_key, ARGV[i] .. ' ' .. ARGV[3] .. ' ' .. ARGV[10]) == 1 then
          redis.call('ZADD', DUE, ARGV[5], sub .. ':' .. ARGV[2])
          woken[#woken + 1] = sub .. ':' .. ARGV[2]
        end
      end
    end
  end
end
return woken
