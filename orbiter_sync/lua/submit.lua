-- submit.lua: queues a task: its pending hash, its index entry and its stream entry,
-- all or nothing. Idempotent: a task id that already has a hash queues nothing.
--
-- KEYS[1] task hash      orbiter:task:{id}
-- KEYS[2] task index     orbiter:task:index
-- KEYS[3] queue          the queue stream
-- KEYS[4] delayed        the queue's delayed set (score = due time)
-- ARGV[1] task id
-- ARGV[2] payload        the TaskPayload JSON
-- ARGV[3] task ttl       seconds
-- ARGV[4] now            unix time, stored as created_at
-- ARGV[5] due            unix time before which it must not run ('' or 0: now); a
--                        delayed task waits in the delayed set, pending, until the
--                        workers' promoter queues it, as a retry waits out its backoff
-- Returns 1 when queued, 0 when the task id was already known.

local task_key = KEYS[1]
local index_key = KEYS[2]
local queue = KEYS[3]
local delayed = KEYS[4]
local task_id = ARGV[1]
local payload = ARGV[2]
local task_ttl = ARGV[3]
local now = ARGV[4]
local due_at = ARGV[5]

--- @include "status"

if redis.call('EXISTS', task_key) == 1 then return 0 end
local due = tonumber(due_at) or 0
if due > tonumber(now) then
  -- kept until its due time and then as long as any task's hash
  set_status(task_key, index_key, task_id, 'pending', task_ttl,
             {'retries', '0', 'created_at', now, 'due_at', due_at})
  redis.call('EXPIRE', task_key, math.ceil(due - tonumber(now)) + tonumber(task_ttl))
  redis.call('ZADD', delayed, due, payload)
else
  set_status(task_key, index_key, task_id, 'pending', task_ttl, {'retries', '0', 'created_at', now})
  redis.call('XADD', queue, '*', 'payload', payload)
end
return 1
