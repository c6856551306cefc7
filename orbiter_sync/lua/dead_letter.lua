-- dead_letter.lua: moves an entry that can never run to the dead-letter stream, with
-- its reason, and fails its task (when its id could be read). Only an entry the
-- consumer still holds: a call retried after a lost reply writes nothing more.
-- A dead letter keeps a bounded prefix of the raw entry and its full length. When
-- the task's own keys cannot be written (a key of the wrong type, say), the entry
-- is dead-lettered all the same: it never stays to kill the next worker.
--
-- KEYS[1] queue          the queue stream
-- KEYS[2] dead letters   {queue}:dead
-- KEYS[3] task hash      (of an empty task id when none could be read)
-- KEYS[4] task index
-- KEYS[5] event stream
-- KEYS[6] counts         the queue's fleet counters (lib/counts.lua)
-- KEYS[7] recent counts  this minute's bucket of them
-- ARGV[1] group
-- ARGV[2] entry id
-- ARGV[3] reason
-- ARGV[4] entry          the raw entry's fields as JSON, at most a bounded prefix
-- ARGV[5] entry length   characters of the whole JSON
-- ARGV[6] worker id      the consumer holding the entry
-- ARGV[7] now            unix time
-- ARGV[8] task id        '' when unknown
-- ARGV[9] task ttl       seconds
-- ARGV[10] event ttl     seconds
-- ARGV[11] event channel
-- ARGV[12] eid           de-duplication id of the terminal event
-- ARGV[13] maxlen        approximate cap of the dead-letter stream
-- Returns 1 when the entry was dead-lettered, 0 when this consumer did not hold it.

local queue = KEYS[1]
local dead_letters = KEYS[2]
local task_key = KEYS[3]
local index_key = KEYS[4]
local stream = KEYS[5]
local totals = KEYS[6]
local recent = KEYS[7]
local group = ARGV[1]
local entry_id = ARGV[2]
local reason = ARGV[3]
local entry = ARGV[4]
local entry_length = ARGV[5]
local worker_id = ARGV[6]
local now = ARGV[7]
local task_id = ARGV[8]
local task_ttl = ARGV[9]
local event_ttl = ARGV[10]
local event_channel = ARGV[11]
local eid = ARGV[12]
local maxlen = ARGV[13]

--- @include "status"
--- @include "events"
--- @include "entries"
--- @include "counts"

if not owner_is(queue, group, entry_id, worker_id) then return 0 end
redis.call('XADD', dead_letters, 'MAXLEN', '~', maxlen, '*', 'entry_id', entry_id,
           'task_id', task_id, 'reason', reason, 'entry', entry, 'entry_length', entry_length,
           'worker_id', worker_id, 'dead_at', now)
ack_and_delete(queue, group, entry_id)
count_as(totals, recent, 'dead_lettered')
if task_id == '' then return 1 end
pcall(function()
  local status, written = set_status(task_key, index_key, task_id, 'failed', task_ttl,
                                     {'error', reason, 'error_type', 'DeadLettered',
                                      'completed_at', now})
  end_stream(stream, event_channel, event_ttl, status, reason, '', eid)
  if written then count_as(totals, recent, 'failed') end
  -- cancelled before it was dead-lettered: no begin or settle counted it
  if not written and status == 'cancelled' then count_as(totals, recent, status) end
end)
return 1
