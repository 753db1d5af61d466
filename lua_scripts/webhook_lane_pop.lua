--! include webhook_lib
-- The lane's head event was delivered: drop it (only if it is still the head) and reset the
-- lane's retry state. A run that lost its lock must not pop an event it did not deliver.
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] entry, ARGV[4] now
-- Returns 1 when popped, 0 otherwise.
local sub, lane = ARGV[1], ARGV[2]
if redis.call('LINDEX', k_lane(sub, lane), 0) ~= ARGV[3] then return 0 end
redis.call('LPOP', k_lane(sub, lane))
release_event((split_entry(ARGV[3])))
redis.call('DEL', k_state(sub, lane))
if redis.call('EXISTS', k_sub(sub)) == 1 then
  redis.call('HINCRBY', k_sub(sub), 'delivered', 1)
  redis.call('HSET', k_sub(sub), 'last_delivery_at', ARGV[4])
end
return 1
