local p, mid = ARGV[1], ARGV[2]
local record = p .. '{mm}:match:' .. mid
local raw = redis.call('GET', record)
if not raw then return 0 end
redis.call('EXPIRE', record, tonumber(ARGV[3]))
local lease = p .. '{mm}:lease:' .. cjson.decode(raw).server
if redis.call('GET', lease) == mid then redis.call('EXPIRE', lease, tonumber(ARGV[3])) end
return 1
