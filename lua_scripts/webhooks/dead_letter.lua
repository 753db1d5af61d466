--! include lib/webhook
-- After a failed attempt: move the failing events whose retry window has ended to the dead
-- letters (the one attempted with its attempts; those behind it were not tried in time). With an
-- order key (ARGV[10]) these are that entity's first events, wherever they sit in the lane, and its
-- failure state is forgotten; without one, the lane's leading events.
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] now, ARGV[4] retry window (s), ARGV[5] keep (s),
-- ARGV[6] attempts of the head, ARGV[7] last error, ARGV[8] dead-letter id prefix, ARGV[9] most,
-- ARGV[10] order key ('': none), ARGV[11] lane entries to look through (with an order key)
-- Returns how many events were dead-lettered.
local sub, lane, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local order_key = ARGV[10] ~= '' and ARGV[10] or nil
local record = redis.call('HMGET', k_sub(sub), 'tenant', 'url')
local tenant, url = record[1], record[2]
if not tenant then return 0 end
local moved = 0
local late = 'not attempted: its retry window ended while an earlier event was failing'
if order_key then
  for _, entry in ipairs(redis.call('LRANGE', k_lane(sub, lane), 0, tonumber(ARGV[11]) - 1)) do
    local _, queued, key = split_entry(entry)
    if key == order_key then
      if moved >= tonumber(ARGV[9]) or (queued and queued + tonumber(ARGV[4]) > now) then break end
      local attempts, err = ARGV[6], ARGV[7]
      if moved > 0 then attempts, err = '0', late end
      dead_letter(ARGV[8] .. moved, sub, tenant, url, lane, entry, attempts, err, ARGV[3], ARGV[5])
      redis.call('LREM', k_lane(sub, lane), 1, entry)
      moved = moved + 1
    end
  end
  redis.call('HDEL', k_state(sub, lane), 'block:' .. order_key)
  summarize_lane(sub, lane)
end
while not order_key and moved < tonumber(ARGV[9]) do
  local entry = redis.call('LINDEX', k_lane(sub, lane), 0)
  if not entry then break end
  local _, queued = split_entry(entry)
  if queued and queued + tonumber(ARGV[4]) > now then break end
  local attempts, err = ARGV[6], ARGV[7]
  if moved > 0 then attempts, err = '0', late end
  dead_letter(ARGV[8] .. moved, sub, tenant, url, lane, entry, attempts, err, ARGV[3], ARGV[5])
  redis.call('LPOP', k_lane(sub, lane))
  moved = moved + 1
end
if moved > 0 and not order_key then redis.call('DEL', k_state(sub, lane)) end
-- the listings forget what expired
redis.call('ZREMRANGEBYSCORE', k_tenant_dead(tenant), '-inf', now - tonumber(ARGV[5]))
redis.call('ZREMRANGEBYSCORE', DEAD_ALL, '-inf', now - tonumber(ARGV[5]))
return moved
