-- An account's ticket and its position in its queue (1 = next out).
-- KEYS: tickets, q:<the queue the caller takes the ticket to be in>.
-- ARGV: account, that queue.
-- Returns {'at', ticket, position}, {'none'} when the account has no ticket, or
-- {'retry', queue} when the ticket is in another queue than named.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return {'none'} end
local queue = cjson.decode(old).queue
if queue ~= ARGV[2] then return {'retry', queue} end
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {'none'} end
return {'at', old, tostring(rank + 1)}
