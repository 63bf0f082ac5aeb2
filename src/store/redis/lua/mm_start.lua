local p, mid = ARGV[1], ARGV[2]
local forming = p .. '{mm}:forming'
if redis.call('HDEL', forming, mid) == 0 then return 0 end
local accounts = {}
for i = 6, #ARGV, 2 do
  local acct = ARGV[i]
  -- Still 'Match already found' while the match is joinable.
  redis.call('SET', p .. '{mm}:pending:' .. acct, mid, 'EX', tonumber(ARGV[4]))
  redis.call('SET', p .. '{mm}:found:' .. acct, ARGV[i + 1], 'EX', tonumber(ARGV[4]))
  local formed = p .. '{mm}:formed:' .. acct
  if redis.call('INCR', formed) == 1 then redis.call('EXPIRE', formed, tonumber(ARGV[5])) end
  table.insert(accounts, acct)
end
redis.call('SET', p .. '{mm}:match:' .. mid, cjson.encode({server = ARGV[3], accounts = accounts}), 'EX', tonumber(ARGV[4]))
return 1
