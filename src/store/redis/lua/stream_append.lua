-- Appends a frame to a resume stream (RESUME.md) and answers {its id, the id of the
-- entry before it ('0-0': none)}; the entry keeps that previous id (field p) beside
-- the frame (field f), so a reader can tell whether anything before an entry was
-- trimmed. The stream is trimmed to its cap and its window and expires when idle.
-- With a chat bucket (KEYS[2]) it first takes one message from it (as chat_rate.lua)
-- and appends nothing when the bucket is empty (answers 0). With a publish command it
-- then publishes the bus event, the appended position added to it.
-- KEYS: the stream[, the chat bucket]. ARGV: frame, cap, window ms, idle secs, ms per
-- message, burst, publish command ('' for none), channel, the event's JSON without its
-- closing brace. The channel is no key: the caller names one only when it hashes to
-- the stream's slot (on Cluster a script may publish to a shard channel of its own
-- slot only), and the chat bucket lives in that slot too.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
if KEYS[2] then
  local interval, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
  local full_at = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  if full_at - now > interval * (burst - 1) then return 0 end
  full_at = full_at + interval
  redis.call('SET', KEYS[2], string.format('%.3f', full_at), 'PX', math.ceil(full_at - now))
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'p', prev, 'f', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', math.floor(now) - tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[7] ~= '' then
  redis.call(ARGV[7], ARGV[8], ARGV[9] .. ',"at":{"pos":"' .. id .. '","prev":"' .. prev .. '"}}')
end
return {id, prev}
