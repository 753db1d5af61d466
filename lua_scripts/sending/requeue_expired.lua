--! include lib/message
-- Return a session's messages whose lease expired to its outbox (the worker died holding them).
-- KEYS[1] session:leases:<id>, KEYS[2] session:outbox:<id>; ARGV[1] now
-- Returns how many leases had expired.
return requeue_expired(KEYS[1], KEYS[2], ARGV[1])
