--! include lib/message
-- Route a queued message to a session: into that session's FIFO of messages awaiting a slot.
-- KEYS[1] queue:session:<phone>, KEYS[2] messages:unrouted
-- ARGV[1] msg id, ARGV[2] session id, ARGV[3] sender phone, ARGV[4] now, ARGV[5] detail
-- Returns 1 when routed, 0 when the message was not in state queued (already handled).
local id = ARGV[1]
if status_of(id) ~= 'queued' then return 0 end
redis.call('HSET', MSG .. id, 'session', ARGV[2], 'sender', ARGV[3])
transition(id, 'routed', ARGV[4], ARGV[5])
redis.call('RPUSH', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
return 1
