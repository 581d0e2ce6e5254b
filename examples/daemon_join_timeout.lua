-- daemon_join_timeout.lua: join(timeout) returns when the time is up even
-- if the process is still running.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function daemon()
  local name = process.current_process().name
  print("Starting:", name)
  sleep(2)
  print("Exiting :", name)
end

local function non_daemon()
  local name = process.current_process().name
  print("Starting:", name)
  print("Exiting :", name)
end

local d = process.Process{name = "daemon", target = daemon, daemon = true}
local n = process.Process{name = "non-daemon", target = non_daemon, daemon = false}

d:start()
n:start()

print("d:join(1)", d:join(1)) -- nil  timeout
print("d:is_alive()", d:is_alive())
n:join()
