--! include webhook_lib
-- Record client events and queue them, in order, on one lane of every subscription of the
-- tenant that wants their type. With a sequence key, only if nobody emitted these already.
-- ARGV[1] tenant, ARGV[2] lane, ARGV[3] now, ARGV[4] event ttl (s), ARGV[5] due time of a lane
-- that was empty, ARGV[6] sequence hash key or '', ARGV[7] expected sequence, ARGV[8] new sequence,
-- ARGV[9..] triples: event id, event type, event JSON
-- Returns {'ok', '<sub>:<lane>' of each lane that was empty} or {'conflict'}
if ARGV[6] ~= '' then
  if redis.call('EXISTS', ARGV[6]) == 0 then return {'conflict'} end
  local seq = tonumber(redis.call('HGET', ARGV[6], 'client_seq') or '0')
  if seq ~= tonumber(ARGV[7]) then return {'conflict'} end
  redis.call('HSET', ARGV[6], 'client_seq', ARGV[8])
end
local woken = {'ok'}
local subs = redis.call('SMEMBERS', 'webhooks:tenant:' .. ARGV[1])
table.sort(subs)
for _, sub in ipairs(subs) do
  local wanted = redis.call('HGET', k_sub(sub), 'events')
  if wanted then
    wanted = ',' .. wanted .. ','
    local lane_key = k_lane(sub, ARGV[2])
    for i = 9, #ARGV, 3 do
      if string.find(wanted, ',' .. ARGV[i + 1] .. ',', 1, true) then
        hold_event(ARGV[i], ARGV[i + 2], ARGV[4])
        if redis.call('RPUSH', lane_key, ARGV[i] .. ' ' .. ARGV[3]) == 1 then
          redis.call('ZADD', DUE, ARGV[5], sub .. ':' .. ARGV[2])
          woken[#woken + 1] = sub .. ':' .. ARGV[2]
        end
      end
    end
  end
end
return woken
