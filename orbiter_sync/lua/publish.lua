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

return append_event_once(stream, event_channel, event_ttl, event, eid)
