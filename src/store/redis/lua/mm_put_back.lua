-- Ends a forming match: puts its players back at their places (not those that left
-- or whose node is `gone`, nor those queued again meanwhile, nor, when `max tries` is
-- given, those whose tries reach it: their tickets end), adding `tries` to each
-- ticket, frees their pending state and deletes the record. For a match that got no
-- game server (one try more) and for one a gone node was forming (none; mm_take.lua
-- hands those to the caller).
-- KEYS: tickets, forming, then for each ticket of the record, in order:
--       pending:<account>, q:<queue>.
-- ARGV: match, the record the keys were named from, tries, max tries ('' for none),
--       then the gone nodes.
-- Returns {'done', put back, lost (tickets of gone nodes)} ({'done', '0', '0'} when
-- the match is no longer forming); or, changing nothing, {'retry', record} when the
-- record is no longer the one given.
local mid = ARGV[1]
local raw = redis.call('HGET', KEYS[2], mid)
if not raw then return {'done', '0', '0'} end
if raw ~= ARGV[2] then return {'retry', raw} end
local tries, max_tries = tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = {}
for i = 5, #ARGV do gone[ARGV[i]] = true end
local back, lost = 0, 0
for i, t in ipairs(cjson.decode(raw).tickets) do
  local pending, queue = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
  if t.left then
  elseif gone[t.node] then
    lost = lost + 1
  elseif max_tries and (t.tries or 0) + tries >= max_tries then
    -- Out of tries: the ticket ends here (its player gets match_error).
  elseif redis.call('HEXISTS', KEYS[1], t.account) == 0 then
    t.tries = (t.tries or 0) + tries
    redis.call('HSET', KEYS[1], t.account, cjson.encode(t))
    redis.call('ZADD', queue, t.seq, t.account)
    back = back + 1
  end
end
redis.call('HDEL', KEYS[2], mid)
return {'done', tostring(back), tostring(lost)}
