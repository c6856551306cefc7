-- reclaim.lua: takes over entries idle longer than the visibility timeout (XAUTOCLAIM)
-- and tells how often each was delivered.
--
-- KEYS[1] queue          the queue stream
-- ARGV[1] group
-- ARGV[2] consumer       the worker id taking them over
-- ARGV[3] min idle       milliseconds
-- ARGV[4] cursor         XAUTOCLAIM cursor
-- ARGV[5] count          most entries taken
-- Returns {next cursor, {{entry id, fields, deliveries}, ...}}.

local queue = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local min_idle = ARGV[3]
local cursor = ARGV[4]
local count = ARGV[5]

local res = redis.call('XAUTOCLAIM', queue, group, consumer, min_idle, cursor, 'COUNT', count)
local out = {}
for _, entry in ipairs(res[2]) do
  local pending = redis.call('XPENDING', queue, group, entry[1], entry[1], 1)
  local deliveries = 1
  if #pending > 0 then deliveries = pending[1][4] end
  table.insert(out, {entry[1], entry[2], deliveries})
end
return {res[1], out}
