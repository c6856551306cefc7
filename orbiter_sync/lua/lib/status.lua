-- lib/status.lua: the task status transition rule, the one place it is written.
--
-- A completed, failed or cancelled task never changes status again: above all it
-- never becomes running. Writing the status a task already has is allowed, so a
-- script retried after a lost reply is harmless. Every script that writes a
-- status goes through set_status.

local FINAL_STATUS = {completed = true, failed = true, cancelled = true}

local function may_become(current, new)
  if not current or current == new then return true end
  return not FINAL_STATUS[current]
end

-- Writes status (and the field/value pairs of `fields`) when the rule allows it,
-- refreshes the hash's TTL and indexes the task. Returns the status the task has
-- afterwards, and whether this call wrote it.
local function set_status(task_key, index_key, task_id, new, ttl, fields)
  local current = redis.call('HGET', task_key, 'status')
  if not may_become(current, new) then return current, false end
  redis.call('HSET', task_key, 'task_id', task_id, 'status', new, unpack(fields or {}))
  redis.call('EXPIRE', task_key, ttl)
  redis.call('SADD', index_key, task_id)
  return new, true
end
