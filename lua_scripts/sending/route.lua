--! include lib/message
--! include lib/sendable
-- Route a queued message to a session: into that session's FIFO of messages awaiting a slot,
-- the session due for slot planning (sessions:pump:due), its rank in the sender index lowered.
-- KEYS[1] queue:session:<phone>, KEYS[2] messages:unrouted, KEYS[3] sessions:pump:due
-- ARGV[1] msg id, ARGV[2] session id, ARGV[3] sender phone, ARGV[4] now, ARGV[5] detail
-- Returns 1 when routed, 0 when the message was not in state queued (already handled).
local id = ARGV[1]
if status_of(id) ~= 'queued' then return 0 end
redis.call('HSET', MSG .. id, 'session', ARGV[2], 'sender', ARGV[3])
transition(id, 'routed', ARGV[4], ARGV[5])
redis.call('RPUSH', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
local clock = sendable_clock()
redis.call('ZADD', KEYS[3], 'LT', string.format('%.6f', clock), ARGV[2])
sendable_refresh(ARGV[2], clock)
return 1
