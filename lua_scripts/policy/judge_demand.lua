--! include lib/demand
--! include lib/sendable
-- Burst detection on demand (lib/demand); a new cooldown re-ranks the session in its tenant's
-- sender index in the same step.
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:leases:<id>,
-- KEYS[4] session:pacing:<id>
-- ARGV[1] now, ARGV[2] threshold (pending messages), ARGV[3] cooldown (s), ARGV[4] session id
-- Returns {'burst', pending, cooldown_until} | {'over', pending, ''} | {'ok', pending, ''}
local judged = judge_demand(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if judged[1] == 'burst' then sendable_refresh(ARGV[4]) end
return judged
