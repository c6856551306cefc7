-- dead_letter.lua: moves an entry that can never run to the dead-letter stream, with
-- its reason, and fails its task (when its id could be read). Only an entry the
-- consumer still holds: a call retried after a lost reply writes nothing more.
--
-- KEYS[1] queue          the queue stream
-- KEYS[2] dead letters   {queue}:dead
-- KEYS[3] task hash      (of an empty task id when none could be read)
-- KEYS[4] task index
-- KEYS[5] event stream
-- ARGV[1] group
-- ARGV[2] entry id
-- ARGV[3] reason
-- ARGV[4] entry          the raw entry's fields, as JSON
-- ARGV[5] worker id      the consumer holding the entry
-- ARGV[6] now            unix time
-- ARGV[7] task id        '' when unknown
-- ARGV[8] task ttl       seconds
-- ARGV[9] event ttl      seconds
-- ARGV[10] event channel
-- ARGV[11] eid           de-duplication id of the terminal event
-- ARGV[12] maxlen        approximate cap of the dead-letter stream
-- Returns 1 when the entry was dead-lettered, 0 when this consumer did not hold it.

local queue = KEYS[1]
local dead_letters = KEYS[2]
local task_key = KEYS[3]
local index_key = KEYS[4]
local stream = KEYS[5]
local group = ARGV[1]
local entry_id = ARGV[2]
local reason = ARGV[3]
local entry = ARGV[4]
local worker_id = ARGV[5]
local now = ARGV[6]
local task_id = ARGV[7]
local task_ttl = ARGV[8]
local event_ttl = ARGV[9]
local event_channel = ARGV[10]
local eid = ARGV[11]
local maxlen = ARGV[12]

--- @include "status"
--- @include "events"
--- @include "entries"

if not owner_is(queue, group, entry_id, worker_id) then return 0 end
redis.call('XADD', dead_letters, 'MAXLEN', '~', maxlen, '*', 'entry_id', entry_id,
           'task_id', task_id, 'reason', reason, 'entry', entry, 'worker_id', worker_id,
           'dead_at', now)
ack_and_delete(queue, group, entry_id)
if task_id == '' then return 1 end
local status = set_status(task_key, index_key, task_id, 'failed', task_ttl,
                          {'error', reason, 'completed_at', now})
end_stream(stream, event_channel, event_ttl, status, reason, '', eid)
return 1
