-- Shared by lib/message.lua and lib/session.lua (included at load time by waorch.core.lua): the mark that a
-- state change may still have to become a client event, written in the same script as the change
-- so a crash before the Python hook cannot lose it (waorch.webhooks.events sweeps what stays marked).

-- Mark `member` ('msg:<id>', 'session:<id>') pending when `tenant` has webhooks at all.
local function mark_client_event(tenant, member)
  if tenant and redis.call('EXISTS', 'webhooks:tenant:' .. tenant) == 1 then
    local clock = redis.call('TIME')
    redis.call('ZADD', 'client:events:pending', string.format('%d.%06d', clock[1], clock[2]), member)
  end
end
