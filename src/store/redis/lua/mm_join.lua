local p, acct = ARGV[1], ARGV[2]
local t = cjson.decode(ARGV[3])
if redis.call('EXISTS', p .. '{mm}:pending:' .. acct) == 1 then return {'pending'} end
local cap = tonumber(ARGV[4])
if cap > 0 and tonumber(redis.call('GET', p .. '{mm}:formed:' .. acct) or '0') >= cap then return {'limited'} end
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
  redis.call('ZREM', p .. '{mm}:q:' .. o.queue, acct)
end
t.seq = redis.call('INCR', p .. '{mm}:seq')
redis.call('HSET', KEYS[1], acct, cjson.encode(t))
redis.call('ZADD', p .. '{mm}:q:' .. t.queue, t.seq, acct)
return {'new'}
