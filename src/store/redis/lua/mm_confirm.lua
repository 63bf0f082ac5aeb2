-- Keeps a started match and its game server's lease (if the match still holds it).
-- The first confirmation also gives each player back the match it counted against
-- its cap (mm_start.lua): only matches no game server confirmed count.
-- KEYS: tickets, match:<id>. ARGV: match, secs.
-- From data: lease:<the match's server>, formed:<each of its accounts>.
-- Returns 1, or 0 when the match is unknown.
local raw = redis.call('GET', KEYS[2])
if not raw then return 0 end
local record = cjson.decode(raw)
if not record.confirmed then
  for _, account in ipairs(record.accounts) do
    local formed = mm('formed:' .. account)
    if tonumber(redis.call('GET', formed) or '0') > 0 then redis.call('DECR', formed) end
  end
  record.confirmed = true
end
redis.call('SET', KEYS[2], cjson.encode(record), 'EX', tonumber(ARGV[2]))
local lease = mm('lease:' .. record.server)
if redis.call('GET', lease) == ARGV[1] then redis.call('EXPIRE', lease, tonumber(ARGV[2])) end
return 1
