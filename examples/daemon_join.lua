-- daemon_join.lua: joining the daemon lets it finish its work.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function daemon()
  local name = process.current_process().name
  print("Starting:", name)
  sleep(1)
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
sleep(0.5)
n:start()

d:join()
n:join()
