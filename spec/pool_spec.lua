-- spec/pool_spec.lua - process.Pool: the surface (after CPython's
-- _TestPool, _TestPoolWorkerErrors, _TestPoolWorkerLifetime and the
-- initializer tests), under every start method.  Failure semantics are in
-- pool_failures_spec.lua.
local H = require "spec.helper"
local process = require "process"

local function sq(x) return x * x end
local function add(a, b) return a + b end
local function sleep(s) require("process").wait({}, s) end

H.each_method(function(ctx, method)
  describe("Pool (" .. method .. ")", function()
    before_each(H.snapshot)
    after_each(H.check)

    it("apply returns every value, nils included, and raises the task's error", function()
      local pool <close> = ctx.Pool(2)
      local a, b, c, d = pool:apply(function(x) return x, nil, x + 1, nil end, { 5 })
      assert.are.same({ 5, nil, 6, nil }, { a, b, c, d })
      assert.are.equal(7, pool:apply(add, { 3, 4 }))
      assert.are.equal(0, select("#", pool:apply(function() end)))
      local ok, err = pcall(pool.apply, pool, function() error("boom") end)
      assert.is_false(ok)
      assert.matches("boom", err)
      assert.matches("stack traceback", err) -- the child's traceback comes along
    end)

    it("apply_async: get, wait, ready, successful", function()
      local pool <close> = ctx.Pool(2)
      local r = pool:apply_async(add, { 1, 2 })
      assert.is_true(r:wait(10))
      assert.is_true(r:ready())
      assert.is_true(r:successful())
      assert.are.equal(3, r:get())
      local e = pool:apply_async(function() error("bad task") end)
      assert.is_true(e:wait(10))
      assert.is_false(e:successful())
      assert.has_error(function() e:get() end)
      assert.matches("bad task", select(2, pcall(e.get, e)))
      -- successful() before the end raises (CPython: ValueError)
      local slow = pool:apply_async(function() sleep(0.3) return 1 end)
      if not slow:ready() then
        assert.has_error(function() slow:successful() end, "result is not ready")
      end
      assert.are.equal(1, slow:get(10))
    end)

    it("get(timeout) stops waiting, the task goes on (test_async_timeout)", function()
      local pool <close> = ctx.Pool(1)
      local long = pool:apply_async(function() sleep(5) end)
      local t0 = process._now()
      local v, why = long:get(0.05)
      assert.is_nil(v)
      assert.are.equal("timeout", why)
      assert.is_true(process._now() - t0 < 4, "get(0.05) waited for the task")
      assert.is_false(long:wait(0))
      assert.is_true(long:cancel())
      local r = pool:apply_async(function() sleep(0.3) return "late" end)
      assert.are.same({ nil, "timeout" }, { r:get(0.01) })
      assert.are.equal("late", r:get(20))
    end)

    it("callbacks run in the caller during a later blocking call", function()
      local pool <close> = ctx.Pool(2)
      local got, errs = {}, {}
      local rs = {}
      for i = 1, 6 do
        rs[i] = pool:apply_async(function(x)
          if x == 4 then error("four") end
          return x * 10
        end, { i }, { callback = function(v) got[#got + 1] = v end,
                      error_callback = function(e) errs[#errs + 1] = e end })
      end
      for _, r in ipairs(rs) do r:wait(10) end
      table.sort(got)
      assert.are.same({ 10, 20, 30, 50, 60 }, got)
      assert.are.equal(1, #errs)
      assert.matches("four", errs[1])
    end)

    it("map and starmap keep input order for any chunksize; empty lists", function()
      local pool <close> = ctx.Pool(2)
      local xs = {}
      for i = 1, 100 do xs[i] = i end
      local want = {}
      for i = 1, 100 do want[i] = i * i end
      for _, cs in ipairs({ false, 1, 7, 100, 1000 }) do
        local got = pool:map(sq, xs, cs or nil)
        assert.are.same(want, { table.unpack(got, 1, 100) })
        assert.are.equal(100, got.n)
      end
      assert.are.same({ 3, 7 }, { table.unpack(pool:starmap(add, { { 1, 2 }, { 3, 4 } })) })
      assert.are.equal(0, #pool:map(sq, {}))
      assert.are.equal(0, #pool:starmap(add, {}))
      local r = pool:map_async(sq, { 2, 3 })
      assert.are.same({ 4, 9 }, { table.unpack(r:get(10)) })
      r = pool:starmap_async(add, { { 2, 3 } })
      assert.are.same({ 5 }, { table.unpack(r:get(10)) })
    end)

    it("large chunks and results after short tasks never deadlock", function()
      local pool <close> = ctx.Pool(2)
      local small = {}
      for i = 1, 64 do small[i] = i end
      pool:map(sq, small, 1) -- short tasks: the pool hands out several at once
      local xs = {}
      for i = 1, 60000 do xs[i] = i end
      local r = pool:map_async(sq, xs, 2000)
      local got = assert(r:get(60))
      assert.are.equal(60000, got.n)
      assert.are.equal(60000 * 60000, got[60000])
      local strs = {}
      for i = 1, 40 do strs[i] = string.rep("x", 20000 + i) end
      r = pool:map_async(function(s) return s .. s end, strs, 1)
      got = assert(r:get(60))
      for i = 1, 40 do assert.are.equal(2 * (20000 + i), #got[i]) end
      -- floats, nan, -0.0 and huge integers cross exactly on the fast path
      got = pool:map(function(x) return x end, { 1.5, 0 / 0, -0.0, math.maxinteger, math.mininteger, 2 ^ 53 })
      assert.are.equal(1.5, got[1])
      assert.is_true(got[2] ~= got[2])
      assert.are.equal("-0.0", tostring(got[3]))
      assert.are.equal(math.maxinteger, got[4])
      assert.are.equal(math.mininteger, got[5])
      assert.are.equal("float", math.type(got[6]))
    end)

    it("map keeps nil results in place", function()
      local pool <close> = ctx.Pool(2)
      local got = pool:map(function(x) if x % 2 == 0 then return x end end, { 1, 2, 3, 4 }, 1)
      assert.are.equal(4, got.n)
      assert.is_nil(got[1])
      assert.are.equal(2, got[2])
      assert.is_nil(got[3])
      assert.are.equal(4, got[4])
    end)

    it("map raises the error of the lowest failing index (test_map_no_failfast)", function()
      local pool <close> = ctx.Pool(2)
      local xs = {}
      for i = 1, 40 do xs[i] = i end
      for _, cs in ipairs({ 1, 3, 40 }) do
        local ok, err = pcall(pool.map, pool, function(x)
          if x == 7 or x == 30 then error("item " .. x) end
          return x
        end, xs, cs)
        assert.is_false(ok)
        assert.matches("item 7", err)
      end
      -- the pool is still usable after a failed map
      assert.are.same({ 1, 4 }, { table.unpack(pool:map(sq, { 1, 2 })) })
    end)

    it("imap, imap_unordered and istarmap over lists and iterator functions", function()
      local pool <close> = ctx.Pool(2)
      local seen = {}
      for i, v in pool:imap(sq, { 1, 2, 3, 4, 5 }) do seen[#seen + 1] = { i, v } end
      assert.are.same({ { 1, 1 }, { 2, 4 }, { 3, 9 }, { 4, 16 }, { 5, 25 } }, seen)
      local n = 0
      local function gen()
        n = n + 1
        if n <= 30 then return n end
      end
      local total, count = 0, 0
      for i, v in pool:imap_unordered(sq, gen, 4) do
        assert.are.equal(i * i, v)
        total, count = total + v, count + 1
      end
      assert.are.equal(30, count)
      assert.are.equal(9455, total)
      local out = {}
      for i, v in pool:istarmap(add, { { 1, 1 }, { 2, 2 }, { 3, 3 } }, 2) do out[i] = v end
      assert.are.same({ 2, 4, 6 }, out)
      for _ in pool:imap(sq, {}) do error("empty iterable yields nothing") end
    end)

    it("imap keeps a bounded number of chunks in flight over an endless iterator", function()
      local pool <close> = ctx.Pool(2)
      local pulled = 0
      local function forever()
        pulled = pulled + 1
        return pulled
      end
      for i, v in pool:imap(sq, forever, 3) do
        assert.are.equal(i * i, v)
        if i == 10 then break end
      end
      -- 2 * processes + 1 chunks of 3 beyond what was consumed, and a chunk
      assert.is_true(pulled <= 10 + (2 * 2 + 1) * 3 + 3, "pulled " .. pulled)
      -- a slow first item: later results wait for it, but no more are pulled
      pulled = 0
      for i, v in pool:imap(function(x)
        if x == 1 then require("process").wait({}, 0.5) end
        return x
      end, forever, 1) do
        assert.are.equal(i, v)
        if i == 1 then
          assert.is_true(pulled <= (2 * 2 + 1) + 1, "pulled " .. pulled .. " behind a slow item")
          break
        end
      end
    end)

    it("imap raises a failing item's error at that item", function()
      local pool <close> = ctx.Pool(2)
      local got = {}
      local ok, err = pcall(function()
        for i, v in pool:imap(function(x)
          if x == 3 then error("three") end
          return x
        end, { 1, 2, 3, 4 }) do got[i] = v end
      end)
      assert.is_false(ok)
      assert.matches("three", err)
      assert.are.same({ 1, 2 }, got)
    end)

    it("an iterator that raises stops imap with its error", function()
      local pool <close> = ctx.Pool(2)
      local k = 0
      local ok, err = pcall(function()
        for _ in pool:imap(sq, function()
          k = k + 1
          if k == 4 then error("iterator broke") end
          return k
        end) do end
      end)
      assert.is_false(ok)
      assert.matches("iterator broke", err)
    end)

    it("close, join and terminate follow Python's rules", function()
      local pool = ctx.Pool(2)
      assert.has_error(function() pool:join() end, "pool is still running")
      local r = pool:apply_async(function() sleep(0.1) return 1 end)
      pool:close()
      assert.has_error(function() pool:apply(sq, { 1 }) end, "pool not running")
      assert.has_error(function() pool:map(sq, { 1 }) end, "pool not running")
      assert.has_error(function() pool:imap(sq, { 1 }) end, "pool not running")
      assert.is_true(pool:join(10))
      assert.are.equal(1, r:get(0))  -- close + join drains the queue
      pool:terminate()                -- after join: a no-op
      local p2 = ctx.Pool(2)
      local pending = {}
      for i = 1, 4 do pending[i] = p2:apply_async(function() sleep(30) end) end
      local t0 = process._now()
      p2:terminate()
      assert.is_true(process._now() - t0 < 5)
      for _, x in ipairs(pending) do
        assert.is_true(x:ready())
        local ok, err = pcall(x.get, x)
        assert.is_false(ok)
        assert.matches("pool terminated", err)
      end
      assert.is_true(p2:join(5))
    end)

    it("join(timeout) returns nil, 'timeout' while tasks run", function()
      local pool = ctx.Pool(1)
      pool:apply_async(function() sleep(0.5) end)
      pool:close()
      local ok, why = pool:join(0.05)
      assert.is_nil(ok)
      assert.are.equal("timeout", why)
      assert.is_true(pool:join(10))
    end)

    it("<close>: a normal exit drains, an error exit terminates (test_context)", function()
      local r
      do
        local pool <close> = ctx.Pool(2)
        r = pool:apply_async(function() sleep(0.1) return "drained" end)
      end
      assert.are.equal("drained", r:get(0))
      local pending
      local ok, err = pcall(function()
        local pool <close> = ctx.Pool(2)
        pending = pool:apply_async(function() sleep(30) end)
        error("leaving by an error")
      end)
      assert.is_false(ok)
      assert.matches("leaving by an error", err)
      assert.is_true(pending:ready())
      assert.matches("pool terminated", select(2, pcall(pending.get, pending)))
    end)

    it("a collected pool terminates its workers", function()
      -- made in a function of its own: a block's local may stay on the stack
      local pids = (function()
        local pool = ctx.Pool(2)
        return pool:map(function() return require("process").current_process().pid end, { 1, 2, 3, 4 }, 1)
      end)()
      collectgarbage("collect")
      collectgarbage("collect")
      -- H.check (after_each) fails if a worker is still a child of ours
      for _, pid in ipairs(pids) do assert.is_true(pid > 0) end
    end)

    it("process.wait accepts AsyncResults beside Processes; as_completed", function()
      local pool <close> = ctx.Pool(2)
      local slow = pool:apply_async(function() sleep(0.4) return "slow" end)
      local fast = pool:apply_async(function() return "fast" end)
      local ready = process.wait({ slow, fast }, 10)
      assert.are.equal(fast, ready[1])
      local p = ctx.Process{ target = function() sleep(0.1) end }
      p:start()
      local got = process.wait({ slow, p }, 10)
      assert.is_true(#got >= 1)
      p:join()
      p:close()
      assert.are.same({}, process.wait({ pool:apply_async(function() sleep(0.5) end) }, 0.01))
      local fresh <close> = ctx.Pool(2) -- both workers free
      local rs = {
        fresh:apply_async(function() sleep(1) return 3 end),
        fresh:apply_async(function() return 1 end),
      }
      local order = {}
      for r in process.as_completed(rs, 10) do order[#order + 1] = r:get() end
      assert.are.same({ 1, 3 }, order)
      local never = pool:apply_async(function() sleep(1) end)
      assert.has_error(function()
        for _ in process.as_completed({ never }, 0.05) do end
      end)
      never:cancel()
    end)

    it("initializer and initargs run once in each worker (test_pool_initializer)", function()
      local pool <close> = ctx.Pool{ processes = 2, initializer = function(a, b)
        _G.POOL_INIT = (_G.POOL_INIT or 0) + a + b
      end, initargs = { 40, 2 } }
      local got = pool:map(function() return _G.POOL_INIT end, { 1, 2, 3, 4, 5 }, 1)
      for i = 1, 5 do assert.are.equal(42, got[i]) end
      assert.is_nil(_G.POOL_INIT) -- never in the parent
    end)

    it("maxtasksperchild replaces workers (test_pool_worker_lifetime)", function()
      local pool <close> = ctx.Pool{ processes = 2, maxtasksperchild = 3 }
      local pids = pool:map(function()
        return require("process").current_process().pid
      end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, 1)
      local distinct, count = {}, 0
      for i = 1, 12 do
        if not distinct[pids[i]] then distinct[pids[i]], count = true, count + 1 end
      end
      assert.is_true(count >= 4, "only " .. count .. " workers served 12 tasks")
      for pid in pairs(distinct) do
        local n = 0
        for i = 1, 12 do if pids[i] == pid then n = n + 1 end end
        assert.is_true(n <= 3)
      end
    end)

    it("maxtasksperchild with close right after submitting (early close)", function()
      local pool = ctx.Pool{ processes = 2, maxtasksperchild = 1 }
      local rs = {}
      for i = 1, 6 do rs[i] = pool:apply_async(sq, { i }) end
      pool:close()
      assert.is_true(pool:join(20))
      for i = 1, 6 do assert.are.equal(i * i, rs[i]:get(0)) end
    end)

    it("unsendable arguments raise at submit with their path", function()
      local pool <close> = ctx.Pool(1)
      assert.has_error(function() pool:apply(sq, { 1, { h = io.stdout } }) end,
        "args[2].h: cannot send a userdata")
      local list = { 1, 2, 3, coroutine.create(print) }
      local ok, err = pcall(pool.map, pool, sq, list)
      assert.is_false(ok)
      assert.matches("list%[4%]: cannot send a thread", err)
      local box = io.stdout
      ok, err = pcall(pool.apply_async, pool, function() return box end)
      assert.is_false(ok)
      assert.matches("upvalue 'box'", err)
      assert.are.equal(4, pool:apply(sq, { 2 })) -- nothing was queued
    end)

    it("an unsendable result fails only its task (test_unpickleable_result)", function()
      local pool <close> = ctx.Pool(1)
      local r = pool:apply_async(function() return io.stdout end)
      local ok, err = pcall(r.get, r, 10)
      assert.is_false(ok)
      assert.matches("cannot send its result", err)
      assert.matches("userdata", err)
      assert.are.equal(9, pool:apply(sq, { 3 }))
    end)

    it("map_async callbacks get the whole list (test_map_async_callbacks)", function()
      local pool <close> = ctx.Pool(2)
      local got, err
      local r = pool:map_async(sq, { 1, 2, 3 }, nil, { callback = function(v) got = v end })
      assert.is_true(r:wait(20))
      pool:map(sq, { 1 }) -- a later blocking call runs the callback
      assert.are.same({ 1, 4, 9 }, { table.unpack(got) })
      r = pool:map_async(function() error("no") end, { 1 }, nil, { error_callback = function(e) err = e end })
      r:wait(20)
      pool:map(sq, { 1 })
      assert.matches("no", err)
    end)

    it("a pool left by <close> refuses new work (test_enter)", function()
      local kept
      do
        local pool <close> = ctx.Pool(1)
        kept = pool
        assert.are.equal(1, pool:apply(sq, { 1 }))
      end
      assert.has_error(function() kept:apply(sq, { 1 }) end, "pool not running")
      assert.has_error(function() kept:map(sq, { 1 }) end, "pool not running")
    end)

    it("bad arguments raise at the caller", function()
      assert.has_error(function() ctx.Pool(0) end, "bad argument #1 to 'Pool' (processes must be at least 1)")
      assert.has_error(function() ctx.Pool("x") end)
      assert.has_error(function() ctx.Pool{ bogus = 1 } end, "bad argument #1 to 'Pool' (unknown option 'bogus')")
      assert.has_error(function() ctx.Pool{ processes = 1, maxtasksperchild = 0 } end,
        "bad argument #1 to 'Pool' (maxtasksperchild must be a positive integer)")
      assert.has_error(function() ctx.Pool{ processes = 1, timeout = -1 } end,
        "bad argument #1 to 'Pool' (timeout must be a positive number)")
      local pool <close> = ctx.Pool(1)
      assert.has_error(function() pool:apply(42) end, "bad argument #1 to 'apply' (function expected, got number)")
      assert.has_error(function() pool:map(sq, 5) end, "bad argument #2 to 'map' (table expected, got number)")
      assert.has_error(function() pool:map(sq, {}, 0) end,
        "bad argument #3 to 'map' (chunksize must be a positive integer)")
      local ok, err = pcall(function() pool:apply(42) end)
      assert.is_false(ok)
      assert.matches("^spec/pool_spec.lua:%d+:", err) -- points at the caller's line
    end)

    it("tasks may start processes and pools of their own", function()
      local pool <close> = ctx.Pool(2)
      local v = pool:apply(function()
        local pr = require "process"
        local p = pr.Process{ target = function() return 21 end }
        p:start()
        p:join()
        local inner <close> = pr.Pool(2)
        return p:result() + inner:apply(function() return 21 end)
      end)
      assert.are.equal(42, v)
    end)
  end)
end)
