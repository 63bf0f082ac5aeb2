local mid = redis.call('GET', ARGV[1] .. '{mm}:lease:' .. ARGV[2])
if not mid then return {} end
local raw = redis.call('GET', ARGV[1] .. '{mm}:match:' .. mid)
if not raw then return {} end
return {mid, raw}
