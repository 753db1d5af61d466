--! include lib/session
--! include lib/sendable
-- The fleet indexes from one walk over every session, for a Redis that has sessions from before
-- them (scripts keep them from then on): the sender index (lib/sendable), sessions:last_ping,
-- leases:due (each session's earliest lease) and sessions:pump:due (sessions with routed messages
-- waiting). Marks sessions:sendable:conf `built`; run again, it only re-derives the same entries.
-- KEYS[1] sessions:sendable:conf
-- ARGV[1..4] the router's budgets as sending/dispatch_batch.lua takes them in its ARGV[2..4] and [6]
-- Returns the number of sessions indexed.
sendable_configure(ARGV[1], cjson.decode(ARGV[2]), ARGV[3], ARGV[4])
local clock = sendable_clock()
local n = 0
for _, sid in ipairs(redis.call('SMEMBERS', 'sessions:all')) do
  local st = sendable_refresh(sid, clock)
  if st then
    n = n + 1
    note_sign_of_life(sid)
    local lease = redis.call('ZRANGE', 'session:leases:' .. sid, 0, 0, 'WITHSCORES')
    if lease[2] then redis.call('ZADD', 'leases:due', 'LT', lease[2], sid) end
    if not st.dead and redis.call('LLEN', 'queue:session:' .. st.phone) > 0 then
      redis.call('ZADD', 'sessions:pump:due', 'LT', string.format('%.6f', clock), sid)
    end
  end
end
redis.call('HSET', KEYS[1], 'built', string.format('%.6f', clock))
return n
