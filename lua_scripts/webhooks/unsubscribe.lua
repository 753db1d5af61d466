--! include lib/webhook
-- Forget a subscription and the events still queued for it (its dead letters stay listable).
-- Also used for a lane whose subscription is already gone (then it only cleans up).
-- ARGV[1] subscription id, ARGV[2] tenant, ARGV[3] number of lanes
-- Returns 1 when it existed, 0 otherwise.
local sub = ARGV[1]
local existed = redis.call('DEL', k_sub(sub))
redis.call('SREM', 'webhooks:tenant:' .. ARGV[2], sub)
redis.call('SREM', 'webhooks:all', sub)
for lane = 0, tonumber(ARGV[3]) - 1 do
  for _, entry in ipairs(redis.call('LRANGE', k_lane(sub, lane), 0, -1)) do
    release_event((split_entry(entry)))
  end
  redis.call('DEL', k_lane(sub, lane), k_state(sub, lane))
  redis.call('ZREM', DUE, sub .. ':' .. lane)
end
return existed
