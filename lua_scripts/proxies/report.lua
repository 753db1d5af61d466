--! include lib/proxy
-- Records one piece of health evidence for a proxy. A failed real check that brings the run of
-- consecutive failures to the threshold makes it BAD; worker reports alone only make it 'suspect'
-- (a real check must confirm, so a broken target cannot burn every proxy). A success makes it OK.
-- ARGV[1] url, ARGV[2] '1' ok | '0' failed, ARGV[3] threshold, ARGV[4] ceiling, ARGV[5] now,
-- ARGV[6] error text, ARGV[7] source 'check' | 'worker'
-- Returns {status, change, fails}: change is 'burned', 'recovered', 'suspect' or ''.
local url, ok, threshold, ceiling = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('SISMEMBER', 'proxies:all', url) == 0 then return {'UNKNOWN', '', 0} end
local meta = 'proxy:meta:' .. url
local before = redis.call('GET', k_status(url))
if ok then
  redis.call('SET', 'proxy:fails:' .. url, 0)
  redis.call('SET', k_status(url), 'OK')
  if ARGV[7] == 'check' then
    redis.call('HSET', meta, 'last_check', ARGV[5], 'last_ok', ARGV[5], 'last_error', '')
  end
  proxy_refresh(url, ceiling)
  return {'OK', before == 'BAD' and 'recovered' or '', 0}
end
local fails = redis.call('INCR', 'proxy:fails:' .. url)
redis.call('HSET', meta, 'last_error', ARGV[6])
if ARGV[7] == 'check' then redis.call('HSET', meta, 'last_check', ARGV[5]) end
if fails >= threshold and before ~= 'BAD' then
  if ARGV[7] ~= 'check' then return {before, 'suspect', fails} end
  redis.call('SET', k_status(url), 'BAD')
  redis.call('HSET', meta, 'bad_since', ARGV[5])
  proxy_refresh(url, ceiling)
  return {'BAD', 'burned', fails}
end
return {before, '', fails}
