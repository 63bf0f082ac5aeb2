-- Takes the first `size` tickets of a queue, if there are that many, into a forming
-- match. First puts back, in order, the players of matches that `gone` nodes were
-- forming, forgets forming records older than the pending state they set, and drops
-- the tickets of `gone` nodes met on the way.
-- KEYS: tickets, forming, q:<queue>.
-- ARGV: size, match, pending secs, node forming it, then the gone nodes.
-- From data: pending:<account> of each taken ticket (and see mm_restore.lua).
-- Returns {dropped, put back, taken ticket...}: no tickets when there were too few.
local q, size, mid, ttl = KEYS[3], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local gone = {}
for i = 5, #ARGV do gone[ARGV[i]] = true end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
-- Matches that dead nodes were forming go back in order; records older than the
-- pending state they set are forgotten.
local put_back, dead = 0, 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = cjson.decode(all[i + 1])
  if gone[f.node] then
    local back, lost = restore(all[i], gone, 0)
    put_back, dead = put_back + back, dead + lost
  elseif now - f.at > ttl * 1000 then
    redis.call('HDEL', KEYS[2], all[i])
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
  redis.call('SET', mm('pending:' .. t.account), mid, 'EX', ttl)
  table.insert(record, t)
  table.insert(counts, raw)
end
redis.call('HSET', KEYS[2], mid, cjson.encode({node = ARGV[4], at = now, tickets = record}))
return counts
