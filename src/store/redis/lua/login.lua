-- The login throttle of one (subject, network) pair and its subject (see
-- store::LoginPolicy): decides whether a password guess may be checked, and settles
-- it once checked. All of a subject's keys share its hash tag.
-- KEYS: the pair (hash: n = failures, next = ms before which no guess, f = guesses
--       in flight, since = ms of the latest), the subject's failures (counter), the
--       subject's known networks (hash: network -> ms of its last login).
-- ARGV: op (admit | wrong | right), network, free, base ms, max ms,
--       forget ms, failures per subject, window ms, known ms, in-flight ms.
-- Returns for admit: 1 check, 2 wait, 0 refuse; else 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, network = ARGV[1], ARGV[2]
local free, base, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local forget, per_subject, window = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local known_ms, in_flight_ms = tonumber(ARGV[9]), tonumber(ARGV[10])

local state = redis.call('HMGET', KEYS[1], 'n', 'next', 'f', 'since')
local n, next = tonumber(state[1] or '0'), tonumber(state[2] or '0')
local f, since = tonumber(state[3] or '0'), tonumber(state[4] or '0')
-- Guesses in flight this long died with their node.
if f > 0 and now - since > in_flight_ms then f = 0 end

local function wait_after(failures)
  if failures < free then return 0 end
  return math.min(base * 2 ^ math.min(failures - free, 40), max)
end

if op == 'admit' then
  local seen = tonumber(redis.call('HGET', KEYS[3], network) or '-1')
  if seen < 0 or now - seen >= known_ms then
    if tonumber(redis.call('GET', KEYS[2]) or '0') >= per_subject then return 0 end
  end
  if now < next then return 0 end
  if f > 0 and wait_after(n + f) > 0 then return 2 end
  redis.call('HSET', KEYS[1], 'n', n, 'next', next, 'f', f + 1, 'since', now)
  redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[1]), forget, in_flight_ms))
  return 1
end

if f > 0 then f = f - 1 end
if op == 'right' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[3], network, now)
  redis.call('PEXPIRE', KEYS[3], known_ms)
  return 1
end
-- wrong
n = n + 1
next = math.floor(now + wait_after(n))
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], window) end
redis.call('HSET', KEYS[1], 'n', n, 'next', next, 'f', f, 'since', since)
redis.call('PEXPIRE', KEYS[1], math.floor(math.max(next - now, 0) + forget))
return 1
