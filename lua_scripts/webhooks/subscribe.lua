--! include lib/webhook
-- Store a new client webhook subscription unless the tenant already has the most allowed.
-- ARGV[1] subscription id, ARGV[2] tenant, ARGV[3] most per tenant, ARGV[4..] field/value pairs
-- Returns 'ok' | 'full'
local tenant_key = 'webhooks:tenant:' .. ARGV[2]
if redis.call('SCARD', tenant_key) >= tonumber(ARGV[3]) then return 'full' end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k_sub(ARGV[1]), unpack(fields))
redis.call('SADD', tenant_key, ARGV[1])
redis.call('SADD', 'webhooks:all', ARGV[1])
return 'ok'
