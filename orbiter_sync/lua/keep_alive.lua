-- keep_alive.lua: resets the idle time of the entries a consumer still holds, so no
-- other worker reclaims them, and reports those it no longer holds.
--
-- KEYS[1] queue          the queue stream
-- ARGV[1] group
-- ARGV[2] consumer       the worker id holding them
-- ARGV[3...] entry ids
-- Returns the entry ids this consumer no longer holds.

local queue = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local entry_ids = {unpack(ARGV, 3)}

--- @include "entries"

local lost = {}
for _, entry_id in ipairs(entry_ids) do
  if owner_is(queue, group, entry_id, consumer) then
    redis.call('XCLAIM', queue, group, consumer, 0, entry_id, 'JUSTID')
  else
    table.insert(lost, entry_id)
  end
end
return lost
