-- A ticket through its player's absence (RESUME.md): 'park' keeps the ticket that
-- connection (node, conn) held for its grace from now (its player went away);
-- 'reclaim' hands it, unless past its grace, to the player's new connection.
-- KEYS: tickets, pending:<account>.
-- ARGV: 'park' or 'reclaim', account, node, conn.
-- Returns {'kept'}, {'forming'} (its match is forming: it cannot wait), {'none'}, or
-- {'reclaimed', previous node, previous conn}.
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[1] == 'park' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'forming'} end
  if not raw then return {'none'} end
  local t = cjson.decode(raw)
  if t.node ~= ARGV[3] or tostring(t.conn) ~= ARGV[4] or not t.grace_secs or t.grace_secs == 0 then
    return {'none'}
  end
  t.away_until_ms = now + t.grace_secs * 1000
  redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(t))
  return {'kept'}
end
if not raw then return {'none'} end
local t = cjson.decode(raw)
if not t.grace_secs or t.grace_secs == 0 or (t.away_until_ms and t.away_until_ms < now) then return {'none'} end
local before = {'reclaimed', t.node, tostring(t.conn)}
t.node, t.conn, t.away_until_ms = ARGV[3], tonumber(ARGV[4]), nil
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(t))
return before
