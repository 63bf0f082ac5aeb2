-- Takes one message from an account's chat bucket (a token bucket kept as the time,
-- ms on Redis' clock, when it is full again: each message moves that time one
-- interval later; a message that would move it more than `burst` intervals past now
-- is refused). `global_chat` takes from the same bucket in stream_append.lua.
-- KEYS: the bucket. ARGV: ms per message, burst.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if full_at - now > interval * (burst - 1) then return 0 end
full_at = full_at + interval
redis.call('SET', KEYS[1], string.format('%.3f', full_at), 'PX', math.ceil(full_at - now))
return 1
