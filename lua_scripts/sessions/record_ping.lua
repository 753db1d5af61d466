--! include lib/session
--! include lib/sendable
-- A worker's PING: records liveness and counters; a worker that says it is connected makes a
-- starting/pairing/disconnected/error session connected, and a connected one that says it is
-- not becomes disconnected. Banned and stopped sessions keep their status. A status change
-- re-ranks the session in its tenant's sender index (lib/sendable); the PING time goes to
-- sessions:last_ping (the watchdog's index) and its earliest lease to leases:due (the lease sweep's
-- index: this covers a lease whose claim's own leases:due entry was lost with its process).
-- ARGV[1] id, ARGV[2] now, ARGV[3] '1' connected | '0', ARGV[4] event JSON, ARGV[5] events cap,
-- ARGV[6..] field/value pairs (counters)
-- Returns {'ok', old status, new status} | {'missing', '', ''}
local sid, now = ARGV[1], ARGV[2]
if redis.call('EXISTS', k_session(sid)) == 0 then return {'missing', '', ''} end
local old = redis.call('HGET', k_session(sid), 'status') or ''
local new = old
if ARGV[3] == '1' and (old == 'starting' or old == 'pairing' or old == 'disconnected' or old == 'error') then
  new = 'connected'
elseif ARGV[3] == '0' and old == 'connected' then
  new = 'disconnected'
end
if new ~= old then set_status(sid, new, now) end
if new == 'connected' and old ~= 'connected' then redis.call('DEL', 'session:qr:' .. sid) end
redis.call('HSET', k_session(sid), 'last_ping', now)
set_fields(sid, 6)
push_event(sid, ARGV[4], tonumber(ARGV[5]))
if new ~= old then
  note_status_change(sid, old, new, now)
  sendable_refresh(sid)
end
note_sign_of_life(sid)
local lease = redis.call('ZRANGE', 'session:leases:' .. sid, 0, 0, 'WITHSCORES')
if lease[2] then redis.call('ZADD', 'leases:due', 'LT', lease[2], sid) end
return {'ok', old, new}
