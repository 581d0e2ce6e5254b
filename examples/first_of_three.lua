-- first_of_three.lua: wait for whichever of three processes ends first,
-- using their sentinels.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local function my_process(seconds)
  sleep(seconds)
end

math.randomseed(os.time())
local procs, by_sentinel = {}, {}
for i = 1, 3 do
  local p = process.Process{target = my_process, args = {math.random() * 0.5}, name = "p" .. i}
  p:start()
  procs[i] = p
  by_sentinel[p.sentinel] = p
end

local wait_list = {procs[1].sentinel, procs[2].sentinel, procs[3].sentinel}
local ready = process.wait(wait_list)
print("first to finish:", by_sentinel[ready[1]].name)

-- Process objects can be waited on directly too.
local rest = {}
for _, p in ipairs(procs) do
  if p ~= by_sentinel[ready[1]] then rest[#rest + 1] = p end
end
local next_ready = process.wait(rest)
print("next to finish:", next_ready[1].name)
for _, p in ipairs(procs) do p:join() end
print("all finished")
