--! include lib/session
--! include lib/sendable
-- Change a session's trust level, optionally only from an expected level (so that the hourly
-- review and an operator never overwrite each other), recording why in the session's events
-- and its trust history, and the time of the change in session:trust:<id>.
-- ARGV[1] session id, ARGV[2] new level, ARGV[3] expected current level or '' for any,
-- ARGV[4] now, ARGV[5] session event JSON, ARGV[6] session events cap, ARGV[7] history entry
-- JSON, ARGV[8] history cap, ARGV[9] '1' when the change is an incident (demotion) | '0'
-- Returns {'ok', old} | {'same', old} | {'conflict', current} | {'missing', ''}
local sid, new, expected, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', k_session(sid)) == 0 then return {'missing', ''} end
local old = redis.call('HGET', k_session(sid), 'trust_level') or ''
if expected ~= '' and old ~= expected then return {'conflict', old} end
if old == new then return {'same', old} end
redis.call('HSET', k_session(sid), 'trust_level', new)
push_event(sid, ARGV[5], tonumber(ARGV[6]))
redis.call('LPUSH', 'session:trust:events:' .. sid, ARGV[7])
redis.call('LTRIM', 'session:trust:events:' .. sid, 0, tonumber(ARGV[8]) - 1)
redis.call('HSET', 'session:trust:' .. sid, 'changed_at', now)
if ARGV[9] == '1' then redis.call('HSET', 'session:trust:' .. sid, 'last_incident_at', now) end
sendable_refresh(sid)  -- a new budget: a new rank in the sender choice
return {'ok', old}
