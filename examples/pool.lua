-- pool.lua: a Pool of worker processes.  First the pi series split into
-- chunks that the workers sum (the native kernel, a C function, is the
-- task); then a map whose tasks hang or crash a worker: each failure is
-- reported for its own item, the pool replaces the worker, and the other
-- items complete.
--   luamp examples/pool.lua [terms]
local process = require "process"
local pi = require "process.pi"

local N = math.tointeger(tonumber(arg and arg[1] or "") or 1e8)

do
  local pool <close> = process.Pool(2)
  local chunks, per = {}, N // 8
  for i = 1, 8 do
    chunks[i] = { (i - 1) * per + 1, i == 8 and N or i * per }
  end
  local sums = pool:starmap(pi.leibniz, chunks)
  local s = 0.0
  for i = 1, #chunks do s = s + sums[i] end
  print(("pi over %d terms in 8 tasks on 2 workers: %.12f"):format(N, 4 * s))
end

-- tasks that misbehave: item 3 never ends, item 5 kills its worker
local function task(x)
  if x == 3 then while true do end end
  if x == 5 then os.execute("kill -KILL " .. require("process").current_process().pid) end
  return x * x
end

local pool <close> = process.Pool{ processes = 2, timeout = 1 }
local _, err = pcall(pool.map, pool, task, { 1, 2, 3, 4, 5, 6 })
print("map raised:", (err:match("task %d+: timeout") and "timeout" or err))
local results = {}
for i = 1, 6 do results[i] = pool:apply_async(task, { i }) end
for i, r in ipairs(results) do
  local good, v = pcall(r.get, r)
  if good then
    print(i, "ok", v)
  elseif v:match("timeout") then
    print(i, "failed", "timeout")
  else
    print(i, "failed", v:match("worker exited with exitcode %-?%d+"))
  end
end
