-- worker_args.lua: each worker gets a number to print.
local process = require "process"

local function worker(num)
  print("Worker:", num)
end

local jobs = {}
for i = 0, 4 do
  local p = process.Process{target = worker, args = {i}}
  jobs[#jobs + 1] = p
  p:start()
end
for _, p in ipairs(jobs) do p:join() end
