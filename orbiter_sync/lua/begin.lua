-- begin.lua: moves a claimed task to running and publishes its `running` event, or,
-- when the task has ended meanwhile (cancelled while it waited, say), acknowledges
-- the entry without running it and makes sure its stream is ended.
--
-- KEYS[1] queue          the queue stream
-- KEYS[2] task hash
-- KEYS[3] task index
-- KEYS[4] event stream
-- KEYS[5] counts         the queue's fleet counters (lib/counts.lua)
-- KEYS[6] recent counts  this minute's bucket of them
-- ARGV[1] group          the queue's consumer group
-- ARGV[2] consumer       the worker id that claimed the entry
-- ARGV[3] entry id
-- ARGV[4] task id
-- ARGV[5] now            unix time, stored as started_at
-- ARGV[6] task ttl       seconds
-- ARGV[7] event channel
-- ARGV[8] event ttl      seconds
-- ARGV[9] eid            de-duplication id of the event written
-- ARGV[10] running event the `running` status event JSON up to its `"attempt":`,
--                        completed here with the task's retries + 1 and `}`
-- Returns {verdict, status, attempt}: verdict `started` (attempt: 1 for the first
-- run, retries + 1 after); `ended` (acknowledged, not to be run); or `lost` (this
-- consumer no longer holds the entry: nothing written); attempt 0 for those two.
-- A call retried after a lost reply writes the `running` event only once.

local queue = KEYS[1]
local task_key = KEYS[2]
local index_key = KEYS[3]
local stream = KEYS[4]
local totals = KEYS[5]
local recent = KEYS[6]
local group = ARGV[1]
local consumer = ARGV[2]
local entry_id = ARGV[3]
local task_id = ARGV[4]
local now = ARGV[5]
local task_ttl = ARGV[6]
local event_channel = ARGV[7]
local event_ttl = ARGV[8]
local eid = ARGV[9]
local running_event = ARGV[10]

--- @include "status"
--- @include "events"
--- @include "entries"
--- @include "counts"

if not owner_is(queue, group, entry_id, consumer) then
  return {'lost', redis.call('HGET', task_key, 'status') or '', 0}
end
local status, written = set_status(task_key, index_key, task_id, 'running', task_ttl,
                                   {'worker_id', consumer, 'started_at', now})
if written then
  local attempt = (tonumber(redis.call('HGET', task_key, 'retries')) or 0) + 1
  append_event_once(stream, event_channel, event_ttl, running_event .. attempt .. '}', eid)
  return {'started', status, attempt}
end
ack_and_delete(queue, group, entry_id)
end_stream(stream, event_channel, event_ttl, status, '', '', eid)
-- cancelled while it waited: no settle will count it (other ends were counted already)
if status == 'cancelled' then count_as(totals, recent, status) end
return {'ended', status, 0}
