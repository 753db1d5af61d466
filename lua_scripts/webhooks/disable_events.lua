--! include lib/webhook
-- The endpoint answered 410 Gone: disable the subscription (no more events are queued for it)
-- and move what its lanes still hold to the dead letters, where the client finds them and may
-- redeliver them after enabling it again. Also run for a lane found queued while disabled.
-- ARGV[1] subscription id, ARGV[2] now, ARGV[3] reason, ARGV[4] dead letters keep (s),
-- ARGV[5] dead-letter id prefix, ARGV[6] number of lanes, ARGV[7] lane of the failed attempt,
-- ARGV[8] attempts of the failed event, ARGV[9] that event's lane entry ('' or absent: the
-- lane's head)
-- Returns how many events were dead-lettered.
local sub = ARGV[1]
local record = redis.call('HMGET', k_sub(sub), 'tenant', 'url', 'disabled_at', 'disabled_reason')
local tenant, url = record[1], record[2]
if not tenant then return 0 end
local reason = record[4] or ARGV[3]
if not record[3] then
  redis.call('HSET', k_sub(sub), 'disabled_at', ARGV[2], 'disabled_reason', ARGV[3])
end
local moved = 0
for lane = 0, tonumber(ARGV[6]) - 1 do
  local entries = redis.call('LRANGE', k_lane(sub, lane), 0, -1)
  for position, entry in ipairs(entries) do
    local attempts, err = '0', 'not attempted: the webhook was disabled (' .. reason .. ')'
    local failed = position == 1
    if ARGV[9] and ARGV[9] ~= '' then failed = entry == ARGV[9] end
    if failed and tostring(lane) == ARGV[7] then attempts, err = ARGV[8], reason end
    dead_letter(ARGV[5] .. moved, sub, tenant, url, lane, entry, attempts, err, ARGV[2], ARGV[4])
    moved = moved + 1
  end
  redis.call('DEL', k_lane(sub, lane), k_state(sub, lane))
  redis.call('ZREM', DUE, sub .. ':' .. lane)
end
return moved
