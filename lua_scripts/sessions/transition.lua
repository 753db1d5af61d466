--! include lib/session
--! include lib/sendable
-- One change of a session's state: status, desired state, QR, fields and an event, atomically,
-- with the session's rank in its tenant's sender index (lib/sendable) and its last sign of life.
-- A session that is banned or stopped keeps that status unless ARGV[4] forces it.
-- ARGV[1] id, ARGV[2] new status or '', ARGV[3] now, ARGV[4] '1' force | '0',
-- ARGV[5] desired 'active' | 'stopped' | '', ARGV[6] event JSON or '', ARGV[7] events cap,
-- ARGV[8] qr 'set' | 'clear' | '', ARGV[9] qr payload, ARGV[10] qr ttl seconds,
-- ARGV[11] '1' to count a restart | '0', ARGV[12..] field/value pairs
-- Returns {'ok', old status, new status} | {'missing', '', ''}
local sid, status, now, force = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
if redis.call('EXISTS', k_session(sid)) == 0 then return {'missing', '', ''} end
local old = redis.call('HGET', k_session(sid), 'status') or ''
local new = old
if status ~= '' and status ~= old and (force or not STICKY_STATUS[old]) then
  set_status(sid, status, now)
  new = status
end
if ARGV[5] == 'active' then
  redis.call('SADD', 'sessions:active', sid)
  redis.call('HSET', k_session(sid), 'desired', 'active')
elseif ARGV[5] == 'stopped' then
  redis.call('SREM', 'sessions:active', sid)
  redis.call('HSET', k_session(sid), 'desired', 'stopped')
end
if ARGV[8] == 'set' then
  redis.call('SET', 'session:qr:' .. sid, ARGV[9], 'EX', tonumber(ARGV[10]))
elseif ARGV[8] == 'clear' then
  redis.call('DEL', 'session:qr:' .. sid)
end
if ARGV[11] == '1' then
  redis.call('HINCRBY', k_session(sid), 'restarts', 1)
  redis.call('HSET', k_session(sid), 'started_at', now)
end
set_fields(sid, 12)
push_event(sid, ARGV[6], tonumber(ARGV[7]))
if new ~= old then note_status_change(sid, old, new, now) end
note_sign_of_life(sid)
sendable_refresh(sid)
return {'ok', old, new}
