-- The started match holding a game server's lease.
-- KEYS: lease:<server>, match:<the match the caller takes to hold it>.
-- ARGV: that match.
-- Returns {'match', match, record}, {'none'}, or {'retry', match} when another match
-- holds the lease.
local mid = redis.call('GET', KEYS[1])
if not mid then return {'none'} end
if mid ~= ARGV[1] then return {'retry', mid} end
local raw = redis.call('GET', KEYS[2])
if not raw then return {'none'} end
return {'match', mid, raw}
