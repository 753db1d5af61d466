--! include lib/proxy
-- Adds a proxy to the inventory as OK (idempotent: an existing proxy keeps its state).
-- ARGV[1] url, ARGV[2] id, ARGV[3] now, ARGV[4] ceiling, ARGV[5] redacted url
-- Returns 1 when added, 0 when it was already there.
local url = ARGV[1]
if redis.call('SISMEMBER', 'proxies:all', url) == 1 then return 0 end
redis.call('SADD', 'proxies:all', url)
redis.call('SET', k_status(url), 'OK')
redis.call('SET', 'proxy:fails:' .. url, 0)
redis.call('SET', 'proxy:id:' .. ARGV[2], url)
redis.call('HSET', 'proxy:meta:' .. url, 'id', ARGV[2], 'added_at', ARGV[3], 'redacted', ARGV[5],
  'last_check', '', 'last_ok', '', 'last_error', '')
redis.call('SET', k_counter(url), proxy_count(url))
proxy_refresh(url, tonumber(ARGV[4]))
return 1
