--! include lib/webhook
-- Change fields of an existing client webhook subscription (url, events, sealed secret); never
-- recreates one deleted meanwhile (a bare HSET would leave a half record behind).
-- ARGV[1] subscription id, ARGV[2..] field/value pairs
-- Returns 'ok' | 'unknown'
if not redis.call('HGET', k_sub(ARGV[1]), 'id') then return 'unknown' end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k_sub(ARGV[1]), unpack(fields))
return 'ok'
