-- keygate: one or more rate limits, checked and updated all-or-nothing in one atomic
-- step. Each limit is GCRA (the generic cell rate algorithm, as governor implements it)
-- or a strict sliding window (a log of the admissions within the last window).
--
-- KEYS[i]  the state of limit i:
--          GCRA: its theoretical arrival time (TAT) in nanoseconds since the Unix epoch,
--          in decimal; absent when the allowance is full.
--          window: a sorted set, one member per admitted slot, scored by its admission
--          time in microseconds since the Unix epoch; absent when the window is empty.
-- ARGV[1]  the current time, whole seconds; '' to read the Redis server's clock (TIME)
-- ARGV[2]  nanoseconds within that second (ignored with the server's clock)
-- ARGV[3]  '1' to let each key expire when it has nothing left to remember, '0' not to
-- for limit i, ARGV[4i], ARGV[4i+1], ARGV[4i+2], ARGV[4i+3]:
--          'g', then in nanoseconds the emission interval T (window / limit), the burst
--          tolerance tau = T * (burst - 1), and the extra weight T * (cost - 1); or
--          'w', then the window in microseconds, the limit, and the cost in slots
--
-- Returns integers only: {allowed, wait_1, full_1, remaining_1, wait_2, ...}
--   allowed      1 if every limit admits the request (and every key was updated),
--                0 if any refuses it (and no admission was recorded)
--   wait_i       nanoseconds until limit i would admit the request (0 if it does now)
--   full_i       GCRA: nanoseconds until the bucket is full again (after the update, if
--                admitted); window: nanoseconds until the oldest admission in the
--                window leaves it (0 if none)
--   remaining_i  window: the slots left after this decision; GCRA: 0 (unused)
--
-- Times are kept as differences from now, which stay far below 2^53 (Lua's numbers are
-- doubles), so the arithmetic is exact for any GCRA quota that fills up within 104
-- days; window scores (about 1.7e15 microseconds) are exact too.

local now_s, now_ns
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now_s = tonumber(time[1])
  now_ns = tonumber(time[2]) * 1000
else
  now_s = tonumber(ARGV[1])
  now_ns = tonumber(ARGV[2])
end
local now_us = now_s * 1000000 + math.floor(now_ns / 1000)
local expire = ARGV[3] == '1'

-- The time, in nanoseconds from now, at which the member of rank `rank` of `key` (a
-- window of `window` microseconds) leaves the window.
local function leaves(key, rank, window)
  local entry = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return (tonumber(entry[2]) + window - now_us) * 1000
end

local reply = {1}
local held = {}
for i = 1, #KEYS do
  local at = 4 * i
  local key = KEYS[i]
  local wait, full, remaining = 0, 0, 0
  if ARGV[at] == 'w' then
    local window = tonumber(ARGV[at + 1])
    local limit = tonumber(ARGV[at + 2])
    local cost = tonumber(ARGV[at + 3])
    -- Admissions a full window old or older no longer count.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now_us - window))
    local count = redis.call('ZCARD', key)
    held[i] = count
    full = leaves(key, 0, window)
    remaining = limit - count
    if count + cost > limit then
      reply[1] = 0
      wait = leaves(key, count + cost - limit - 1, window)
    end
  else
    local tau = tonumber(ARGV[at + 2])
    local extra = tonumber(ARGV[at + 3])
    -- TAT - now; a bucket in the past is as good as a full one.
    local tat = redis.call('GET', key)
    if tat then
      full = (tonumber(string.sub(tat, 1, -10)) - now_s) * 1e9
        + (tonumber(string.sub(tat, -9)) - now_ns)
      if full < 0 then full = 0 end
    end
    wait = full + extra - tau
    if wait > 0 then
      reply[1] = 0
    else
      wait = 0
    end
  end
  reply[3 * i - 1] = wait
  reply[3 * i] = full
  reply[3 * i + 1] = remaining
end

if reply[1] == 1 then
  for i = 1, #KEYS do
    local at = 4 * i
    local key = KEYS[i]
    if ARGV[at] == 'w' then
      local window = tonumber(ARGV[at + 1])
      local cost = tonumber(ARGV[at + 3])
      -- Members are `<time>-<n>`: the members of one score are all removed together,
      -- so numbering them from their count keeps every name unique.
      local score = string.format('%d', now_us)
      local first = redis.call('ZCOUNT', key, score, score)
      local args = {}
      for n = first, first + cost - 1 do
        args[#args + 1] = score
        args[#args + 1] = score .. '-' .. n
        if #args >= 1000 then
          redis.call('ZADD', key, unpack(args))
          args = {}
        end
      end
      if #args > 0 then
        redis.call('ZADD', key, unpack(args))
      end
      if expire then
        redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000)))
      end
      if held[i] == 0 then reply[3 * i] = window * 1000 end
      reply[3 * i + 1] = reply[3 * i + 1] - cost
    else
      local full = reply[3 * i] + tonumber(ARGV[at + 1]) + tonumber(ARGV[at + 3])
      local ns = now_ns + full
      local sub = math.fmod(ns, 1e9)
      local tat = string.format('%d%09d', now_s + (ns - sub) / 1e9, sub)
      if expire then
        redis.call('SET', key, tat, 'PX', string.format('%d', math.ceil(full / 1e6)))
      else
        redis.call('SET', key, tat)
      end
      reply[3 * i] = full
    end
  end
end
return reply
