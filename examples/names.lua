-- names.lua: named processes, and the default name of an unnamed one.
local process = require "process"

-- Lua has no sleep: waiting on no objects with a timeout is one.
local function sleep(seconds) process.wait({}, seconds) end

local function worker()
  local name = process.current_process().name
  print(name, "Starting")
  sleep(0.2)
  print(name, "Exiting")
end

local function my_service()
  local name = process.current_process().name
  print(name, "Starting")
  sleep(0.3)
  print(name, "Exiting")
end

local service = process.Process{name = "my_service", target = my_service}
local worker_1 = process.Process{name = "worker 1", target = worker}
local worker_2 = process.Process{target = worker} -- default name: Process-3

worker_1:start()
worker_2:start()
service:start()
