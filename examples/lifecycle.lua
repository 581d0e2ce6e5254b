-- lifecycle.lua: a process is new, then running, then terminated; start()
-- does not block, join() waits, exitcode and pid tell what happened.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function task(name, duration)
  print(("[%s] Starting"):format(name))
  sleep(duration)
  print(("[%s] Done after %ss"):format(name, duration))
end

local p = process.Process{target = task, args = {"Worker-1", 0.2}}
print("is_alive() before start:", p:is_alive())
p:start()
print("is_alive() after start:", p:is_alive())
print("pid:", math.type(p.pid))
p:join()
print("is_alive() after join:", p:is_alive())
print("exitcode:", p.exitcode)

-- A custom process: extend Process and override run().
local Greeter = process.Process:extend()
function Greeter:run()
  print(("Hello from %s, greeting %s"):format(process.current_process().name, self.whom))
end
local g = Greeter{name = "greeter", whom = "Alice"}
g:start()
g:join()

-- Stopping a long task, once it has done three steps.
local three = process.Event()
local long = process.Process{target = function()
  for i = 0, 99 do
    print("Step " .. i)
    io.stdout:flush()
    if i == 2 then three:set() end
    sleep(0.1)
  end
end}
long:start()
three:wait()
long:terminate()
long:join()
print("Process exitcode:", long.exitcode)
print("Main process finished")
