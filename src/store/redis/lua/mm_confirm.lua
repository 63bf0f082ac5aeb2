-- Keeps a started match and its game server's lease (if the match still holds it).
-- The first confirmation also gives each player back the match it counted against
-- its cap (mm_start.lua): only matches no game server confirmed count.
-- KEYS: match:<id>, lease:<its server>, then formed:<account> of each of its
--       accounts, in order.
-- ARGV: match, secs, the record the keys were named from.
-- Returns {'confirmed'}, {'unknown'} when the match is unknown, or, changing
-- nothing, {'retry', record} when the record is no longer the one given.
local raw = redis.call('GET', KEYS[1])
if not raw then return {'unknown'} end
if raw ~= ARGV[3] then return {'retry', raw} end
local record = cjson.decode(raw)
if not record.confirmed then
  for i = 1, #record.accounts do
    local formed = KEYS[2 + i]
    if tonumber(redis.call('GET', formed) or '0') > 0 then redis.call('DECR', formed) end
  end
  record.confirmed = true
end
redis.call('SET', KEYS[1], cjson.encode(record), 'EX', tonumber(ARGV[2]))
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2])) end
return {'confirmed'}
