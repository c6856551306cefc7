-- keep_alive.lua: resets the idle time of the entries a consumer still holds, so no
-- other worker reclaims them, and reports those another consumer holds now (taken
-- over) and those nobody holds (settled or released meanwhile).
--
-- KEYS[1] queue          the queue stream
-- ARGV[1] group
-- ARGV[2] consumer       the worker id holding them
-- ARGV[3...] entry ids
-- Returns {ids another consumer holds, ids nobody holds}.

local queue = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local entry_ids = {unpack(ARGV, 3)}

--- @include "entries"

local taken, gone = {}, {}
for _, entry_id in ipairs(entry_ids) do
  local owned = owner_is(queue, group, entry_id, consumer)
  if owned then
    redis.call('XCLAIM', queue, group, consumer, 0, entry_id, 'JUSTID')
  elseif owned == false then
    table.insert(taken, entry_id)
  else
    table.insert(gone, entry_id)
  end
end
return {taken, gone}
