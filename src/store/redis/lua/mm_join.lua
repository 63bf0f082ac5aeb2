-- Queues an account's ticket, or keeps its place when it is already queued for the
-- same queue (the ticket's holder changes), or moves it to the back of another queue.
-- Refused while a match is pending for the account, and when it started `cap`
-- matches in the window (0: no cap).
-- KEYS: tickets, seq, pending:<account>, formed:<account>, q:<the ticket's queue>,
--       q:<the queue the caller takes the account's previous ticket to be in>.
-- ARGV: account, ticket (JSON), cap, that queue.
-- Returns {'pending'}, {'limited'}, {'kept', node, conn} or {'new'}; or, changing
-- nothing, {'retry', queue} when the previous ticket is in another queue than named.
local acct = ARGV[1]
local t = cjson.decode(ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then return {'pending'} end
local cap = tonumber(ARGV[3])
if cap > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= cap then return {'limited'} end
local old = redis.call('HGET', KEYS[1], acct)
if old then
  local o = cjson.decode(old)
  if o.queue == t.queue then
    t.seq = o.seq
    t.joined_ms = o.joined_ms
    t.tries = o.tries
    redis.call('HSET', KEYS[1], acct, cjson.encode(t))
    return {'kept', o.node, tostring(o.conn)}
  end
  if o.queue ~= ARGV[4] then return {'retry', o.queue} end
  redis.call('ZREM', KEYS[6], acct)
end
t.seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], acct, cjson.encode(t))
redis.call('ZADD', KEYS[5], t.seq, acct)
return {'new'}
