-- pi_series.lua: the series pi = 4 * (1 - 1/3 + 1/5 - ...) summed in plain
-- Lua, split across 1, 2 and 4 processes.  Each child prints its partial
-- sum (see pi.lua for the native kernels and results sent back).
--   luamp examples/pi_series.lua [terms]
local process = require "process"

local N = math.tointeger(tonumber(arg and arg[1] or "") or 1e7)

local function my_pi(m, n)
  local s = 0.0
  for k = m, n do
    if k % 2 == 1 then s = s + 1 / (2 * k - 1) else s = s - 1 / (2 * k - 1) end
  end
  print(("  terms %d..%d: %.17g"):format(m, n, 4 * s))
  io.stdout:flush()
end

for _, procs in ipairs{1, 2, 4} do
  print(("%d process%s, %d terms:"):format(procs, procs > 1 and "es" or "", N))
  local jobs = {}
  local per = N // procs
  for i = 1, procs - 1 do
    local p = process.Process{target = my_pi, args = {(i - 1) * per + 1, i * per}}
    p:start()
    jobs[#jobs + 1] = p
  end
  my_pi((procs - 1) * per + 1, N) -- the last share runs here
  for _, p in ipairs(jobs) do p:join() end
end
