--! include lib/webhook
-- Put a dead-lettered event back on its subscription's lane (a fresh retry window), once.
-- ARGV[1] dead-letter id, ARGV[2] tenant or '' (any), ARGV[3] now, ARGV[4] event ttl (s),
-- ARGV[5] due time if the lane was empty
-- Returns {'ok', '<sub>:<lane>' or ''} | {'unknown'} | {'gone'}
local dl = redis.call('HGETALL', k_dead(ARGV[1]))
if #dl == 0 then return {'unknown'} end
local rec = {}
for i = 1, #dl, 2 do rec[dl[i]] = dl[i + 1] end
if ARGV[2] ~= '' and rec.tenant ~= ARGV[2] then return {'unknown'} end
if redis.call('EXISTS', k_sub(rec.subscription)) == 0 or rec.event == '' then return {'gone'} end
hold_event(rec.event_id, rec.event, ARGV[4])
local woken = ''
local entry = rec.event_id .. ' ' .. ARGV[3]
if rec.order_key and rec.order_key ~= '' and rec.order_key ~= rec.event_id then
  entry = entry .. ' ' .. rec.order_key  -- back with its message or session (order per entity)
end
if redis.call('RPUSH', k_lane(rec.subscription, rec.lane), entry) == 1 then
  woken = rec.subscription .. ':' .. rec.lane
  redis.call('ZADD', DUE, ARGV[5], woken)
end
redis.call('DEL', k_dead(ARGV[1]))
redis.call('ZREM', k_tenant_dead(rec.tenant), ARGV[1])
redis.call('ZREM', DEAD_ALL, ARGV[1])
return {'ok', woken}
