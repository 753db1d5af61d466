--! include lib/message
-- The worker handed the message to WhatsApp. Idempotent; a send is the truth even when the lease
-- was lost meanwhile (the worker's journal guarantees it was sent once).
-- KEYS[1] session:leases:<id>, KEYS[2] session:outbox:<id>, KEYS[3] session:pacing:<id>
-- ARGV[1] msg id, ARGV[2] lease token, ARGV[3] wa id, ARGV[4] sent_at, ARGV[5] now,
-- ARGV[6] session id, ARGV[7] day stamp (YYYYMMDD) for the daily counter
-- Returns 'ok' | 'duplicate' | 'unknown'
local id = ARGV[1]
local status = status_of(id)
if not status then return 'unknown' end
if RANK[status] then return 'duplicate' end
local detail = ''
if redis.call('HGET', MSG .. id, 'lease_token') ~= ARGV[2] then detail = 'acknowledged after its lease' end
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', MSG .. id, 'lease_token', 'reason')
redis.call('HSET', MSG .. id, 'wa_id', ARGV[3], 'sent_at', ARGV[4])
redis.call('SET', 'wa:msg:' .. ARGV[6] .. ':' .. ARGV[3], id, 'EX', 2592000)
redis.call('HINCRBY', KEYS[3], 'sent:' .. ARGV[7], 1)
transition(id, 'sent', ARGV[5], detail)
return 'ok'
