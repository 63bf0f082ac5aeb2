-- Removes an account's ticket: any holder's when `node` is empty, else only the
-- ticket that connection (`node`, `conn`) holds. A disconnect (a holder given) while
-- the account's match is forming marks its ticket there as left, so it is not put
-- back.
-- KEYS: tickets, forming, pending:<account>, q:<the queue the caller takes the
--       ticket to be in>.
-- ARGV: account, node, conn, that queue.
-- Returns {'pending'}, {'removed', ticket} or {'none'}; or, changing nothing,
-- {'retry', queue} when the ticket to remove is in another queue than named.
local acct = ARGV[1]
local pending = redis.call('GET', KEYS[3])
if pending then
  if ARGV[2] ~= '' then
    local raw = redis.call('HGET', KEYS[2], pending)
    if raw then
      local f = cjson.decode(raw)
      for _, t in ipairs(f.tickets) do
        if t.account == acct and t.node == ARGV[2] and tostring(t.conn) == ARGV[3] and not t.left then
          t.left = true
          redis.call('HSET', KEYS[2], pending, cjson.encode(f))
          return {'removed', cjson.encode(t)}
        end
      end
    end
  end
  return {'pending'}
end
local old = redis.call('HGET', KEYS[1], acct)
if not old then return {'none'} end
local o = cjson.decode(old)
if ARGV[2] ~= '' and (o.node ~= ARGV[2] or tostring(o.conn) ~= ARGV[3]) then return {'none'} end
if o.queue ~= ARGV[4] then return {'retry', o.queue} end
redis.call('HDEL', KEYS[1], acct)
redis.call('ZREM', KEYS[4], acct)
return {'removed', old}
