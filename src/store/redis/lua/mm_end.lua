local p, mid = ARGV[1], ARGV[2]
local raw = redis.call('GET', p .. '{mm}:match:' .. mid)
if not raw then return 0 end
local m = cjson.decode(raw)
for _, acct in ipairs(m.accounts) do
  local found = p .. '{mm}:found:' .. acct
  local frame = redis.call('GET', found)
  if frame and string.find(frame, mid, 1, true) then redis.call('DEL', found) end
  local pending = p .. '{mm}:pending:' .. acct
  if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
end
local lease = p .. '{mm}:lease:' .. m.server
if redis.call('GET', lease) == mid then redis.call('DEL', lease) end
redis.call('DEL', p .. '{mm}:match:' .. mid)
return 1
