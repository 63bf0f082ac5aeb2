local function restore(p, mid, gone, tries, max_tries)
  local forming = p .. '{mm}:forming'
  local raw = redis.call('HGET', forming, mid)
  if not raw then return 0, 0 end
  local back, lost = 0, 0
  for _, t in ipairs(cjson.decode(raw).tickets) do
    local pending = p .. '{mm}:pending:' .. t.account
    if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
    if t.left then
    elseif gone[t.node] then
      lost = lost + 1
    elseif max_tries and (t.tries or 0) + tries >= max_tries then
      -- Out of tries: the ticket ends here (its player gets match_error).
    elseif redis.call('HEXISTS', KEYS[1], t.account) == 0 then
      t.tries = (t.tries or 0) + tries
      redis.call('HSET', KEYS[1], t.account, cjson.encode(t))
      redis.call('ZADD', p .. '{mm}:q:' .. t.queue, t.seq, t.account)
      back = back + 1
    end
  end
  redis.call('HDEL', forming, mid)
  return back, lost
end
