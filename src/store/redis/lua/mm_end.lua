-- Ends a started match: its players' `match_found` and pending state (if still this
-- match's), its game server's lease (if it still holds it), and its record.
-- KEYS: match:<id>, lease:<its server>, then for each of its accounts, in order:
--       found:<account>, pending:<account>.
-- ARGV: match, the record the keys were named from.
-- Returns {'ended'}, {'unknown'} when the match is unknown, or, changing nothing,
-- {'retry', record} when the record is no longer the one given.
local mid = ARGV[1]
local raw = redis.call('GET', KEYS[1])
if not raw then return {'unknown'} end
if raw ~= ARGV[2] then return {'retry', raw} end
for i = 1, #cjson.decode(raw).accounts do
  local found, pending = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local frame = redis.call('GET', found)
  if frame and string.find(frame, mid, 1, true) then redis.call('DEL', found) end
  if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
end
if redis.call('GET', KEYS[2]) == mid then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[1])
return {'ended'}
