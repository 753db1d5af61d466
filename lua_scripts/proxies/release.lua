--! include lib/proxy
-- Frees a session's slot on a proxy (idempotent). The phone's sticky mapping stays.
-- ARGV[1] session id, ARGV[2] url, ARGV[3] ceiling
-- Returns the proxy's session count after release.
proxy_detach(ARGV[2], ARGV[1], tonumber(ARGV[3]))
return proxy_count(ARGV[2])
