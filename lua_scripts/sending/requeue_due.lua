--! include lib/message
-- The lease sweep over leases:due (ZSET session id -> the earliest expiry of its leases, or
-- earlier): for each given session, leases that expired go back to its outbox, due now, and its
-- entry moves to its earliest remaining lease, or goes when it holds none. In one step per call,
-- so a lease added meanwhile by a claim is either seen here or entered by that claim's caller.
-- KEYS[1] leases:due; ARGV[1] now, ARGV[2..] session ids
-- Returns {leases requeued, ids of the sessions that had some...}
local now = ARGV[1]
local total, woken = 0, {}
for i = 2, #ARGV do
  local sid = ARGV[i]
  local leases = 'session:leases:' .. sid
  local n = requeue_expired(leases, 'session:outbox:' .. sid, now)
  if n > 0 then
    total = total + n
    woken[#woken + 1] = sid
  end
  local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', KEYS[1], first[2], sid)
  else
    redis.call('ZREM', KEYS[1], sid)
  end
end
local out = {total}
for _, sid in ipairs(woken) do out[#out + 1] = sid end
return out
