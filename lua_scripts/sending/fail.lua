--! include lib/message
-- Fail a message that has not been sent, with a reason; removes it from routing structures.
-- KEYS[1] messages:unrouted, KEYS[2] session:outbox:<id> or '', KEYS[3] session:leases:<id> or ''
-- ARGV[1] msg id, ARGV[2] reason, ARGV[3] detail, ARGV[4] now
-- Returns 1 when failed now, 0 when it was already terminal.
local id = ARGV[1]
local status = status_of(id)
if not status or TERMINAL[status] then return 0 end
redis.call('ZREM', KEYS[1], id)
if KEYS[2] ~= '' then redis.call('ZREM', KEYS[2], id) end
if KEYS[3] ~= '' then redis.call('ZREM', KEYS[3], id) end
redis.call('HSET', MSG .. id, 'reason', ARGV[2])
transition(id, 'failed', ARGV[4], ARGV[3])
return 1
