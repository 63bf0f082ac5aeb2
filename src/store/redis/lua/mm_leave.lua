local p, acct = ARGV[1], ARGV[2]
local pending = redis.call('GET', p .. '{mm}:pending:' .. acct)
if pending then
  if ARGV[3] ~= '' then
    local forming = p .. '{mm}:forming'
    local raw = redis.call('HGET', forming, pending)
    if raw then
      local f = cjson.decode(raw)
      for _, t in ipairs(f.tickets) do
        if t.account == acct and t.node == ARGV[3] and tostring(t.conn) == ARGV[4] and not t.left then
          t.left = true
          redis.call('HSET', forming, pending, cjson.encode(f))
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
if ARGV[3] ~= '' and (o.node ~= ARGV[3] or tostring(o.conn) ~= ARGV[4]) then return {'none'} end
redis.call('HDEL', KEYS[1], acct)
redis.call('ZREM', p .. '{mm}:q:' .. o.queue, acct)
return {'removed', old}
