-- lib/counts.lua: the fleet's counters of a queue (orbiter-sync's own keys).
--
-- totals is a hash of counts since the queue began, recent the same counts for the
-- current one-minute bucket (it expires), from which `alerts check` reads recent
-- rates. Counting never fails the script it is part of: a counter key someone
-- broke (a string, a field that is not a number) loses the count, not the task.

local COUNTED = {completed = 'completed', failed = 'failed', cancelled = 'cancelled',
                 retrying = 'retried', dead_lettered = 'dead_lettered'}
local RECENT_TTL = 600

local function count_as(totals, recent, what)
  local field = COUNTED[what]
  if not field then return end
  redis.pcall('HINCRBY', totals, field, 1)
  if redis.pcall('HINCRBY', recent, field, 1) == 1 then
    redis.pcall('EXPIRE', recent, RECENT_TTL)
  end
end
