-- daemon_join.lua: joining the daemon lets it finish its work.  (Python's
-- version sleeps to order the two; here Events do, so the output is
-- always the same.)
local process = require "process"

-- The daemon's work outlasts the non-daemon's: it goes on until told.
local function daemon(started, go)
  local name = process.current_process().name
  print("Starting:", name)
  started:set()
  go:wait()
  print("Exiting :", name)
end

local function non_daemon()
  local name = process.current_process().name
  print("Starting:", name)
  print("Exiting :", name)
end

local started, go = process.Event(), process.Event()
local d = process.Process{name = "daemon", target = daemon, args = {started, go}, daemon = true}
local n = process.Process{name = "non-daemon", target = non_daemon, daemon = false}

d:start()
started:wait()
n:start()

n:join()
go:set()
d:join()
