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

-- The child's share: the kernel over [first, last], in chunks when the
-- parent wants progress reports.
local function share(kernel, index, first, last, progress)
  local t0 = internal.now()
  local sum, c = 0.0, 0.0 -- Kahan: the chunks' sums are added exactly enough
  local step = progress and math.max((last - first + 1) // 50, 10000000) or (last - first + 1)
  local m = first
  while m <= last do
    local n = math.min(m + step - 1, last)
    local y = kernel(m, n) - c
    local t = sum + y
    c = (t - sum) - y
    sum = t
    if progress then progress:put({index, n - first + 1}) end
    m = n + 1
  end
  return sum, internal.now() - t0
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
  local procs = check_count(opts.processes or 1, "processes", math.min(terms, 4096))
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
  local queue = report and assert(process.Queue())
  local t0 = internal.now()
  local children, ps = {}, {}
  local per, extra = terms // procs, terms % procs
  local first = 1
  for i = 1, procs do
    local last = first + per - 1 + (i <= extra and 1 or 0)
    children[i] = {first = first, last = last}
    ps[i] = process.Process{target = share, args = {kernel, i, first, last, queue},
      name = fmt("pi-%d", i)}
    local ok, err, ename = ps[i]:start()
    if not ok then
      for j = 1, i - 1 do ps[j]:kill(); ps[j]:join() end
      return nil, err, ename
    end
    children[i].pid = ps[i].pid
    first = last + 1
  end
  if report then
    local done, total = {}, 0
    for i = 1, procs do done[i] = 0 end
    local pending = {}
    for i = 1, procs do pending[i] = ps[i] end
    while #pending > 0 do
      -- wake at least every 0.1 s to report, and as soon as a child ends
      for _, p in ipairs(process.wait(pending, 0.1)) do
        for j = #pending, 1, -1 do
          if pending[j] == p then table.remove(pending, j) end
        end
      end
      while true do
        local msg = queue:get(0)
        if msg == nil then break end
        total = total + msg[2] - done[msg[1]]
        done[msg[1]] = msg[2]
      end
      report(total, terms, done)
    end
  end
  local sum, c = 0.0, 0.0
  for i, p in ipairs(ps) do
    local code = p:join()
    if code ~= 0 then
      error(fmt("pi.parallel: child %d ended with exitcode %s%s", i, code,
        p.error and (": " .. p.error) or ""), 2)
    end
    local s, seconds = p:result()
    children[i].seconds = seconds
    local y = s - c
    local t = sum + y
    c = (t - sum) - y
    sum = t
    p:close()
  end
  if queue then queue:close() end
  local estimate = 4 * sum
  return estimate, estimate - math.pi, {wall = internal.now() - t0, impl = pi.impl, children = children}
end

return pi
