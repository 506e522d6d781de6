-- keygate: GCRA (the generic cell rate algorithm, as governor implements it) for one or
-- more limits, checked and updated all-or-nothing in one atomic step.
--
-- KEYS[i]  the bucket of limit i: its theoretical arrival time (TAT) in nanoseconds
--          since the Unix epoch, in decimal; absent when the allowance is full.
-- ARGV[1]  the current time, whole seconds; '' to read the Redis server's clock (TIME)
-- ARGV[2]  nanoseconds within that second (ignored with the server's clock)
-- ARGV[3]  '1' to let each bucket expire when its allowance is full again, '0' not to
-- for limit i, ARGV[3i+1], ARGV[3i+2], ARGV[3i+3], in nanoseconds:
--          the emission interval T (window / limit), the burst tolerance
--          tau = T * (burst - 1), and the extra weight T * (cost - 1) of this request
--
-- Returns integers only: {allowed, wait_1, full_1, wait_2, full_2, ...}
--   allowed  1 if every limit admits the request (and every bucket was updated),
--            0 if any refuses it (and no bucket was touched)
--   wait_i   nanoseconds until limit i would admit the request (0 if it does now)
--   full_i   nanoseconds until bucket i is full again (after the update, if admitted)
--
-- Times are kept as differences from now, which stay far below 2^53 (Lua's numbers are
-- doubles), so the arithmetic is exact for any quota that fills up within 104 days.

local now_s, now_ns
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now_s = tonumber(time[1])
  now_ns = tonumber(time[2]) * 1000
else
  now_s = tonumber(ARGV[1])
  now_ns = tonumber(ARGV[2])
end

local reply = {1}
for i = 1, #KEYS do
  local at = 3 * i + 1
  local tau = tonumber(ARGV[at + 1])
  local extra = tonumber(ARGV[at + 2])
  -- TAT - now; a bucket in the past is as good as a full one.
  local full = 0
  local tat = redis.call('GET', KEYS[i])
  if tat then
    full = (tonumber(string.sub(tat, 1, -10)) - now_s) * 1e9
      + (tonumber(string.sub(tat, -9)) - now_ns)
    if full < 0 then full = 0 end
  end
  local wait = full + extra - tau
  if wait > 0 then
    reply[1] = 0
  else
    wait = 0
  end
  reply[2 * i] = wait
  reply[2 * i + 1] = full
end

if reply[1] == 1 then
  local expire = ARGV[3] == '1'
  for i = 1, #KEYS do
    local at = 3 * i + 1
    local full = reply[2 * i + 1] + tonumber(ARGV[at]) + tonumber(ARGV[at + 2])
    local ns = now_ns + full
    local sub = math.fmod(ns, 1e9)
    local tat = string.format('%d%09d', now_s + (ns - sub) / 1e9, sub)
    if expire then
      redis.call('SET', KEYS[i], tat, 'PX', string.format('%d', math.ceil(full / 1e6)))
    else
      redis.call('SET', KEYS[i], tat)
    end
    reply[2 * i + 1] = full
  end
end
return reply
