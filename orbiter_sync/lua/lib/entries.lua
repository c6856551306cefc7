-- lib/entries.lua: who owns a claimed stream entry, and settling it for good.

-- true when `consumer` holds the entry in the group's pending list, false when
-- another consumer does, nil when nobody does (it was settled or released).
local function owner_is(queue, group, entry_id, consumer)
  local pending = redis.call('XPENDING', queue, group, entry_id, entry_id, 1)
  if #pending == 0 then return nil end
  return pending[1][2] == consumer
end

-- Acknowledges the entry and deletes it: XACK alone would leave it in the stream.
local function ack_and_delete(queue, group, entry_id)
  redis.call('XACK', queue, group, entry_id)
  redis.call('XDEL', queue, entry_id)
end
