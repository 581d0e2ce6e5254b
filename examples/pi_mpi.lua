-- pi_mpi.lua: examples/pi.lua over the ranks of an MPI job: the series is
-- split into 1, 2 and 4 shares, each run in a child forked on a serving
-- rank (rank 0 runs this script and waits without spinning).
--
--   mpiexec -n 3 luamp -l process.mpi examples/pi_mpi.lua [--terms N] [--procs 1,2,4]
--
-- Prints the same table as examples/pi.lua (the estimates are the same
-- to the last bit: the same split, the same kernel, the same sum);
-- "processes" counts the shares, spread over mpi.size() - 1 ranks.
local process = require "process"
local pi = require "process.pi"
local mpi = require "process.mpi"

local terms, procs = 1e9, {1, 2, 4}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--terms" then
    i = i + 1
    terms = math.tointeger(tonumber(arg[i]))
  elseif a == "--procs" then
    i = i + 1
    procs = {}
    for p in (arg[i] or ""):gmatch("[^,]+") do procs[#procs + 1] = math.tointeger(tonumber(p)) end
  else
    io.stderr:write("usage: mpiexec -n N luamp -l process.mpi examples/pi_mpi.lua [--terms N] [--procs 1,2,4]\n")
    os.exit(2)
  end
  i = i + 1
end
local bad_procs = #procs == 0
for _, p in ipairs(procs) do bad_procs = bad_procs or not p or p < 1 end
if not terms or terms < 1 or bad_procs then
  io.stderr:write("pi_mpi.lua: --terms wants a positive integer, --procs a list such as 1,2,4\n")
  os.exit(2)
end
if mpi.size() < 2 then
  io.stderr:write("pi_mpi.lua: run it as mpiexec -n N luamp -l process.mpi examples/pi_mpi.lua (N >= 2)\n")
  os.exit(2)
end

local rows = {}
for _, p in ipairs(procs) do
  local estimate, err, timing = pi.parallel{terms = terms, processes = p, mpi = true}
  rows[#rows + 1] = {terms = terms, processes = p, seconds = timing.wall, estimate = estimate,
    error = err, kernel = timing.impl}
end
local base
for _, r in ipairs(rows) do
  if r.processes == 1 then base = r.seconds end
end
if not base then
  local _, _, timing = pi.parallel{terms = terms, processes = 1, mpi = true}
  base = timing.wall
end
for _, r in ipairs(rows) do r.speedup = base / r.seconds end

print(("pi by the Leibniz series, kernel %s, %d CPUs"):format(rows[1].kernel, process.cpu_count()))
print(("%14s  %9s  %10s  %7s  %18s  %10s"):format("terms", "processes", "wall (s)", "speedup", "estimate", "error"))
for _, r in ipairs(rows) do
  print(("%14d  %9d  %10.4f  %7.2f  %18.15f  %10.3e"):format(r.terms, r.processes, r.seconds, r.speedup,
    r.estimate, r.error))
end
