-- terminate.lua: the states a terminated process goes through.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function slow_worker()
  print("Starting worker")
  sleep(0.1)
  print("Finished worker")
end

local p = process.Process{target = slow_worker}
print("BEFORE:", p, p:is_alive())

p:start()
print("DURING:", p, p:is_alive())

p:terminate()
print("TERMINATED:", p, p:is_alive()) -- may still be alive: signals take a moment

p:join()
print("JOINED:", p, p:is_alive())
