--! include lib/session
--! include lib/sendable
-- Registers a new session as desired-active, unless its phone already has a session.
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] phone, ARGV[4] now, ARGV[5] initial status,
-- ARGV[6..] field/value pairs (proxy_url, trust_level, salt, label, profile, ...)
-- Returns {'ok', id} | {'exists', existing id}
local sid, tenant, phone, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local by_phone = 'session:by_phone:' .. phone
local existing = redis.call('GET', by_phone)
if existing and redis.call('EXISTS', k_session(existing)) == 1 then return {'exists', existing} end
if redis.call('EXISTS', k_session(sid)) == 1 then return {'exists', sid} end
redis.call('HSET', k_session(sid), 'id', sid, 'tenant', tenant, 'phone', phone, 'created_at', now,
  'started_at', now, 'desired', 'active', 'restarts', 0)
set_fields(sid, 6)
set_status(sid, ARGV[5], now)
redis.call('SET', by_phone, sid)
redis.call('SADD', 'sessions:all', sid)
redis.call('SADD', 'sessions:active', sid)
redis.call('SADD', 'sessions:tenant:' .. tenant, sid)
note_sign_of_life(sid)
sendable_refresh(sid)
return {'ok', sid}
