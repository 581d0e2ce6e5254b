-- terminate.lua: the states a terminated process goes through.
local process = require "process"

-- Its work waits for go, which nobody sets: it is still running when
-- terminated, however slow the machine.
local function slow_worker(go)
  print("Starting worker")
  go:wait()
  print("Finished worker")
end

local p = process.Process{target = slow_worker, args = {process.Event()}}
print("BEFORE:", p, p:is_alive())

p:start()
print("DURING:", p, p:is_alive())

p:terminate()
print("TERMINATED:", p, p:is_alive()) -- may still be alive: signals take a moment

p:join()
print("JOINED:", p, p:is_alive())
