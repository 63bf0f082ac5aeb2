local p, q, size, mid, ttl = ARGV[1], ARGV[1] .. '{mm}:q:' .. ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local forming = p .. '{mm}:forming'
local gone = {}
for i = 7, #ARGV do gone[ARGV[i]] = true end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
-- Matches that dead nodes were forming go back in order; records older than the
-- pending state they set are forgotten.
local put_back, dead = 0, 0
local all = redis.call('HGETALL', forming)
for i = 1, #all, 2 do
  local f = cjson.decode(all[i + 1])
  if gone[f.node] then
    local back, lost = restore(p, all[i], gone, 0)
    put_back, dead = put_back + back, dead + lost
  elseif now - f.at > ttl * 1000 then
    redis.call('HDEL', forming, all[i])
  end
end
local taken, drop, start = {}, {}, 0
while #taken < size do
  local batch = redis.call('ZRANGE', q, start, start + 99)
  if #batch == 0 then break end
  for _, acct in ipairs(batch) do
    local raw = redis.call('HGET', KEYS[1], acct)
    if not raw or gone[cjson.decode(raw).node] then
      table.insert(drop, acct)
    elseif #taken < size then
      table.insert(taken, raw)
    end
  end
  start = start + 100
end
for _, acct in ipairs(drop) do
  redis.call('ZREM', q, acct)
  redis.call('HDEL', KEYS[1], acct)
end
local counts = {tostring(dead + #drop), tostring(put_back)}
if #taken < size then return counts end
local record = {}
for _, raw in ipairs(taken) do
  local t = cjson.decode(raw)
  redis.call('ZREM', q, t.account)
  redis.call('HDEL', KEYS[1], t.account)
  redis.call('SET', p .. '{mm}:pending:' .. t.account, mid, 'EX', ttl)
  table.insert(record, t)
  table.insert(counts, raw)
end
redis.call('HSET', forming, mid, cjson.encode({node = ARGV[6], at = now, tickets = record}))
return counts
