--! include lib/sendable
-- Burst detection on what was really sent: record one send in the session's sent log and judge
-- the window that ends at it. Above the threshold the session goes into cooldown, once: a burst
-- found while a cooldown is running only reports 'cooling' (no second alert, no extension).
-- KEYS[1] session:sent:<id> (ZSET msg id -> sent_at), KEYS[2] session:pacing:<id>
-- ARGV[1] now, ARGV[2] sent_at, ARGV[3] msg id, ARGV[4] window (s), ARGV[5] most sends allowed
-- in the window, ARGV[6] cooldown (s), ARGV[7] session id (a new cooldown re-ranks it in its
-- tenant's sender index, lib/sendable)
-- Returns {'ok' | 'burst' | 'cooling', sends in the window, cooldown_until or ''}
local now, sent_at = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, allowed = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], sent_at, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', math.min(now, sent_at) - 2 * window - 60)
redis.call('EXPIRE', KEYS[1], math.ceil(2 * window + 120))
local n = redis.call('ZCOUNT', KEYS[1], string.format('(%.17g', sent_at - window), sent_at)
if n <= allowed then return {'ok', n, ''} end
local running = tonumber(redis.call('HGET', KEYS[2], 'cooldown_until') or '0') or 0
if running > now then return {'cooling', n, string.format('%.6f', running)} end
local until_ = now + tonumber(ARGV[6])
redis.call('HSET', KEYS[2], 'cooldown_until', until_, 'cooldown_reason', 'send burst')
sendable_refresh(ARGV[7])
return {'burst', n, string.format('%.6f', until_)}
