-- daemon.lua: a daemon does not keep the main program alive; it is
-- terminated when the main program ends, so it never prints "Exiting".
-- (Python's version sleeps to order things; here Events do, so the output
-- is the same on any machine.)
local process = require "process"

-- Its work waits for go, which nobody sets: only the program's end stops it.
local function daemon(started, go)
  local p = process.current_process()
  print("Starting:", p.name, p.pid)
  io.stdout:flush()
  started:set()
  go:wait()
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

local started = process.Event()
local d = process.Process{name = "daemon", target = daemon, args = {started, process.Event()}}
d.daemon = true
local n = process.Process{name = "non-daemon", target = non_daemon}
n.daemon = false

d:start()
started:wait()
n:start()
