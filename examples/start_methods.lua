-- start_methods.lua: the same work under each start method.  fork copies
-- this process; spawn and forkserver start from a fresh runtime, so what
-- the target uses travels with it (here: the upvalue `weights`, and
-- process.pi by its module name) and globals of ours are not there.
local process = require "process"
local pi = require "process.pi"

local weights = {1, 2, 3}
GREETING = "set in the parent"

local function work(n)
  local sum = 0
  for _, w in ipairs(weights) do sum = sum + w * n end
  return sum, 4 * pi.leibniz(1, 1000000), GREETING
end

for _, method in ipairs(process.get_all_start_methods()) do
  local ctx = process.get_context(method)
  local p = ctx.Process{target = work, args = {10}}
  assert(p:start())
  p:join()
  local sum, est, greeting = p:result()
  print(("%-10s exitcode %d  sum %d  pi %.6f  global %s"):format(
    method, p.exitcode, sum, est, tostring(greeting)))
end
