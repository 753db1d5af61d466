--! include lib/proxy
-- Gives a session its proxy: the phone's sticky proxy while it is OK, else the OK proxy with the
-- fewest sessions under the ceiling (ties: smallest url, so the choice is reproducible).
-- With ARGV[4] (a proxy to leave, e.g. one found BAD) the sticky proxy is not reused, the session
-- moves off ARGV[4] and the phone's sticky mapping follows it.
-- ARGV[1] session id, ARGV[2] phone, ARGV[3] ceiling, ARGV[4] url to leave or ''
-- Returns {'ok', url} | {'none', ''} (no capacity) | {'full', url} (sticky proxy OK but full)
local sid, phone, ceiling, leave = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local sticky_key = 'phone:proxy:' .. phone
local chosen = nil

if leave == '' then
  local sticky = redis.call('GET', sticky_key)
  if sticky and proxy_ok(sticky) then
    if redis.call('SISMEMBER', k_sessions(sticky), sid) == 1 or proxy_count(sticky) < ceiling then
      chosen = sticky
    else
      -- A phone never silently changes its IP: only a BAD proxy moves it.
      return {'full', sticky}
    end
  end
end

if not chosen then
  local best, best_n = nil, nil
  for _, url in ipairs(redis.call('SMEMBERS', 'proxies:available')) do
    if url ~= leave then
      local n = proxy_count(url)
      if proxy_ok(url) and n < ceiling then
        if best == nil or n < best_n or (n == best_n and url < best) then best, best_n = url, n end
      else
        proxy_refresh(url, ceiling)
      end
    end
  end
  if best == nil then return {'none', ''} end
  chosen = best
end

proxy_attach(chosen, sid, ceiling)
redis.call('SET', sticky_key, chosen)
if leave ~= '' and leave ~= chosen then proxy_detach(leave, sid, ceiling) end
if redis.call('EXISTS', 'session:' .. sid) == 1 then
  redis.call('HSET', 'session:' .. sid, 'proxy_url', chosen)
end
return {'ok', chosen}
