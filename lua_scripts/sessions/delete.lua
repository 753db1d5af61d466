--! include lib/proxy
--! include lib/session
--! include lib/sendable
-- Removes a session from the registry and frees its proxy slot (the phone's sticky proxy stays).
-- Its unsent messages stay where they are, and the session is listed in sessions:gone in the same
-- step, so that waorch.sending.rerouting moves them to another sender even if the caller dies now.
-- ARGV[1] id, ARGV[2] proxy ceiling
-- Returns {'ok', phone, proxy url} | {'missing', '', ''}
local sid = ARGV[1]
local record = redis.call('HMGET', k_session(sid), 'phone', 'tenant', 'proxy_url')
if redis.call('EXISTS', k_session(sid)) == 0 then return {'missing', '', ''} end
local phone, tenant, url = record[1] or '', record[2] or '', record[3] or ''
proxy_detach(url, sid, tonumber(ARGV[2]))
redis.call('DEL', k_session(sid), 'session:status:' .. sid, 'session:qr:' .. sid, 'session:events:' .. sid,
  k_status_log(sid))
redis.call('ZREM', 'client:events:pending', 'session:' .. sid)
local clock = redis.call('TIME')
redis.call('HSET', 'sessions:gone', sid, cjson.encode({phone = phone, tenant = tenant, at = tonumber(clock[1])}))
redis.call('SREM', 'sessions:active', sid)
redis.call('SREM', 'sessions:all', sid)
redis.call('SREM', 'sessions:tenant:' .. tenant, sid)
sendable_forget(tenant, sid)
redis.call('ZREM', 'sessions:last_ping', sid)
if redis.call('GET', 'session:by_phone:' .. phone) == sid then redis.call('DEL', 'session:by_phone:' .. phone) end
return {'ok', phone, url}
