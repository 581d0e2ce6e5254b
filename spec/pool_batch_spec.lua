-- spec/pool_batch_spec.lua - process.Pool while it hands short tasks to a
-- worker ahead of time (several in one write), under every start method:
-- which task a dying worker held, a worker that ends between two tasks
-- it held, cancel racing a worker that starts the task, and a per-task
-- timeout whose worker does not react to SIGTERM (SIGKILL after the
-- grace period).  Each task counts its starts and ends in shared Arrays
-- (given to the workers' initializer), so "ran exactly once" and "never
-- ran" are checked, not assumed.  Every wait has a deadline.
local H = require "spec.helper"
local process = require "process"
local internal = require "process.internal"

local function sq(x) return x * x end

local fails_with = H.fails_with

-- The pool learns that tasks are short: from here on it hands each worker
-- several at once.
local function warm(pool)
  local xs = {}
  for i = 1, 64 do xs[i] = i end
  pool:map(sq, xs, 1)
end

-- A pool whose workers see the Arrays as STARTED, ENDED and RAN_ON.
local function counted_pool(ctx, n, started, ended, ran_on)
  return ctx.Pool{ processes = n, initializer = function(s, e, r) _G.STARTED, _G.ENDED, _G.RAN_ON = s, e, r end,
                   initargs = { started, ended, ran_on } }
end

local function alive(pid)
  local _, _, code = H.run("kill -0 " .. pid .. " 2>/dev/null")
  return code == 0
end

H.each_method(function(ctx, method)
  describe("Pool batches (" .. method .. ")", function()
    before_each(H.snapshot)
    after_each(H.check)

    it("a worker that dies holding tasks handed ahead fails the running one; the others run once elsewhere", function()
      local N = 40
      local started, ended = process.Array("int64", N), process.Array("int64", N)
      local pool <close> = counted_pool(ctx, 1, started, ended)
      warm(pool)
      local rs = {}
      for i = 1, N do
        rs[i] = pool:apply_async(function(x)
          STARTED:add(x, 1) -- luacheck: ignore 113
          if x == 10 then os.exit(3) end
          ENDED:add(x, 1) -- luacheck: ignore 113
          return x * x
        end, { i })
      end
      for i = 1, N do
        if i == 10 then
          fails_with(rs[i], "worker exited with exitcode 3 while running task " .. rs[i]._id .. " %(pid %d+%)")
        else
          assert.are.equal(i * i, rs[i]:get(20))
        end
      end
      for i = 1, N do
        assert.are.equal(1, started[i], "task " .. i .. " started " .. started[i] .. " times")
        assert.are.equal(i == 10 and 0 or 1, ended[i])
      end
    end)

    it("a worker that ends after answering a task, before the next it held, fails none of them", function()
      local N = 40
      local started, ended = process.Array("int64", N), process.Array("int64", N)
      local pool <close> = counted_pool(ctx, 1, started, ended)
      warm(pool)
      local rs = {}
      for i = 1, N do
        rs[i] = pool:apply_async(function(x)
          STARTED:add(x, 1) -- luacheck: ignore 113
          if x == 10 then
            -- the worker exits as soon as its answer to this task is
            -- written (the return of the call that writes it)
            debug.sethook(function()
              local info = debug.getinfo(2, "n")
              if info and info.name == "sendframe" then os.exit(5) end
            end, "r")
          end
          ENDED:add(x, 1) -- luacheck: ignore 113
          return x * x, require("process").current_process().pid
        end, { i })
      end
      local pid10
      for i = 1, N do
        local v, pid = rs[i]:get(20)
        assert.are.equal(i * i, v)
        if i == 10 then pid10 = pid end
        if i > 10 then assert.are_not.equal(pid10, pid, "task " .. i .. " ran on the worker that ended") end
      end
      for i = 1, N do
        assert.are.equal(1, started[i], "task " .. i .. " started " .. started[i] .. " times")
        assert.are.equal(1, ended[i])
      end
    end)

    it("cancel of a task handed ahead: true means it never ran, or its worker was terminated", function()
      local N = 90
      local started, ended = process.Array("int64", N), process.Array("int64", N)
      local ran_on = process.Array("int64", N) -- the pid of the worker that started it
      local pool <close> = counted_pool(ctx, 1, started, ended, ran_on)
      warm(pool)
      local rs, cancelled = {}, {}
      for i = 1, N do
        rs[i] = pool:apply_async(function(x)
          STARTED:add(x, 1) -- luacheck: ignore 113
          RAN_ON[x] = require("process").current_process().pid -- luacheck: ignore 112 113
          require("process").wait({}, 0.001) -- short, but longer than a cancel
          ENDED:add(x, 1) -- luacheck: ignore 113
          return x * x
        end, { i })
      end
      -- cancels while tasks are queued, handed ahead and running
      for i = 3, N, 3 do
        cancelled[i] = rs[i]:cancel()
        process.wait({}, 0.0007)
      end
      local ncancelled = 0
      for i = 1, N do
        if cancelled[i] then
          ncancelled = ncancelled + 1
          fails_with(rs[i], "cancelled")
        else
          assert.are.equal(i * i, rs[i]:get(20), "task " .. i)
          assert.are.equal(1, ended[i], "task " .. i .. " ended " .. ended[i] .. " times")
        end
        assert.is_true(started[i] <= 1, "task " .. i .. " started twice")
      end
      assert.is_true(ncancelled > 0)
      -- A cancelled task that started was running when it was cancelled
      -- (it may even have reached its end as its worker was terminated):
      -- its worker ran nothing after it.  One handed ahead never started.
      for i = 1, N do
        if cancelled[i] and started[i] > 0 then
          local k = i + 1
          while k <= N and cancelled[k] do k = k + 1 end
          if k <= N then
            assert.are_not.equal(ran_on[i], ran_on[k],
              "task " .. i .. " was cancelled, yet its worker went on to task " .. k)
          end
        end
      end
      assert.are.equal(4, pool:apply(sq, { 2 }))
    end)

    it("a timed-out task whose worker does not react to SIGTERM is ended by SIGKILL after the grace period", function()
      local pool <close> = ctx.Pool(1)
      -- a stopped process keeps SIGTERM pending; only SIGKILL ends it
      local r = pool:apply_async(function()
        os.execute("kill -STOP " .. require("process").current_process().pid)
      end, {}, { timeout = 0.2 })
      local err = fails_with(r, "timeout after 0.2 seconds %(worker pid %d+ terminated%)")
      local t_failed = internal.now()
      local pid = tonumber(err:match("worker pid (%d+)"))
      -- the pool's bookkeeping runs while the owner waits in it
      local waiting = pool:apply_async(function() require("process").wait({}, 30) end)
      local deadline = t_failed + 10
      while alive(pid) and internal.now() < deadline do waiting:wait(0.05) end
      local t_gone = internal.now()
      assert.is_false(alive(pid), "the stopped worker was never killed")
      assert.is_true(t_gone - t_failed > 0.5, "it ended before the grace period: SIGTERM ended it")
      waiting:cancel()
      assert.are.equal(4, pool:apply(sq, { 2 }))
    end)
  end)
end)
