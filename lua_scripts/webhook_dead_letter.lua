--! include webhook_lib
-- After a failed attempt: move the lane's leading events whose retry window has ended to the
-- dead letters (the head with its attempts; those behind it were not tried in time).
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] now, ARGV[4] retry window (s), ARGV[5] keep (s),
-- ARGV[6] attempts of the head, ARGV[7] last error, ARGV[8] dead-letter id prefix, ARGV[9] most
-- Returns how many events were dead-lettered.
local sub, lane, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local record = redis.call('HMGET', k_sub(sub), 'tenant', 'url')
local tenant, url = record[1], record[2]
if not tenant then return 0 end
local moved = 0
while moved < tonumber(ARGV[9]) do
  local entry = redis.call('LINDEX', k_lane(sub, lane), 0)
  if not entry then break end
  local _, queued = split_entry(entry)
  if queued and queued + tonumber(ARGV[4]) > now then break end
  local attempts, err = ARGV[6], ARGV[7]
  if moved > 0 then attempts, err = '0', 'not attempted: its retry window ended while an earlier event was failing' end
  dead_letter(ARGV[8] .. moved, sub, tenant, url, lane, entry, attempts, err, ARGV[3], ARGV[5])
  redis.call('LPOP', k_lane(sub, lane))
  moved = moved + 1
end
if moved > 0 then redis.call('DEL', k_state(sub, lane)) end
-- the listings forget what expired
redis.call('ZREMRANGEBYSCORE', k_tenant_dead(tenant), '-inf', now - tonumber(ARGV[5]))
redis.call('ZREMRANGEBYSCORE', DEAD_ALL, '-inf', now - tonumber(ARGV[5]))
return moved
