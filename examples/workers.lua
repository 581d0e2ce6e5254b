-- workers.lua: start five processes that each print "Worker".
-- (The output may interleave: each process writes to the same stdout.)
local process = require "process"

local function worker()
  print("Worker")
end

for _ = 1, 5 do
  process.Process{target = worker}:start()
end
-- No join needed: the main process waits for its non-daemonic children
-- when it ends.
