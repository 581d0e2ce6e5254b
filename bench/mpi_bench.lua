-- bench/mpi_bench.lua: process.mpi's Pool against the local Pool, side by
-- side in one MPI job (bench/run.lua runs it and prints the rows):
--
--   mpiexec -n 3 luamp -l process.mpi bench/mpi_bench.lua [--quick]
--
-- Both pools have 2 workers and run the same calls, in alternating
-- rounds; prints "name median" lines (seconds).
local process = require "process"
local pi = require "process.pi"
local mpi = require "process.mpi"

local quick = arg[1] == "--quick"
local now = process._now

local function median(v)
  table.sort(v)
  local n = #v
  return n % 2 == 1 and v[(n + 1) // 2] or (v[n // 2] + v[n // 2 + 1]) / 2
end

local remote <close> = mpi.Pool(2)
local here <close> = process.get_context("fork").Pool(2)
-- both pools warm: workers started, the function known to them
remote:map(function(x) return x end, {1, 2, 3, 4})
here:map(function(x) return x end, {1, 2, 3, 4})

local N = quick and 1e9 or 1e10
local shares = {{1, N // 2}, {N // 2 + 1, N}}
local function pi_by(pool)
  local t = now()
  local s = pool:starmap(pi.leibniz, shares, 1)
  local wall = now() - t
  assert(math.abs(4 * (s[1] + s[2]) - math.pi) < 1e-6)
  return wall
end

local function round_trip(pool, n)
  local f = function(x) return x + 1 end
  pool:apply(f, {0})
  local t = now()
  for i = 1, n do pool:apply(f, {i}) end
  return (now() - t) / n
end

local pm, pl, rm, rl = {}, {}, {}, {}
local rounds = quick and 3 or 5
for r = 1, rounds do
  pm[r] = pi_by(remote)
  pl[r] = pi_by(here)
  rm[r] = round_trip(remote, quick and 50 or 500)
  rl[r] = round_trip(here, quick and 50 or 500)
end

-- rank 0's CPU while it waits on a task that sleeps
local busy = remote:apply_async(function() process.wait({}, 2) end)
local c0, t0 = os.clock(), now()
busy:get()
local idle_cpu = (os.clock() - c0) / (now() - t0)

print(("pi_terms %d"):format(N))
print(("pi_mpi %.9g"):format(median(pm)))
print(("pi_local %.9g"):format(median(pl)))
print(("rt_mpi %.9g"):format(median(rm)))
print(("rt_local %.9g"):format(median(rl)))
print(("idle_cpu %.9g"):format(idle_cpu))
