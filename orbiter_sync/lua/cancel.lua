-- cancel.lua: marks a pending, retrying or running task cancelled and tells its worker.
--
-- A task that never started gets its terminal `cancelled` event here; a running
-- one gets it from its worker's settle, once the run has stopped.
--
-- KEYS[1] task hash
-- KEYS[2] task index
-- KEYS[3] event stream   orbiter:stream:{id}
-- ARGV[1] task id
-- ARGV[2] cancel channel orbiter:cancel:{id}; in cluster mode the shard's, carrying the id
-- ARGV[3] event channel  orbiter:events:{id}
-- ARGV[4] event ttl      seconds
-- ARGV[5] eid            de-duplication id of the terminal event
-- ARGV[6] now            unix time, stored as completed_at
-- ARGV[7] task ttl       seconds
-- Returns 1 when the task is now cancelled, 0 when it is unknown or already ended.

local task_key = KEYS[1]
local index_key = KEYS[2]
local stream = KEYS[3]
local task_id = ARGV[1]
local cancel_channel = ARGV[2]
local event_channel = ARGV[3]
local event_ttl = ARGV[4]
local eid = ARGV[5]
local now = ARGV[6]
local task_ttl = ARGV[7]

--- @include "status"
--- @include "events"

local current = redis.call('HGET', task_key, 'status')
if not current or not may_become(current, 'cancelled') then return 0 end
if current ~= 'cancelled' then
  set_status(task_key, index_key, task_id, 'cancelled', task_ttl, {'completed_at', now})
  -- a delayed submit's payload still waits in the delayed set: the hash must outlive its
  -- due time, so that the worker that begins it then finds it cancelled
  local due = tonumber(redis.call('HGET', task_key, 'due_at') or '')
  if due and due > tonumber(now) then
    redis.call('EXPIRE', task_key, math.ceil(due - tonumber(now)) + tonumber(task_ttl))
  end
end
if string.byte(cancel_channel, 1) == 123 then  -- a cluster shard's channel: name the task
  publish(cancel_channel, task_id)
else
  publish(cancel_channel, 'cancel')
end
if current ~= 'running' then
  end_stream(stream, event_channel, event_ttl, 'cancelled', 'cancelled before it ran', '', eid)
end
return 1
