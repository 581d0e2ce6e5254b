-- daemon.lua: a daemon does not keep the main program alive; it is
-- terminated when the main program ends, so it never prints "Exiting".
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function daemon()
  local p = process.current_process()
  print("Starting:", p.name, p.pid)
  io.stdout:flush()
  sleep(2)
  print("Exiting :", p.name, p.pid)
  io.stdout:flush()
end

local function non_daemon()
  local p = process.current_process()
  print("Starting:", p.name, p.pid)
  io.stdout:flush()
  print("Exiting :", p.name, p.pid)
  io.stdout:flush()
end

local d = process.Process{name = "daemon", target = daemon}
d.daemon = true
local n = process.Process{name = "non-daemon", target = non_daemon}
n.daemon = false

d:start()
sleep(0.5)
n:start()
