-- Takes the first `size` tickets of a queue, if there are that many, into a forming
-- match. Forgets forming records older than the pending state they set, and drops the
-- tickets of `gone` nodes (those with a grace once it ends), of players away past
-- their grace, and those whose ticket is missing, met on the way. While
-- `gone` nodes were forming matches it takes nothing: their players go back first
-- (mm_put_back.lua), in the order of the records it returns.
-- KEYS: tickets, forming, q:<queue>, then pending:<account> of each account the caller
--       expects it to take (none at first).
-- ARGV: size, match, pending secs, node forming it, those accounts (one per KEYS
--       after the third), then the gone nodes.
-- `dropped` is '<dropped>:<expired>' (gone nodes' and missing tickets, and those past
-- their grace).
-- Returns {'restore', '0', match, record, ...}: the forming matches of gone nodes,
-- nothing taken nor dropped; {'taken', dropped}: too few tickets; {'taken', dropped,
-- taken ticket...}; or, taking nothing, {'retry', dropped, account...}: the accounts
-- it would take, when they are not those named.
local q, size, mid, ttl = KEYS[3], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local named = #KEYS - 3
local gone = {}
for i = 5 + named, #ARGV do gone[ARGV[i]] = true end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local restore = {'restore', '0'}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = cjson.decode(all[i + 1])
  if gone[f.node] then
    table.insert(restore, all[i])
    table.insert(restore, all[i + 1])
  elseif now - f.at > ttl * 1000 then
    redis.call('HDEL', KEYS[2], all[i])
  end
end
if #restore > 2 then return restore end
local taken, drop, expired, start = {}, {}, 0, 0
while #taken < size do
  local batch = redis.call('ZRANGE', q, start, start + 99)
  if #batch == 0 then break end
  for _, acct in ipairs(batch) do
    local raw = redis.call('HGET', KEYS[1], acct)
    local t = raw and cjson.decode(raw)
    -- A ticket with a grace whose node is gone waits that long for its player.
    if t and gone[t.node] and not t.away_until_ms and (t.grace_secs or 0) > 0 then
      t.away_until_ms = now + t.grace_secs * 1000
      raw = cjson.encode(t)
      redis.call('HSET', KEYS[1], acct, raw)
    end
    if not raw or (gone[t.node] and not t.away_until_ms) then
      table.insert(drop, acct)
    elseif t.away_until_ms and t.away_until_ms < now then
      table.insert(drop, acct)
      expired = expired + 1
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
local dropped = tostring(#drop - expired) .. ':' .. tostring(expired)
if #taken < size then return {'taken', dropped} end
local tickets, same = {}, named == size
for i, raw in ipairs(taken) do
  tickets[i] = cjson.decode(raw)
  same = same and tickets[i].account == ARGV[4 + i]
end
if not same then
  local retry = {'retry', dropped}
  for _, t in ipairs(tickets) do table.insert(retry, t.account) end
  return retry
end
local reply = {'taken', dropped}
for i, t in ipairs(tickets) do
  redis.call('ZREM', q, t.account)
  redis.call('HDEL', KEYS[1], t.account)
  redis.call('SET', KEYS[3 + i], mid, 'EX', ttl)
  table.insert(reply, taken[i])
end
redis.call('HSET', KEYS[2], mid, cjson.encode({node = ARGV[4], at = now, tickets = tickets}))
return reply
