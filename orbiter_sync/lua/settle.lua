-- settle.lua: records how one attempt of a claimed task ended, in one step: status,
-- result or error, retry count, the terminal or recoverable event, and the entry
-- acknowledged and deleted, re-delayed or put back on the queue.
--
-- Fenced: when this consumer no longer holds the entry in the group's pending
-- list (another worker took it over while this one was judged dead, or it was
-- released at shutdown) nothing at all is written. A call retried after a lost
-- reply finds the entry settled and its own event last in the stream: it writes
-- nothing and reports what the first call did.
--
-- Outcomes:
--   completed   status completed, result, completed_at; terminal `completed` event
--   failed      failed for good: status failed, error, completed_at; terminal `error`
--               event whose message is the error
--   retry       a failed attempt: while retries < max retries, status retrying
--               with retries + 1 and the error, a recoverable `error` event, and
--               the payload waits in the delayed set for its backoff; else as failed
--   cancelled   status cancelled, completed_at; terminal `cancelled` event
--   released    not an attempt (the worker stopped): a running task goes back to
--               pending and its payload back on the queue, with a recoverable event
-- A task that ended meanwhile (cancelled while it ran, say) keeps its status: the
-- entry is acknowledged and the stream ended with that status's terminal event.
--
-- KEYS[1] queue          the queue stream
-- KEYS[2] task hash
-- KEYS[3] task index
-- KEYS[4] event stream
-- KEYS[5] delayed        retries waiting out their backoff (sorted set)
-- KEYS[6] counts         the queue's fleet counters (lib/counts.lua)
-- KEYS[7] recent counts  this minute's bucket of them
-- ARGV[1] group
-- ARGV[2] consumer       the worker id that claimed the entry
-- ARGV[3] entry id
-- ARGV[4] task id
-- ARGV[5] outcome        completed | failed | retry | cancelled | released
-- ARGV[6] now            unix time
-- ARGV[7] task ttl       seconds
-- ARGV[8] event channel
-- ARGV[9] event ttl      seconds
-- ARGV[10] eid           de-duplication id of the event written
-- ARGV[11] payload       the entry's raw payload, re-delayed or re-queued as it came
--                         (retry, released; empty for the others)
-- ARGV[12] result        result JSON (completed)
-- ARGV[13] error         error text (failed, retry)
-- ARGV[14] message       message of the terminal event of completed or cancelled
-- ARGV[15] event         the recoverable `error` event JSON (retry, released)
-- ARGV[16] agent name    for the terminal event
-- ARGV[17] max retries
-- ARGV[18] backoffs      JSON list: seconds to wait before retry 1, 2, ...
-- ARGV[19] error type    the exception's class name (failed, retry), kept beside the
--                         error, which is str(exc) as the async worker writes it
-- ARGV[20] traceback     the attempt's traceback, bounded ('' when there is none)
-- Returns {verdict, status}: verdict `settled`, `lost` (another consumer holds the
-- entry) or `gone` (nobody does, and not through this call); status is the task's
-- status afterwards.

local queue = KEYS[1]
local task_key = KEYS[2]
local index_key = KEYS[3]
local stream = KEYS[4]
local delayed = KEYS[5]
local totals = KEYS[6]
local recent = KEYS[7]
local group = ARGV[1]
local consumer = ARGV[2]
local entry_id = ARGV[3]
local task_id = ARGV[4]
local outcome = ARGV[5]
local now = ARGV[6]
local task_ttl = ARGV[7]
local event_channel = ARGV[8]
local event_ttl = ARGV[9]
local eid = ARGV[10]
local payload = ARGV[11]
local result = ARGV[12]
local error_text = ARGV[13]
local message = ARGV[14]
local recoverable_event = ARGV[15]
local agent_name = ARGV[16]
local max_retries = tonumber(ARGV[17])
local backoffs = cjson.decode(ARGV[18])
local error_type = ARGV[19]
local trace = ARGV[20]

--- @include "status"
--- @include "events"
--- @include "entries"
--- @include "counts"

local OUTCOMES = {completed = true, failed = true, retry = true, cancelled = true,
                  released = true}
if not OUTCOMES[outcome] then
  return redis.error_reply('settle.lua: unknown outcome ' .. tostring(outcome))
end

local current = redis.call('HGET', task_key, 'status')
local owned = owner_is(queue, group, entry_id, consumer)
if owned == nil then
  if written_by(stream, eid) then return {'settled', current or ''} end
  return {'gone', current or ''}
end
if not owned then return {'lost', current or ''} end

if outcome == 'released' then
  if may_become(current, 'pending') then
    if current == 'running' then
      current = set_status(task_key, index_key, task_id, 'pending', task_ttl, {})
    end
    redis.call('XADD', queue, '*', 'payload', payload)
    append_event(stream, event_channel, event_ttl, recoverable_event, eid)
  else
    end_stream(stream, event_channel, event_ttl, current, '', agent_name, eid)
    -- cancelled while it waited or ran, and released: no other script will count it
    if current == 'cancelled' then count_as(totals, recent, current) end
  end
  ack_and_delete(queue, group, entry_id)
  return {'settled', current or ''}
end

if outcome == 'retry' then
  local retries = tonumber(redis.call('HGET', task_key, 'retries') or '0') or 0
  if retries < max_retries and may_become(current, 'retrying') then
    retries = retries + 1
    set_status(task_key, index_key, task_id, 'retrying', task_ttl,
               {'retries', retries, 'error', error_text, 'error_type', error_type,
                'traceback', trace})
    append_event(stream, event_channel, event_ttl, recoverable_event, eid)
    local delay = tonumber(backoffs[retries] or backoffs[#backoffs]) or 0
    redis.call('ZADD', delayed, tonumber(now) + delay, payload)
    ack_and_delete(queue, group, entry_id)
    count_as(totals, recent, 'retrying')
    return {'settled', 'retrying'}
  end
  if not may_become(current, 'failed') then
    -- it ended meanwhile (cancelled while it ran): it keeps that status
    ack_and_delete(queue, group, entry_id)
    end_stream(stream, event_channel, event_ttl, current, '', agent_name, eid)
    if current == 'cancelled' then count_as(totals, recent, current) end
    return {'settled', current}
  end
  outcome = 'failed'
end

local fields
if outcome == 'completed' then
  fields = {'result', result, 'completed_at', now}
elseif outcome == 'failed' then
  fields = {'error', error_text, 'error_type', error_type, 'traceback', trace,
            'completed_at', now}
  message = error_type ~= '' and (error_type .. ': ' .. error_text) or error_text
else
  fields = {'completed_at', now}
end
local status, written = set_status(task_key, index_key, task_id, outcome, task_ttl, fields)
if not written then message = '' end  -- it ended meanwhile (cancelled): not with this error
ack_and_delete(queue, group, entry_id)
end_stream(stream, event_channel, event_ttl, status, message, agent_name, eid)
-- how the task ended: this outcome, or a cancel while it ran (which only a settle counts)
if written or status == 'cancelled' then count_as(totals, recent, status) end
return {'settled', status}
