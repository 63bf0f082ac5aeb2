-- The started match holding a game server's lease.
-- KEYS: tickets, lease:<server>.
-- From data: match:<the match holding the lease>.
-- Returns {match, record}, or {}.
local mid = redis.call('GET', KEYS[2])
if not mid then return {} end
local raw = redis.call('GET', mm('match:' .. mid))
if not raw then return {} end
return {mid, raw}
