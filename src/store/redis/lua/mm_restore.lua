-- Prepended (after mm.lua) to the scripts that end a forming match (mm_take.lua,
-- mm_put_back.lua). `restore(match, gone, tries, max_tries)` puts its players back
-- at their places (not those that left or whose node is `gone`, nor those queued
-- again meanwhile, nor, when `max_tries` is given, those whose tries reach it: their
-- tickets end), adding `tries` to each ticket, frees their pending state and deletes
-- the record. Returns (put back, lost).
-- KEYS: tickets, forming.
-- From data: pending:<account> and q:<queue> of each of the match's tickets.
local function restore(mid, gone, tries, max_tries)
  local raw = redis.call('HGET', KEYS[2], mid)
  if not raw then return 0, 0 end
  local back, lost = 0, 0
  for _, t in ipairs(cjson.decode(raw).tickets) do
    local pending = mm('pending:' .. t.account)
    if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
    if t.left then
    elseif gone[t.node] then
      lost = lost + 1
    elseif max_tries and (t.tries or 0) + tries >= max_tries then
      -- Out of tries: the ticket ends here (its player gets match_error).
    elseif redis.call('HEXISTS', KEYS[1], t.account) == 0 then
      t.tries = (t.tries or 0) + tries
      redis.call('HSET', KEYS[1], t.account, cjson.encode(t))
      redis.call('ZADD', mm('q:' .. t.queue), t.seq, t.account)
      back = back + 1
    end
  end
  redis.call('HDEL', KEYS[2], mid)
  return back, lost
end
