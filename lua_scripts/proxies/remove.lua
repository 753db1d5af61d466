--! include lib/proxy
-- Takes a proxy out of the inventory. Its sessions stay attached until they are moved.
-- ARGV[1] url
-- Returns the ids of the sessions still on it, or false when the proxy was unknown.
local url = ARGV[1]
if redis.call('SISMEMBER', 'proxies:all', url) == 0 then return false end
local meta_id = redis.call('HGET', 'proxy:meta:' .. url, 'id')
if meta_id then redis.call('DEL', 'proxy:id:' .. meta_id) end
redis.call('SREM', 'proxies:all', url)
redis.call('SREM', 'proxies:available', url)
redis.call('DEL', k_status(url), k_counter(url), 'proxy:fails:' .. url, 'proxy:meta:' .. url)
return redis.call('SMEMBERS', k_sessions(url))
