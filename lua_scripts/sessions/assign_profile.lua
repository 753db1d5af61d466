-- Gives a phone its sticky linked-device profile: the one it had while that profile is still in
-- the inventory, else the least-shared profile under the ceiling (ties: smallest id).
-- KEYS[1] phone:profile:<phone>, KEYS[2] profiles:usage (ZSET id -> phones)
-- ARGV[1] ceiling, ARGV[2..] the inventory's profile ids
-- Returns {'ok', id} | {'none', ''}
local ceiling = tonumber(ARGV[1])
local inventory = {}
for i = 2, #ARGV do
  inventory[ARGV[i]] = true
  redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[i])
end
local current = redis.call('GET', KEYS[1])
if current and inventory[current] then return {'ok', current} end
local candidates = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ceiling)
for _, id in ipairs(candidates) do
  if inventory[id] then
    redis.call('ZINCRBY', KEYS[2], 1, id)
    redis.call('SET', KEYS[1], id)
    return {'ok', id}
  end
end
return {'none', ''}
