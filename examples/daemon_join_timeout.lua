-- daemon_join_timeout.lua: join(timeout) returns when the time is up even
-- if the process is still running.  (Python's version has the daemon sleep
-- longer than the timeout; here its work waits for an Event nobody sets,
-- so it is still running whatever the machine's load, and it ends, killed,
-- with the program.)
local process = require "process"

local function daemon(go)
  local name = process.current_process().name
  print("Starting:", name)
  go:wait()
  print("Exiting :", name)
end

local function non_daemon()
  local name = process.current_process().name
  print("Starting:", name)
  print("Exiting :", name)
end

local d = process.Process{name = "daemon", target = daemon, args = {process.Event()}, daemon = true}
local n = process.Process{name = "non-daemon", target = non_daemon, daemon = false}

d:start()
n:start()

print("d:join(1)", d:join(1)) -- nil  timeout
print("d:is_alive()", d:is_alive())
n:join()
