-- An account's ticket and its position in its queue (1 = next out).
-- KEYS: tickets. ARGV: account.
-- From data: q:<the ticket's queue>.
-- Returns {ticket, position}, or {} when the account has no ticket.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return {} end
local o = cjson.decode(old)
local rank = redis.call('ZRANK', mm('q:' .. o.queue), ARGV[1])
if not rank then return {} end
return {old, tostring(rank + 1)}
