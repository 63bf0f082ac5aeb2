-- A node's heartbeat: records its count and, when its own previous heartbeat is
-- fresh (it has been beating all along, so its judgement is current), moves the
-- nodes whose heartbeat is stale to the gone set. A node back from an outage of its
-- own first beats once more before judging others, who may be coming back too.
-- Returns whether this node was on record, the counts, and the gone set (trimmed
-- to its last `gone kept ms` and 1,000 nodes whenever it grows). A steady beat is
-- 7 commands.
-- KEYS: beats, counts, gone. ARGV: node id, count, stale ms, gone kept ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale_ms = tonumber(ARGV[3])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if previous and now - tonumber(previous) < stale_ms then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - stale_ms)
  for _, node in ipairs(stale) do
    redis.call('ZREM', KEYS[1], node)
    redis.call('HDEL', KEYS[2], node)
    redis.call('ZADD', KEYS[3], now, node)
  end
  if #stale > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1001)
  end
else
  -- Back (or new): not gone, whatever others judged.
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return {previous and 1 or 0, redis.call('HGETALL', KEYS[2]), redis.call('ZRANGE', KEYS[3], 0, -1)}
