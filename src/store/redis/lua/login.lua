-- The login throttle of one subject (see store::LoginPolicy): decides whether a
-- password guess from a client may be checked, and settles it once checked. A guess
-- counts against the client's network pair, or, from an address that logged into
-- the subject before, against that address's own pair (so a neighbour in the same
-- network guessing at the subject cannot hold its owner back). All of a subject's
-- keys share its hash tag.
-- KEYS: the network pair, the address pair (hashes: n = failures, next = ms before
--       which no guess, f = guesses in flight, since = ms of the latest), the
--       subject's failures (counter), the subject's known clients (hash:
--       'n:<network>' / 'a:<address>' -> ms of its last login there).
-- ARGV: op (admit | wrong | right), network, address, pair (n | a: the pair admit
--       chose, for wrong and right), free, base ms, max ms, forget ms, failures
--       per subject, window ms, known ms, in-flight ms.
-- Returns for admit: 1 check on the network pair, 3 check on the address pair,
-- 2 wait, 0 refuse; else 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, network, address = ARGV[1], ARGV[2], ARGV[3]
local free, base, max = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local forget, per_subject, window = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local known_ms, in_flight_ms = tonumber(ARGV[11]), tonumber(ARGV[12])

local function known(client)
  local seen = tonumber(redis.call('HGET', KEYS[4], client) or '-1')
  return seen >= 0 and now - seen < known_ms
end

local function wait_after(failures)
  if failures < free then return 0 end
  return math.min(base * 2 ^ math.min(failures - free, 40), max)
end

local pair, on_address
if op == 'admit' then
  on_address = known('a:' .. address)
  if not on_address and not known('n:' .. network) then
    if tonumber(redis.call('GET', KEYS[3]) or '0') >= per_subject then return 0 end
  end
else
  on_address = ARGV[4] == 'a'
end
pair = on_address and KEYS[2] or KEYS[1]

local state = redis.call('HMGET', pair, 'n', 'next', 'f', 'since')
local n, next = tonumber(state[1] or '0'), tonumber(state[2] or '0')
local f, since = tonumber(state[3] or '0'), tonumber(state[4] or '0')
-- Guesses in flight this long died with their node.
if f > 0 and now - since > in_flight_ms then f = 0 end

if op == 'admit' then
  if now < next then return 0 end
  if f > 0 and wait_after(n + f) > 0 then return 2 end
  redis.call('HSET', pair, 'n', n, 'next', next, 'f', f + 1, 'since', now)
  redis.call('PEXPIRE', pair, math.max(redis.call('PTTL', pair), forget, in_flight_ms))
  return on_address and 3 or 1
end

if f > 0 then f = f - 1 end
if op == 'right' then
  redis.call('DEL', pair)
  redis.call('HSET', KEYS[4], 'n:' .. network, now, 'a:' .. address, now)
  redis.call('PEXPIRE', KEYS[4], known_ms)
  return 1
end
-- wrong
n = n + 1
next = math.floor(now + wait_after(n))
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], window) end
redis.call('HSET', pair, 'n', n, 'next', next, 'f', f, 'since', since)
redis.call('PEXPIRE', pair, math.floor(math.max(next - now, 0) + forget))
return 1
