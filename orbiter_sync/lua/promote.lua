-- promote.lua: moves retries whose backoff is over back onto the queue.
--
-- KEYS[1] delayed        retries waiting out their backoff (score = due time)
-- KEYS[2] queue          the queue stream
-- ARGV[1] now            unix time
-- ARGV[2] limit          most entries moved in one call
-- Returns how many were moved.

local delayed = KEYS[1]
local queue = KEYS[2]
local now = ARGV[1]
local limit = ARGV[2]

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, payload in ipairs(due) do
  redis.call('XADD', queue, '*', 'payload', payload)
  redis.call('ZREM', delayed, payload)
end
return #due
