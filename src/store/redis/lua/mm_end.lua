-- Ends a started match: its players' `match_found` and pending state (if still this
-- match's), its game server's lease (if it still holds it), and its record.
-- KEYS: tickets, match:<id>. ARGV: match.
-- From data: found:<account> and pending:<account> of each of its accounts,
-- lease:<its server>.
-- Returns 1, or 0 when the match is unknown.
local mid = ARGV[1]
local raw = redis.call('GET', KEYS[2])
if not raw then return 0 end
local m = cjson.decode(raw)
for _, acct in ipairs(m.accounts) do
  local found = mm('found:' .. acct)
  local frame = redis.call('GET', found)
  if frame and string.find(frame, mid, 1, true) then redis.call('DEL', found) end
  local pending = mm('pending:' .. acct)
  if redis.call('GET', pending) == mid then redis.call('DEL', pending) end
end
local lease = mm('lease:' .. m.server)
if redis.call('GET', lease) == mid then redis.call('DEL', lease) end
redis.call('DEL', KEYS[2])
return 1
