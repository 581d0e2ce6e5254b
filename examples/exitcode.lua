-- exitcode.lua: what each way of ending gives as exitcode.
--   0 no error, > 0 the process exited with that code, < 0 killed by the
--   signal -exitcode.
local process = require "process"

local function sleep(seconds) process.wait({}, seconds) end

local funcs = {
  {"exit_error", function() os.exit(1) end},
  {"exit_ok", function() return end},
  {"return_value", function() return 1 end},
  {"raises", function() error("There was an error!") end},
  {"terminated", function() sleep(3) end},
}

local jobs = {}
for _, f in ipairs(funcs) do
  print("Starting process for", f[1])
  local j = process.Process{target = f[2], name = f[1]}
  jobs[#jobs + 1] = j
  j:start()
end

jobs[#jobs]:terminate()

for _, j in ipairs(jobs) do
  j:join()
  print(("%15s.exitcode = %d"):format(j.name, j.exitcode))
end
