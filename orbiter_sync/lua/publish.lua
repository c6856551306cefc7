-- publish.lua: appends one event to a task's stream and channel. A retry after a lost
-- reply finds its own entry last (same eid) and writes nothing.
--
-- KEYS[1] event stream   orbiter:stream:{id}
-- ARGV[1] event          the event JSON
-- ARGV[2] event ttl      seconds
-- ARGV[3] eid            de-duplication id
-- ARGV[4] event channel  orbiter:events:{id}
-- Returns the stream entry id.

local stream = KEYS[1]
local event = ARGV[1]
local event_ttl = ARGV[2]
local eid = ARGV[3]
local event_channel = ARGV[4]

--- @include "events"

local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #last > 0 then
  local f = last[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'eid' and f[i + 1] == eid then return last[1][1] end
  end
end
return append_event(stream, event_channel, event_ttl, event, eid)
