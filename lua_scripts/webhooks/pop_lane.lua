--! include lib/webhook
-- An event of the lane was delivered: drop it and count it. With an order key (ARGV[5]) the entry
-- may sit anywhere in the lane (entries of failing entities before it wait) and only that
-- entity's failure state and the lane's pause are cleared; without one it must be the lane's head
-- and the whole lane state is reset. A run that lost its lock must not pop an event it did not
-- deliver.
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] entry, ARGV[4] now, ARGV[5] order key ('': none)
-- Returns 1 when popped, 0 otherwise.
local sub, lane = ARGV[1], ARGV[2]
local order_key = ARGV[5] ~= '' and ARGV[5] or nil
if order_key then
  if redis.call('LREM', k_lane(sub, lane), 1, ARGV[3]) == 0 then return 0 end
  redis.call('HDEL', k_state(sub, lane), 'block:' .. order_key, 'paused_until', 'lane_attempts',
             'fail_streak')
  summarize_lane(sub, lane)
else
  if redis.call('LINDEX', k_lane(sub, lane), 0) ~= ARGV[3] then return 0 end
  redis.call('LPOP', k_lane(sub, lane))
  redis.call('DEL', k_state(sub, lane))
end
release_event((split_entry(ARGV[3])))
if redis.call('EXISTS', k_sub(sub)) == 1 then
  redis.call('HINCRBY', k_sub(sub), 'delivered', 1)
  redis.call('HSET', k_sub(sub), 'last_delivery_at', ARGV[4])
end
return 1
