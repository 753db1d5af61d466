--! include lib/webhook
-- Record a failed attempt on one entity of a lane (its events wait, the lane's others go on), or
-- forget an entity's failure state ('' as block). Optionally pause the whole lane: failures of
-- several entities in a row mean the endpoint is down, not refusing one payload.
-- ARGV[1] subscription id, ARGV[2] lane, ARGV[3] order key, ARGV[4] block JSON
-- {attempts, next_at, since, error} or '', ARGV[5] failed attempts in a row now (or ''),
-- ARGV[6] lane paused until (or ''), ARGV[7] lane pause count
local sub, lane = ARGV[1], ARGV[2]
local key = k_state(sub, lane)
if ARGV[4] == '' then
  redis.call('HDEL', key, 'block:' .. ARGV[3])
else
  redis.call('HSET', key, 'block:' .. ARGV[3], ARGV[4])
end
if ARGV[5] ~= '' then redis.call('HSET', key, 'fail_streak', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'paused_until', ARGV[6], 'lane_attempts', ARGV[7]) end
summarize_lane(sub, lane)
return 1
