--! include lib/client_event
-- Drop a pending client event mark if everything it stands for was emitted (or is gone).
-- ARGV[1] member ('msg:<id>', 'session:<id>', 'inbound:<event id>')
-- Returns 1 when the mark is gone, 0 when something is still to emit.
return clear_if_emitted(ARGV[1])
