-- pi.lua: pi = 4 * (1 - 1/3 + 1/5 - ...), the series split across 1, 2
-- and 4 child processes running the native kernel (process.pi).
--
--   luamp examples/pi.lua [--terms N] [--procs 1,2,4] [--json] [--help]
--   mpiexec -n 3 luamp -l process.mpi examples/pi.lua --mpi [--terms N] [--procs 1,2,4]
--
-- Prints terms, processes, wall time, speedup over one process, the
-- estimate and its error.  On a terminal, children report their progress
-- while they run; --json prints the same table as JSON.  With --mpi each
-- share runs in a child forked on a serving rank of an MPI job (rank 0
-- runs this script and waits without spinning; no progress): the same
-- split, kernel and sum, so the same estimates to the last bit;
-- "processes" counts the shares, spread over mpi.size() - 1 ranks.
local process = require "process"
local pi = require "process.pi"

local terms, procs, json, use_mpi = 1e9, {1, 2, 4}, false, false
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
  elseif a == "--json" then
    json = true
  elseif a == "--mpi" then
    use_mpi = true
  else
    -- asked-for help goes to stdout and succeeds; a bad option is an error
    local help = a == "--help" or a == "-h"
    local out = help and io.stdout or io.stderr
    if not help then out:write("pi.lua: unknown option '", a, "'\n") end
    out:write("usage: luamp examples/pi.lua [--terms N] [--procs 1,2,4] [--json]\n" ..
      "       mpiexec -n N luamp -l process.mpi examples/pi.lua --mpi [--terms N] [--procs 1,2,4] [--json]\n")
    os.exit(help and 0 or 2)
  end
  i = i + 1
end
local bad_procs = #procs == 0
for _, p in ipairs(procs) do bad_procs = bad_procs or not p or p < 1 end
if not terms or terms < 1 or bad_procs then
  io.stderr:write("pi.lua: --terms wants a positive integer, --procs a list such as 1,2,4\n")
  os.exit(2)
end

if use_mpi and require("process.mpi").size() < 2 then
  io.stderr:write("pi.lua: --mpi runs as mpiexec -n N luamp -l process.mpi examples/pi.lua --mpi (N >= 2)\n")
  os.exit(2)
end

local tty = not json and not use_mpi and os.execute("test -t 1")

local function progress(done, total)
  io.write(("\r  %5.1f%% of %d terms"):format(100 * done / total, total))
  io.flush()
end

local rows = {}
for _, p in ipairs(procs) do
  local estimate, err, timing = pi.parallel{terms = terms, processes = p, progress = tty and progress or nil,
    mpi = use_mpi}
  if tty then io.write("\r\27[K") end
  rows[#rows + 1] = {terms = terms, processes = p, seconds = timing.wall, estimate = estimate,
    error = err, kernel = timing.impl}
end
-- speedup is against one process: measured in its row, or separately
local base
for _, r in ipairs(rows) do
  if r.processes == 1 then base = r.seconds end
end
if not base then
  local _, _, timing = pi.parallel{terms = terms, processes = 1, mpi = use_mpi}
  base = timing.wall
end
for _, r in ipairs(rows) do r.speedup = base / r.seconds end

if json then
  local cjson = require "cjson"
  -- lua-cjson prints at most 14 significant digits: the estimate also
  -- goes as an exact decimal string
  cjson.encode_number_precision(14)
  for _, r in ipairs(rows) do r.estimate_exact = ("%.17g"):format(r.estimate) end
  print(cjson.encode({kernel = rows[1].kernel, cpus = process.cpu_count(), rows = rows}))
else
  print(("pi by the Leibniz series, kernel %s, %d CPUs"):format(rows[1].kernel, process.cpu_count()))
  print(("%14s  %9s  %10s  %7s  %18s  %10s"):format("terms", "processes", "wall (s)", "speedup", "estimate", "error"))
  for _, r in ipairs(rows) do
    print(("%14d  %9d  %10.4f  %7.2f  %18.15f  %10.3e"):format(r.terms, r.processes, r.seconds, r.speedup,
      r.estimate, r.error))
  end
end
