-- A forming match got its game server: the record lives as long as the match is
-- joinable, until its game server confirms it (mm_confirm.lua); each account keeps a
-- pending match and its `match_found` as long, and counts one more match in the
-- window.
-- KEYS: forming, match:<id>, then per account: pending:<account>,
--       found:<account>, formed:<account>.
-- ARGV: match, server, joinable secs, window secs, then per account: account,
--       its match_found.
-- Returns 1, or 0 when the match is no longer forming.
local mid, secs = ARGV[1], tonumber(ARGV[3])
if redis.call('HDEL', KEYS[1], mid) == 0 then return 0 end
local accounts = {}
local k = 3
for i = 5, #ARGV, 2 do
  -- Still 'Match already found' while the match is joinable.
  redis.call('SET', KEYS[k], mid, 'EX', secs)
  redis.call('SET', KEYS[k + 1], ARGV[i + 1], 'EX', secs)
  if redis.call('INCR', KEYS[k + 2]) == 1 then redis.call('EXPIRE', KEYS[k + 2], tonumber(ARGV[4])) end
  table.insert(accounts, ARGV[i])
  k = k + 3
end
redis.call('SET', KEYS[2], cjson.encode({server = ARGV[2], accounts = accounts}), 'EX', secs)
return 1
