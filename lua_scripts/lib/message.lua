-- Shared by the message scripts (included at load time by waorch.core.lua, not a script of its own).
-- Message keys are derived from ids inside scripts: waorch runs on one Redis primary.
--! include lib/client_event_mark
local MSG = 'msg:'
local HIST = 'msg:history:'
local TERMINAL = {sent = true, delivered = true, read = true, failed = true}
local RANK = {sent = 1, delivered = 2, read = 3}
-- Statuses clients hear about (message.status events, waorch.webhooks.events).
local CLIENT_STATUS = {sent = true, delivered = true, read = true, failed = true}

-- The per-recipient order lane of a message (recipient:pending:<tenant>:<to>:<explicit from>):
-- acceptance order holds among a tenant's messages to one person with the same explicit `from`
-- (none: '', whichever session the sender choice picks). nil when the message has no recipient.
local function order_lane(tenant, to, from)
  if not tenant or not to then return nil end
  return 'recipient:pending:' .. tenant .. ':' .. to .. ':' .. (from or '')
end

local function transition(msg_id, status, now, detail)
  local m = redis.call('HMGET', MSG .. msg_id, 'status', 'tenant', 'to', 'from_requested')
  local old = m[1]
  -- fleet-wide counts for GET /metrics, kept here so a scrape never walks the messages
  if old then redis.call('HINCRBY', 'metrics:messages:state', old, -1) end
  redis.call('HINCRBY', 'metrics:messages:state', status, 1)
  redis.call('HINCRBY', 'metrics:messages:entered', status, 1)
  redis.call('HSET', MSG .. msg_id, 'status', status, 'updated_at', now)
  local entry = {status = status, at = tonumber(now)}
  if detail and detail ~= '' then entry.detail = detail end
  redis.call('RPUSH', HIST .. msg_id, cjson.encode(entry))
  -- A status clients hear about is marked as not emitted yet in the same step that applies it: if
  -- the process dies before its client event hook ran, the sweep (waorch.webhooks.events) emits it.
  -- Only tenants with webhooks pay for it; the score is the server's clock (callers may pass
  -- other times as `now`), from which the sweep's grace period counts.
  if CLIENT_STATUS[status] then mark_client_event(m[2], 'msg:' .. msg_id) end
  -- A message that reached its end no longer holds back later ones to the same person.
  if TERMINAL[status] and not (old and TERMINAL[old]) then
    local lane = order_lane(m[2], m[3], m[4])
    if lane then redis.call('ZREM', lane, msg_id) end
  end
end

local function status_of(msg_id)
  return redis.call('HGET', MSG .. msg_id, 'status')
end

-- Leased messages whose lease ran out go back to the outbox, due now.
local function requeue_expired(leases_key, outbox_key, now)
  local expired = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now)
  for _, msg_id in ipairs(expired) do
    redis.call('ZREM', leases_key, msg_id)
    if status_of(msg_id) == 'claimed' then
      redis.call('HDEL', MSG .. msg_id, 'lease_token')
      redis.call('ZADD', outbox_key, now, msg_id)
      transition(msg_id, 'scheduled', now, 'lease expired')
    end
  end
  return #expired
end
