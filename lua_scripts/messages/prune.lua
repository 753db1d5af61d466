--! include lib/message
-- Forget finished messages: a batch of the oldest entries of messages:all created before the
-- cutoff; those whose status is terminal, whose last change is also before the cutoff and whose
-- client event is not still pending lose their record, history, indexes and WhatsApp id mapping.
-- The others stay, and are passed over next time through the offset.
-- KEYS[1] messages:all
-- ARGV[1] cutoff (unix time), ARGV[2] offset into the entries before the cutoff, ARGV[3] batch size
-- Derived keys: msg:<id>, msg:history:<id>, messages:tenant:<t>, messages:unrouted, wa:msg:<session>:<wa id>,
-- client:events:pending, metrics:messages:state
-- Returns {pruned, kept, examined}
local cutoff = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', tonumber(ARGV[2]),
                       tonumber(ARGV[3]))
local pruned, kept = 0, 0
for _, id in ipairs(ids) do
  local m = redis.call('HMGET', MSG .. id, 'status', 'updated_at', 'tenant', 'session', 'wa_id')
  local status = m[1]
  if not status then
    -- a record already gone (a restore, a manual delete): only the index entry was left
    redis.call('ZREM', KEYS[1], id)
    pruned = pruned + 1
  elseif TERMINAL[status] and (tonumber(m[2]) or 0) < cutoff
      and not redis.call('ZSCORE', 'client:events:pending', 'msg:' .. id) then
    redis.call('DEL', MSG .. id, HIST .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', 'messages:unrouted', id)
    if m[3] then redis.call('ZREM', 'messages:tenant:' .. m[3], id) end
    if m[4] and m[5] then
      local mapping = 'wa:msg:' .. m[4] .. ':' .. m[5]
      if redis.call('GET', mapping) == id then redis.call('DEL', mapping) end
    end
    redis.call('HINCRBY', 'metrics:messages:state', status, -1)
    pruned = pruned + 1
  else
    kept = kept + 1
  end
end
return {pruned, kept, #ids}
