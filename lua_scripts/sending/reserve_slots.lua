--! include lib/message
--! include lib/pacing
--! include lib/reserve
-- Give routed messages of one session their planned send slots (lib/reserve).
-- KEYS[1] queue:session:<phone>, KEYS[2] session:outbox:<id>, KEYS[3] session:pacing:<id>,
-- KEYS[4] session:sendlog:<id>, KEYS[5] session:<id>, KEYS[6] sessions:pump:due
-- ARGV[1] now, ARGV[2] mean interval (s), ARGV[3] jitter fraction, ARGV[4] horizon (s),
-- ARGV[5] per_day (0: none), ARGV[6] session id,
-- ARGV[7..] uniform randoms in [0,1), one per slot this call may plan
-- Returns {scheduled, failed ids...}
local next_arg = 6
local function next_random()
  next_arg = next_arg + 1
  return tonumber(ARGV[next_arg])
end
local scheduled, failed = reserve_slots(
  {queue = KEYS[1], outbox = KEYS[2], pacing = KEYS[3], sendlog = KEYS[4], session = KEYS[5], pump_due = KEYS[6]},
  ARGV[6], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), next_random)
local out = {scheduled}
for _, id in ipairs(failed) do out[#out + 1] = id end
return out
