--! include lib/webhook
-- End a delivery run: give up the lane's lock and say whether events remain. An empty lane
-- leaves the due set (and forgets its failure state) in the same step, so an event queued
-- meanwhile is never stranded.
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] lock token, ARGV[4] due time if events remain
-- Returns 'idle' | 'more'
local sub, lane = ARGV[1], ARGV[2]
local lock = 'webhook:lanelock:' .. sub .. ':' .. lane
if redis.call('GET', lock) == ARGV[3] then redis.call('DEL', lock) end
if redis.call('LLEN', k_lane(sub, lane)) == 0 then
  redis.call('ZREM', DUE, sub .. ':' .. lane)
  redis.call('DEL', k_state(sub, lane))  -- nothing queued: nothing failing
  return 'idle'
end
redis.call('ZADD', DUE, ARGV[4], sub .. ':' .. lane)
return 'more'
