-- Shared by the proxy scripts (included at load time by waorch.core.lua, not a script of its own).
-- Proxy keys are derived from urls inside scripts: waorch runs on one Redis primary.
-- Invariant kept here: counter:proxy:<url> = SCARD proxy:sessions:<url>, and proxies:available
-- holds exactly the proxies of proxies:all whose status is OK and whose counter is under the ceiling.
local function k_counter(url) return 'counter:proxy:' .. url end
local function k_status(url) return 'proxy:status:' .. url end
local function k_sessions(url) return 'proxy:sessions:' .. url end

local function proxy_count(url)
  return tonumber(redis.call('SCARD', k_sessions(url)))
end

local function proxy_ok(url)
  return redis.call('SISMEMBER', 'proxies:all', url) == 1 and redis.call('GET', k_status(url)) == 'OK'
end

local function proxy_refresh(url, ceiling)
  if proxy_ok(url) and proxy_count(url) < ceiling then
    redis.call('SADD', 'proxies:available', url)
  else
    redis.call('SREM', 'proxies:available', url)
  end
end

local function proxy_attach(url, sid, ceiling)
  redis.call('SADD', k_sessions(url), sid)
  redis.call('SET', k_counter(url), proxy_count(url))
  proxy_refresh(url, ceiling)
end

local function proxy_detach(url, sid, ceiling)
  if url == nil or url == false or url == '' then return end
  redis.call('SREM', k_sessions(url), sid)
  if redis.call('SISMEMBER', 'proxies:all', url) == 1 then
    redis.call('SET', k_counter(url), proxy_count(url))
  else
    redis.call('DEL', k_counter(url))
  end
  proxy_refresh(url, ceiling)
end
