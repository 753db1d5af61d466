--! include lib/message
-- A delivery/read receipt for a sent message; states only move forward (sent < delivered < read).
-- ARGV[1] msg id, ARGV[2] 'delivered' | 'read', ARGV[3] at
-- Returns 1 when the state advanced, 0 otherwise.
local id = ARGV[1]
local current = status_of(id)
if not current or not RANK[current] then return 0 end
if RANK[ARGV[2]] <= RANK[current] then return 0 end
if ARGV[2] == 'read' and current == 'sent' then transition(id, 'delivered', ARGV[3], 'implied by read') end
transition(id, ARGV[2], ARGV[3], '')
return 1
