-- Keeps a started match and its game server's lease (if the match still holds it).
-- KEYS: tickets, match:<id>. ARGV: match, secs.
-- From data: lease:<the match's server>.
-- Returns 1, or 0 when the match is unknown.
local raw = redis.call('GET', KEYS[2])
if not raw then return 0 end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
local lease = mm('lease:' .. cjson.decode(raw).server)
if redis.call('GET', lease) == ARGV[1] then redis.call('EXPIRE', lease, tonumber(ARGV[2])) end
return 1
