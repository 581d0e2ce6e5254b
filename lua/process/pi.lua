-- process/pi.lua - process.pi: the native pi kernels (C, src/kernels) and
-- pi.parallel, which splits a series across child processes.  Compiled
-- into the library; called with the C table of kernels, returns it.
local pi = ...
local process = require "process"
local internal = require "process.internal"

local fmt = string.format
local MAX = 1 << 53

local kernels = {leibniz = pi.leibniz}

local function check_count(v, name, max)
  local n = math.tointeger(v)
  if n == nil then
    error(fmt("bad argument #1 to 'parallel' (%s must be an integer, got %s)", name,
      type(v) == "number" and tostring(v) or type(v)), 3)
  end
  if n < 1 or n > max then
    error(fmt("bad argument #1 to 'parallel' (%s must be between 1 and %d)", name, max), 3)
  end
  return n
end

-- Kahan's compensated sum: add(x) adds a term, add() returns the sum.
-- The shares' (and a share's chunks') sums are added exactly enough, and
-- in the same order everywhere, so every path gives the same bits.
local function compensated()
  local sum, c = 0.0, 0.0
  return function(x)
    if x then
      local y = x - c
      local t = sum + y
      c = (t - sum) - y
      sum = t
    end
    return sum
  end
end

-- The split of terms 1..N into P shares {first =, last =}: the first
-- N % P shares are one term longer.
local function split(terms, procs)
  local children, first = {}, 1
  local per, extra = terms // procs, terms % procs
  for i = 1, procs do
    local last = first + per - 1 + (i <= extra and 1 or 0)
    children[i] = {first = first, last = last}
    first = last + 1
  end
  return children
end

-- The child's share: the kernel over [first, last].  With progress (an
-- int64 process.Array shared with the parent), progress[index] counts the
-- terms done: the native kernel stores it from C (luamp_shared_get), a
-- Lua kernel is called in chunks here.
local function share(kernel, index, first, last, progress)
  local t0 = internal.now()
  if not progress then return kernel(first, last), internal.now() - t0 end
  if kernel == pi.leibniz then return kernel(first, last, progress, index), internal.now() - t0 end
  local add = compensated()
  local step = math.max((last - first + 1) // 50, 10000000)
  local m = first
  while m <= last do
    local n = math.min(m + step - 1, last)
    add(kernel(m, n))
    progress[index] = n - first + 1
    m = n + 1
  end
  return add(), internal.now() - t0
end

-- pi.parallel{terms = N, mpi = true [, processes = P]}: the same split
-- and the same sum over P serving ranks of an MPI job (default: all of
-- them), through process.mpi's Pool; progress is not reported.  Each
-- share's child is forked on its rank, so the estimate is bit-identical
-- to the local run with the same P.
local function parallel_mpi(kernel, terms, procs)
  local mpi = require "process.mpi"
  local servers = mpi.size() - 1
  if servers < 1 then
    error("pi.parallel: mpi = true needs serving ranks (mpiexec -n N, N >= 2, -l process.mpi)", 3)
  end
  procs = check_count(procs or servers, "processes", math.min(terms, internal.WAIT_MAX))
  local t0 = internal.now()
  local pool <close> = mpi.Pool{processes = math.min(procs, servers)}
  local children, results = split(terms, procs), {}
  for i, ch in ipairs(children) do
    results[i] = pool:apply_async(share, {kernel, i, ch.first, ch.last})
  end
  local add = compensated()
  for i, r in ipairs(results) do
    local s, seconds = r:get()
    children[i].seconds = seconds
    add(s)
  end
  local estimate = 4 * add()
  return estimate, estimate - math.pi, {wall = internal.now() - t0, impl = pi.impl, children = children,
    ranks = math.min(procs, servers)}
end

-- pi.parallel{terms = N, processes = P [, kernel = "leibniz"]
--             [, progress = function(done, total, per_child)]}
-- -> estimate, error against math.pi, timing
-- timing = {wall = seconds, impl = code path, children = {{first =, last =,
--           seconds =, pid =}, ...}}
function pi.parallel(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'parallel' (table expected, got " .. type(opts) .. ")", 2)
  end
  local terms = check_count(opts.terms, "terms", MAX)
  local procs = check_count(opts.processes or 1, "processes", math.min(terms, internal.WAIT_MAX))
  local kernel = opts.kernel or "leibniz"
  if type(kernel) == "string" then
    kernel = kernels[kernel] or error(fmt("bad argument #1 to 'parallel' (unknown kernel '%s')", kernel), 2)
  elseif type(kernel) ~= "function" then
    error("bad argument #1 to 'parallel' (kernel must be a name or a function)", 2)
  end
  local report = opts.progress
  if report ~= nil and type(report) ~= "function" then
    error("bad argument #1 to 'parallel' (progress must be a function)", 2)
  end
  if opts.mpi then
    return parallel_mpi(kernel, terms, opts.processes)
  end
  local progress = report and assert(process.Array("int64", procs, {lock = false}))
  local t0 = internal.now()
  local children, ps = split(terms, procs), {}
  for i, ch in ipairs(children) do
    ps[i] = process.Process{target = share, args = {kernel, i, ch.first, ch.last, progress},
      name = fmt("pi-%d", i)}
    local ok, err, ename = ps[i]:start()
    if not ok then
      for j = 1, i - 1 do ps[j]:kill(); ps[j]:join() end
      return nil, err, ename
    end
    ch.pid = ps[i].pid
  end
  if report then
    local pending = {}
    for i = 1, procs do pending[i] = ps[i] end
    local function tell()
      local done, total = progress:totable(), 0
      for i = 1, procs do total = total + done[i] end
      report(total, terms, done)
    end
    while #pending > 0 do
      -- report at least every 0.1 s, and as soon as a child ends
      for _, p in ipairs(process.wait(pending, 0.1)) do
        for j = #pending, 1, -1 do
          if pending[j] == p then table.remove(pending, j) end
        end
      end
      tell()
    end
  end
  local add = compensated()
  for i, p in ipairs(ps) do
    local code = p:join()
    if code ~= 0 then
      error(fmt("pi.parallel: child %d ended with exitcode %s%s", i, code,
        p.error and (": " .. p.error) or ""), 2)
    end
    local s, seconds = p:result()
    children[i].seconds = seconds
    add(s)
    p:close()
  end
  local estimate = 4 * add()
  return estimate, estimate - math.pi, {wall = internal.now() - t0, impl = pi.impl, children = children}
end

return pi
