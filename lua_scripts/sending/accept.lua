--! include lib/message
-- Accept new messages atomically, with optional idempotency.
-- KEYS[1] idempotency key ('' when none), KEYS[2] messages:all, KEYS[3] messages:unrouted,
-- KEYS[4] messages:tenant:<t>
-- ARGV[1] JSON list of message field maps (each has id), ARGV[2] now, ARGV[3] body hash,
-- ARGV[4] idempotency ttl, ARGV[5] response JSON to remember for replays
-- Derived keys: messages:accept_seq, recipient:pending:<tenant>:<to>:<from> (message_lib)
-- Returns {'created'} | {'replay', response} | {'conflict'}
local now = ARGV[2]
if KEYS[1] ~= '' then
  local seen = redis.call('GET', KEYS[1])
  if seen then
    local record = cjson.decode(seen)
    if record.hash == ARGV[3] then return {'replay', record.response} end
    return {'conflict'}
  end
end
local messages = cjson.decode(ARGV[1])
for _, fields in ipairs(messages) do
  local id = fields.id
  local flat = {}
  for k, v in pairs(fields) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  redis.call('HSET', MSG .. id, unpack(flat))
  -- Acceptance order (script runs, then list order within a batch) is the order the person
  -- gets them in: sending/claim.lua hands out only the first pending message of a recipient.
  local seq = redis.call('INCR', 'messages:accept_seq')
  redis.call('HSET', MSG .. id, 'created_at', now, 'attempts', 0, 'accept_seq', seq)
  transition(id, 'queued', now, '')
  local lane = order_lane(fields.tenant, fields.to, fields.from_requested)
  if lane then redis.call('ZADD', lane, seq, id) end
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('ZADD', KEYS[4], now, id)
end
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], cjson.encode({hash = ARGV[3], response = ARGV[5]}), 'EX', ARGV[4])
end
return {'created'}
