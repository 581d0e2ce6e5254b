-- process.mpi: the Pool over the serving ranks of an MPI job.  Runs as
-- rank 0 of `mpiexec -n 4 lua5.4 -l process.mpi busted spec/mpi_spec.lua`
-- (spec/mpi_test.sh), so ranks 1..3 are the workers.
local process = require "process"
local internal = require "process.internal"
local pi = require "process.pi"
local mpi = require "process.mpi"
local H = require "spec.helper"

-- The servers are rank 0's siblings: the other children of mpiexec.
local function servers()
  local me = process.current_process().pid
  local f = assert(io.open("/proc/self/stat"))
  local ppid = tonumber(f:read("a"):match("^%d+ %b() %S+ (%d+)"))
  f:close()
  local list = {}
  for _, pid in ipairs(H.children(ppid)) do
    if pid ~= me then list[#list + 1] = pid end
  end
  return list
end

-- after_each, beside H.check: no task's child is left on any server
-- (a cancelled or timed-out one is being ended: give it a few seconds).
local function no_task_left()
  local deadline = internal.now() + 5
  local left
  repeat
    left = {}
    for _, s in ipairs(servers()) do
      for _, pid in ipairs(H.children(s)) do left[#left + 1] = pid end
    end
    if #left == 0 then return end
    process.wait({}, 0.02)
  until internal.now() > deadline
  error("task children left on the servers: " .. table.concat(left, " "), 2)
end

local function same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then error(path .. ": " .. type(a) .. " ~= " .. type(b)) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then error(path .. ": " .. math.type(a) .. " ~= " .. math.type(b)) end
    if a ~= a and b ~= b then return true end
    if a ~= b or 1 / a ~= 1 / b then error(path .. ": " .. tostring(a) .. " ~= " .. tostring(b)) end
  elseif type(a) == "table" then
    for k, v in pairs(a) do same(v, b[k], path .. "[" .. tostring(k) .. "]") end
    for k in pairs(b) do
      if a[k] == nil then error(path .. "[" .. tostring(k) .. "]: missing") end
    end
  elseif a ~= b then
    error(path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
  end
  return true
end

describe("process.mpi", function()
  before_each(H.snapshot)
  after_each(function()
    H.check()
    no_task_left()
  end)

  it("knows its rank, the size and the host", function()
    assert.equal(0, mpi.rank())
    assert.equal(4, mpi.size())
    assert.is_string(mpi.processor_name())
    assert.is_true(#mpi.processor_name() > 0)
  end)

  it("shows exactly its documented members (API.md): the transport stays private", function()
    local names = {}
    for k in pairs(mpi) do names[#names + 1] = k end
    table.sort(names)
    assert.same({"Pool", "processor_name", "rank", "size"}, names)
  end)

  it("map and imap over the ranks equal the local result exactly", function()
    local scale = 3
    local function f(x)
      if type(x) == "table" then return {x[1] * scale, name = x.name .. "!", nested = {x}} end
      if math.type(x) == "integer" then return x * scale end
      return x / scale
    end
    local inputs = {1, -7, math.maxinteger, math.mininteger, 0, 0.5, -0.0, 1 / 0, -1 / 0, 0 / 0,
      math.pi, 1e-300, {4, name = "a"}, {5, name = "b\0c"}}
    local want = {}
    for i, x in ipairs(inputs) do want[i] = f(x) end
    local pool <close> = mpi.Pool()
    local here <close> = process.Pool(2)
    local local_result = here:map(f, inputs)
    local_result.n = nil
    same(want, local_result)
    local got_map = pool:map(f, inputs)
    got_map.n = nil
    same(want, got_map)
    got_map = pool:map(f, inputs, 1)
    got_map.n = nil
    same(want, got_map)
    local got = {}
    for i, v in pool:imap(f, inputs) do got[i] = v end
    same(want, got)
    local seen = {}
    for i, v in pool:imap_unordered(f, inputs, 2) do
      assert.is_nil(seen[i])
      seen[i] = true
      same(want[i], v)
    end
    for i = 1, #inputs do assert.is_true(seen[i]) end
    local sm = pool:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}, {5, 6}})
    assert.same({3, 7, 11}, {table.unpack(sm, 1, 3)})
    assert.equal(3, #sm)
    local sums = {}
    for i, v in pool:istarmap(math.max, {{1, 9}, {8, 2}}) do sums[i] = v end
    same({9, 8}, sums)
  end)

  it("apply returns every value; targets may be C functions or carry upvalues", function()
    local pool <close> = mpi.Pool()
    local t = {k = 10}
    local a, b, c, d = pool:apply(function(x, y) return x + y + t.k, nil, "s", {t} end, {1, 2})
    assert.equal(13, a)
    assert.is_nil(b)
    assert.equal("s", c)
    assert.equal(10, d[1].k)
    assert.equal(pi.leibniz(1, 1000), pool:apply(pi.leibniz, {1, 1000}))
    assert.equal("3", pool:apply(tostring, {3}))
    -- the task ran on another rank, in a child of that rank
    local pid = pool:apply(function() return process.current_process().pid end)
    assert.is_not.equal(process.current_process().pid, pid)
  end)

  it("a task's error comes back with its remote traceback", function()
    local pool <close> = mpi.Pool()
    local ok, err = pcall(pool.apply, pool, function() error("boom on a rank") end)
    assert.is_false(ok)
    assert.matches("boom on a rank", err)
    assert.matches("stack traceback:", err)
    assert.matches("mpi_spec.lua:%d+", err)
    -- map raises the error of the lowest failing index
    ok, err = pcall(pool.map, pool, function(x)
      if x == 3 or x == 7 then error("bad item " .. x) end
      return x
    end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
    assert.is_false(ok)
    assert.matches("bad item 3", err)
  end)

  it("a task that crashes or calls os.exit fails only that task", function()
    local pool <close> = mpi.Pool()
    local r1 = pool:apply_async(function() os.exit(3) end)
    local r2 = pool:apply_async(function()
      os.execute("kill -SEGV " .. process.current_process().pid)
      return "survived"
    end)
    local r3 = pool:apply_async(function(x) return x * 2 end, {21})
    local ok, err = pcall(r1.get, r1)
    assert.is_false(ok)
    assert.matches("worker exited with exitcode 3 while running task %d+", err)
    ok, err = pcall(r2.get, r2)
    assert.is_false(ok)
    assert.matches("worker exited with exitcode %-11 while running task %d+", err)
    assert.equal(42, r3:get())
    assert.is_false(r1:successful())
    assert.is_true(r3:successful())
    -- every worker was replaced: the pool still serves
    local back = pool:map(function(x) return x end, {1, 2, 3, 4, 5, 6}, 1)
    assert.same({1, 2, 3, 4, 5, 6}, {table.unpack(back, 1, 6)})
  end)

  it("a task over its timeout is ended and fails with timeout; get(t) only stops waiting", function()
    local pool <close> = mpi.Pool{timeout = 0.3}
    local t0 = internal.now()
    local ok, err = pcall(pool.apply, pool, function() while true do end end)
    assert.is_false(ok)
    assert.matches("timeout", err)
    assert.is_true(internal.now() - t0 < 10)
    -- a per-call timeout overrides the pool's
    local r = pool:apply_async(function() return "late" end, {}, {timeout = 5})
    assert.equal("late", r:get())
    local slow = pool:apply_async(function() process.wait({}, 0.5) return "done" end, {}, {timeout = 10})
    local v, why = slow:get(0.01)
    assert.is_nil(v)
    assert.equal("timeout", why)
    assert.equal("done", slow:get())
  end)

  it("an idle rank 0 waiting on a result does not spin", function()
    local pool <close> = mpi.Pool()
    local r = pool:apply_async(function() process.wait({}, 1.0) return 1 end)
    local c0, t0 = os.clock(), internal.now()
    assert.equal(1, r:get())
    local cpu, wall = os.clock() - c0, internal.now() - t0
    assert.is_true(wall >= 0.9)
    assert.is_true(cpu < 0.25 * wall, ("rank 0 used %.3f s of CPU in %.3f s"):format(cpu, wall))
  end)

  it("many small tasks", function()
    local pool <close> = mpi.Pool()
    local xs = {}
    for i = 1, 20000 do xs[i] = i end
    local got = pool:map(function(x) return x * x end, xs)
    assert.equal(20000, #got)
    for i = 1, 20000 do assert.equal(i * i, got[i]) end
    local rs = {}
    for i = 1, 200 do rs[i] = pool:apply_async(function(x) return x + 1 end, {i}) end
    for i = 1, 200 do assert.equal(i + 1, rs[i]:get()) end
  end)

  it("large arguments and results cross at once without a deadlock", function()
    -- two workers per rank: a rank sends one's result while rank 0 sends
    -- the other a task (with blocking sends, both would wait forever)
    local pool <close> = mpi.Pool(6)
    local xs = {}
    for i = 1, 18 do xs[i] = string.rep(string.char(64 + i), 1 << 20) end
    local got = pool:map(function(s) return s:upper() .. s:sub(1, 1) end, xs, 1)
    for i = 1, 18 do
      assert.equal((1 << 20) + 1, #got[i])
      assert.equal(string.char(64 + i):upper(), got[i]:sub(1, 1))
    end
  end)

  it("imap over an iterator keeps a bounded number of chunks in flight", function()
    local pool <close> = mpi.Pool()
    local produced, consumed, ahead = 0, 0, 0
    local function gen()
      if produced >= 1000 then return nil end
      produced = produced + 1
      ahead = math.max(ahead, produced - consumed)
      return produced
    end
    for i, v in pool:imap(function(x) return -x end, gen, 5) do
      consumed = consumed + 1
      assert.equal(-i, v)
    end
    assert.equal(1000, consumed)
    -- process.pool keeps 2 chunks per worker and one more in flight
    assert.is_true(ahead < 200, "taken ahead: " .. ahead)
  end)

  it("arguments that cannot be sent raise at submit with their path; a bad result fails its task", function()
    local pool <close> = mpi.Pool()
    local ok, err = pcall(pool.apply_async, pool, print, {1, io.stdout})
    assert.is_false(ok)
    assert.matches("args%[2%]: cannot send a userdata", err)
    ok, err = pcall(pool.map, pool, print, {1, 2, coroutine.create(print)})
    assert.is_false(ok)
    assert.matches("list%[3%]: cannot send a thread", err)
    ok, err = pcall(pool.apply, pool, function() return io.stdout end)
    assert.is_false(ok)
    assert.matches("cannot send its result: result%[1%]: cannot send a userdata", err)
    assert.equal(5, pool:apply(function() return 5 end))
  end)

  it("callbacks, cancel and the initializer", function()
    local pool <close> = mpi.Pool{processes = 1, initializer = function(v) _G.INIT = v end, initargs = {"ready"}}
    local got, failed = {}, {}
    local r = pool:apply_async(function() return _G.INIT end, {}, {callback = function(v) got[#got + 1] = v end})
    local e = pool:apply_async(error, {"no"}, {error_callback = function(m) failed[#failed + 1] = m end})
    assert.equal("ready", r:get())
    assert.is_false(e:wait(10) == false)
    same({"ready"}, got)
    assert.matches("no", failed[1])
    -- one rank: the second task is queued behind the first
    local running = pool:apply_async(function() process.wait({}, 30) end)
    local queued = pool:apply_async(function() return "never" end)
    assert.is_true(queued:cancel())
    assert.is_true(running:cancel())
    assert.is_false(pcall(queued.get, queued))
    assert.is_false(pcall(running.get, running))
    assert.equal("ready", pool:apply(function() return _G.INIT end))
    local bad <close> = mpi.Pool{initializer = function() error("init failed") end}
    local ok, err = pcall(bad.apply, bad, print)
    assert.is_false(ok)
    assert.matches("initializer failed: .*init failed", err)
    local out = io.stdout
    ok, err = pcall(mpi.Pool, {initializer = function() return out end})
    assert.is_false(ok)
    assert.matches("initializer<upvalue 'out'>: cannot send a userdata", err, 1, true)
    ok, err = pcall(mpi.Pool, {initializer = print, initargs = {1, io.stdout}})
    assert.is_false(ok)
    assert.matches("initargs%[2%]: cannot send a userdata", err)
  end)

  it("close, join, terminate and <close>", function()
    local pool = mpi.Pool()
    assert.has_error(function() pool:join() end, "pool is still running")
    local r = pool:apply_async(function() return 1 end)
    pool:close()
    assert.has_error(function() pool:apply(print) end, "pool not running")
    pool:join()
    assert.equal(1, r:get())
    local p2 = mpi.Pool()
    local long = {}
    for i = 1, 5 do long[i] = p2:apply_async(function() process.wait({}, 30) end) end
    p2:terminate()
    for i = 1, 5 do
      local ok, err = pcall(long[i].get, long[i])
      assert.is_false(ok)
      assert.matches("pool terminated", err)
    end
    p2:join()
    -- leaving a scope by an error terminates
    local rs = {}
    local ok = pcall(function()
      local p3 <close> = mpi.Pool()
      for i = 1, 3 do rs[i] = p3:apply_async(function() process.wait({}, 30) end) end
      error("leave")
    end)
    assert.is_false(ok)
    for i = 1, 3 do assert.is_false(pcall(rs[i].get, rs[i])) end
    -- leaving it normally drains
    local done
    do
      local p4 <close> = mpi.Pool()
      done = p4:apply_async(function() process.wait({}, 0.2) return "drained" end)
    end
    assert.is_true(done:ready())
    assert.equal("drained", done:get())
  end)

  it("bad arguments raise at the caller", function()
    assert.has_error(function() mpi.Pool{processes = 0} end,
      "bad argument #1 to 'Pool' (processes must be at least 1)")
    assert.has_error(function() mpi.Pool("x") end, "bad argument #1 to 'Pool' (integer or table expected, got string)")
    assert.has_error(function() mpi.Pool{procs = 2} end, "bad argument #1 to 'Pool' (unknown option 'procs')")
    local pool <close> = mpi.Pool()
    assert.has_error(function() pool:apply(42) end, "bad argument #1 to 'apply' (function expected, got number)")
    assert.has_error(function() pool:map(print, 3) end, "bad argument #2 to 'map' (table expected, got number)")
    local r = pool:apply_async(function() process.wait({}, 0.2) end)
    assert.has_error(function() r:successful() end, "result is not ready")
    r:get()
  end)

  it("more workers than ranks are spread over the ranks; as_completed and process.wait take MPI results", function()
    local pool <close> = mpi.Pool(6)
    -- each task waits until all 6 run at once, so each has a worker of its
    -- own whatever the load: they meet in a file (the ranks share this
    -- machine), each adding a byte and waiting, with a deadline, for 6
    local meet = os.tmpname()
    finally(function() os.remove(meet) end)
    local rs = {}
    for i = 1, 6 do
      rs[i] = pool:apply_async(function(path)
        local now = require("process.internal").now
        local f = assert(io.open(path, "a"))
        assert(f:write("x"))
        f:close()
        local deadline = now() + 60
        repeat
          f = assert(io.open(path))
          local n = f:seek("end")
          f:close()
          if n >= 6 then return mpi.rank(), process.current_process().pid end
          process.wait({}, 0.005)
        until now() > deadline
        error("the 6 tasks never ran at once")
      end, {meet})
    end
    local per_rank, pids, n = {}, {}, 0
    for r in process.as_completed(rs, 60) do
      local rank, pid = r:get()
      per_rank[rank] = (per_rank[rank] or 0) + 1
      assert.is_nil(pids[pid])
      pids[pid] = true
      n = n + 1
    end
    assert.equal(6, n)
    assert.same({2, 2, 2}, per_rank)
    local r = pool:apply_async(function() process.wait({}, 0.2) return "w" end)
    local ready = process.wait({r}, 60)
    assert.equal(r, ready[1])
    assert.equal("w", r:get())
  end)

  it("pi.parallel splits the series over the ranks, bit-identical to the local split", function()
    for _, p in ipairs{1, 2, 3, 5} do
      local local_est = pi.parallel{terms = 10000000, processes = p}
      local est, err, timing = pi.parallel{terms = 10000000, processes = p, mpi = true}
      assert.equal(local_est, est)
      assert.is_true(math.abs(err) < 1e-6)
      assert.equal(p, #timing.children)
    end
  end)
end)
