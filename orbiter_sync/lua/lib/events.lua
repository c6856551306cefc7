-- lib/events.lua: appending a task's events, and ending its stream exactly once.
--
-- An event goes to the stream (field `event`, plus `eid`, our de-duplication id)
-- and to the pub/sub channel, in one step. Every task's stream ends with one
-- terminal status event (completed, error or cancelled).

local TERMINAL_EVENT = {completed = true, error = true, cancelled = true}
local EVENT_STATUS_OF = {completed = 'completed', failed = 'error', cancelled = 'cancelled'}

local function last_event_is_terminal(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last == 0 then return false end
  local f = last[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'event' then
      local ok, ev = pcall(cjson.decode, f[i + 1])
      return ok and type(ev) == 'table' and ev['type'] == 'status'
        and TERMINAL_EVENT[ev['status']] == true
    end
  end
  return false
end

-- A channel that starts with a hash tag is a Redis Cluster shard channel (layout.py):
-- published with SPUBLISH, which stays on the shard's master instead of every node.
local function publish(channel, message)
  if string.byte(channel, 1) == 123 then  -- '{'
    return redis.call('SPUBLISH', channel, message)
  end
  return redis.call('PUBLISH', channel, message)
end

local function append_event(stream, channel, ttl, event, eid)
  local id = redis.call('XADD', stream, '*', 'event', event, 'eid', eid)
  redis.call('EXPIRE', stream, ttl)
  publish(channel, event)
  return id
end

-- The id of the stream's last entry when it carries de-duplication id `eid`: the
-- event a call retried after a lost reply already wrote.
local function written_by(stream, eid)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last == 0 then return nil end
  local f = last[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'eid' and f[i + 1] == eid then return last[1][1] end
  end
  return nil
end

-- Appends the event unless a retried call already did; returns its entry id.
local function append_event_once(stream, channel, ttl, event, eid)
  return written_by(stream, eid) or append_event(stream, channel, ttl, event, eid)
end

-- Appends the terminal event matching a final task status, unless the stream
-- already ends with one. Returns true when it wrote one.
local function end_stream(stream, channel, ttl, task_status, message, agent_name, eid)
  local status = EVENT_STATUS_OF[task_status]
  if not status or last_event_is_terminal(stream) then return false end
  local event = cjson.encode({type = 'status', status = status, message = message,
                              agent_name = agent_name})
  append_event(stream, channel, ttl, event, eid)
  return true
end
