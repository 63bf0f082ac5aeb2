local old = redis.call('HGET', KEYS[1], ARGV[2])
if not old then return {} end
local o = cjson.decode(old)
local rank = redis.call('ZRANK', ARGV[1] .. '{mm}:q:' .. o.queue, ARGV[2])
if not rank then return {} end
return {old, tostring(rank + 1)}
