-- spec/pool_failures_spec.lua - process.Pool when things go wrong, under
-- every start method: the {error, exit, crash} x {receiving the
-- arguments, running the function, sending the result} matrix of
-- CPython's test_concurrent_futures/test_deadlock.py, dead workers,
-- timeouts, a broken pool, failing initializers, cancel, Ctrl-C, and
-- workers never outliving their owner.  Every wait has a deadline.
local H = require "spec.helper"
local lfs = require "lfs"
local process = require "process"
local internal = require "process.internal"

local function sq(x) return x * x end

-- A directory of modules whose loading fails in the worker: an argument
-- holding such a module travels by name and the worker `require`s it
-- while it decodes the task.
local moddir
local MODS = {
  luamp_pool_load_error = 'error("cannot load this module on purpose")',
  luamp_pool_load_exit = "os.exit(3)",
  luamp_pool_load_crash = 'os.execute("kill -SEGV " .. require("process").current_process().pid)\n'
    .. 'require("process").wait({}, 30)',
}

local function setup_mods()
  moddir = os.tmpname()
  os.remove(moddir)
  assert(lfs.mkdir(moddir))
  for name, src in pairs(MODS) do
    local f = assert(io.open(moddir .. "/" .. name .. ".lua", "w"))
    f:write(src, "\n")
    f:close()
  end
end

local function teardown_mods()
  for name in pairs(MODS) do
    os.remove(moddir .. "/" .. name .. ".lua")
    package.loaded[name] = nil
  end
  lfs.rmdir(moddir)
end

-- The task's worker kills itself with a signal.
local function suicide(sig)
  return function()
    os.execute("kill -" .. sig .. " " .. require("process").current_process().pid)
    require("process").wait({}, 30) -- never reached
  end
end

-- An error object whose conversion to a message (done by the worker
-- while it sends the failure back) errors, exits or crashes.
local function bad_error(how)
  return function()
    error(setmetatable({}, { __tostring = function()
      if how == "error" then error("tostring failed on purpose") end
      if how == "exit" then os.exit(3) end
      os.execute("kill -SEGV " .. require("process").current_process().pid)
      require("process").wait({}, 30)
    end }))
  end
end

local fails_with = H.fails_with

H.each_method(function(ctx, method)
  describe("Pool failures (" .. method .. ")", function()
    before_each(H.snapshot)
    after_each(H.check)

    describe("the deadlock matrix", function()
      local pool
      before_each(function()
        setup_mods()
        local saved = package.path
        package.path = moddir .. "/?.lua;" .. package.path
        pool = ctx.Pool(2)
        package.path = saved
      end)
      after_each(function()
        -- the pool still works after each failure
        assert.are.equal(16, pool:apply(sq, { 4 }))
        pool:close()
        assert.is_true(pool:join(20))
        teardown_mods()
      end)

      -- (a function in it, so that it can only travel by name)
      local function module_arg(name)
        package.loaded[name] = package.loaded[name] or { f = print }
        return { m = package.loaded[name] }
      end

      it("error while receiving the arguments", function()
        local r = pool:apply_async(function(t) return t end, { module_arg("luamp_pool_load_error") })
        fails_with(r, "cannot receive its arguments.*cannot load this module on purpose")
      end)
      it("exit while receiving the arguments", function()
        local r = pool:apply_async(function(t) return t end, { module_arg("luamp_pool_load_exit") })
        fails_with(r, "worker exited with exitcode 3 while running task %d+ %(pid %d+%)")
      end)
      it("crash while receiving the arguments", function()
        local r = pool:apply_async(function(t) return t end, { module_arg("luamp_pool_load_crash") })
        fails_with(r, "worker exited with exitcode %-11 while running task %d+")
      end)
      it("error while running the function", function()
        fails_with(pool:apply_async(function() error("raised on purpose") end), "raised on purpose")
      end)
      it("exit while running the function", function()
        fails_with(pool:apply_async(function() os.exit(7) end), "worker exited with exitcode 7 while running task")
      end)
      it("crash while running the function", function()
        fails_with(pool:apply_async(suicide("SEGV")), "worker exited with exitcode %-11 while running task")
      end)
      it("error while sending the result", function()
        fails_with(pool:apply_async(function() return coroutine.create(print) end),
          "cannot send its result: result%[1%]: cannot send a thread")
        fails_with(pool:apply_async(bad_error("error")), ".") -- an error in the message handler
      end)
      it("exit while sending the result", function()
        fails_with(pool:apply_async(bad_error("exit")), "worker exited with exitcode 3 while running task")
      end)
      it("crash while sending the result", function()
        fails_with(pool:apply_async(bad_error("crash")), "worker exited with exitcode %-11 while running task")
      end)
    end)

    it("a worker that dies fails only its task; the rest completes", function()
      local pool <close> = ctx.Pool(2)
      local rs = {}
      for i = 1, 10 do
        rs[i] = i == 5 and pool:apply_async(suicide("KILL")) or pool:apply_async(sq, { i })
      end
      for i = 1, 10 do
        if i == 5 then
          local err = fails_with(rs[i], "worker exited with exitcode %-9 while running task %d+ %(pid (%d+)%)")
          assert.matches("task " .. rs[i]._id, err)
        else
          assert.are.equal(i * i, rs[i]:get(20))
        end
      end
      -- map: the dead worker's chunk fails the map, the pool goes on
      local ok, err = pcall(pool.map, pool, function(x)
        if x == 3 then os.execute("kill -KILL " .. require("process").current_process().pid) end
        return x
      end, { 1, 2, 3, 4 }, 1)
      assert.is_false(ok)
      assert.matches("worker exited with exitcode %-9", err)
      assert.are.same({ 1, 4, 9 }, { table.unpack(pool:map(sq, { 1, 2, 3 })) })
    end)

    describe("while many short tasks queue (tasks handed out ahead)", function()
      local function warm(pool)
        local xs = {}
        for i = 1, 64 do xs[i] = i end
        pool:map(sq, xs, 1) -- the pool learns that tasks are short
      end

      it("a worker that dies fails only its task; those it held go elsewhere", function()
        local pool <close> = ctx.Pool(2)
        warm(pool)
        local rs = {}
        for i = 1, 300 do
          rs[i] = pool:apply_async(function(x)
            if x == 150 then os.execute("kill -KILL " .. require("process").current_process().pid) end
            return x * x
          end, { i })
        end
        for i = 1, 300 do
          if i == 150 then
            fails_with(rs[i], "worker exited with exitcode %-9 while running task " .. rs[i]._id)
          else
            assert.are.equal(i * i, rs[i]:get(20))
          end
        end
      end)

      it("a timeout fails only the task that hung", function()
        local pool <close> = ctx.Pool(2)
        warm(pool)
        local rs = {}
        for i = 1, 200 do
          rs[i] = pool:apply_async(function(x)
            if x == 100 then while true do end end
            return x * x
          end, { i }, { timeout = 0.5 })
        end
        for i = 1, 200 do
          if i == 100 then fails_with(rs[i], "timeout") else assert.are.equal(i * i, rs[i]:get(20)) end
        end
      end)

      it("cancel fails exactly the cancelled tasks", function()
        local pool <close> = ctx.Pool(2)
        warm(pool)
        local rs, cancelled = {}, {}
        for i = 1, 300 do rs[i] = pool:apply_async(sq, { i }) end
        for i = 3, 300, 3 do cancelled[i] = rs[i]:cancel() end
        for i = 1, 300 do
          if cancelled[i] then
            fails_with(rs[i], "cancelled")
          else
            -- not cancelled, or cancel() said false: it had finished
            assert.are.equal(i * i, rs[i]:get(20))
          end
        end
        assert.are.equal(4, pool:apply(sq, { 2 }))
      end)
    end)

    it("a task past its timeout fails with 'timeout'; its worker is replaced", function()
      local pool <close> = ctx.Pool(1)
      local t0 = internal.now()
      local r = pool:apply_async(function() while true do end end, {}, { timeout = 0.2 })
      fails_with(r, "timeout")
      assert.is_true(internal.now() - t0 < 5)
      assert.are.equal(4, pool:apply(sq, { 2 }))
      -- the pool's default timeout: map fails at the item that hung (1 s,
      -- so that the other items finish within it on a loaded machine)
      local p2 <close> = ctx.Pool{ processes = 2, timeout = 1 }
      local ok, err = pcall(p2.map, p2, function(x)
        if x == 2 then while true do end end
        return x
      end, { 1, 2, 3 })
      assert.is_false(ok)
      assert.matches("timeout", err)
      assert.are.same({ 1, 4 }, { table.unpack(p2:map(sq, { 1, 2 })) })
      -- get(t) only stops waiting: the task itself has no timeout
      local slow = pool:apply_async(function() require("process").wait({}, 0.3) return "done" end)
      assert.is_nil(slow:get(0.01))
      assert.are.equal("done", slow:get(20))
    end)

    it("too many deaths break the pool: every pending task fails at once", function()
      local pool = ctx.Pool(2)
      local rs = {}
      for i = 1, 40 do rs[i] = pool:apply_async(suicide("KILL")) end
      local t0 = internal.now()
      local broken = 0
      for i = 1, 40 do
        local err = fails_with(rs[i], "exit")
        if err:find("pool is broken", 1, true) then broken = broken + 1 end
      end
      assert.is_true(broken > 0)
      assert.is_true(internal.now() - t0 < 20)
      assert.has_error(function() pool:apply(sq, { 1 }) end)
      assert.matches("pool is broken: %d+ workers died", select(2, pcall(function() pool:apply(sq, { 1 }) end)))
      pool:terminate()
    end)

    it("a failing initializer breaks the pool with its error, no respawn loop", function()
      local pool = ctx.Pool{ processes = 2, initializer = function() error("initializer refused") end }
      local r = pool:apply_async(sq, { 2 })
      fails_with(r, "initializer refused")
      assert.matches("initializer refused", select(2, pcall(function() pool:apply(sq, { 1 }) end)))
      pool:terminate()
      local p2 = ctx.Pool{ processes = 2, initializer = function() os.exit(4) end }
      fails_with(p2:apply_async(sq, { 2 }), "exitcode 4 .*before it was ready")
      p2:close()
      assert.is_true(p2:join(10))
    end)

    it("cancel: a queued task never runs, a running one's worker is replaced", function()
      local pool <close> = ctx.Pool(1)
      local running = pool:apply_async(function() require("process").wait({}, 30) end)
      local queued = pool:apply_async(function() return "ran" end)
      assert.is_true(queued:cancel())
      fails_with(queued, "cancelled")
      local t0 = internal.now()
      assert.is_true(running:cancel())
      fails_with(running, "cancelled")
      assert.is_false(running:cancel())
      assert.are.equal(9, pool:apply(sq, { 3 }))
      assert.is_true(internal.now() - t0 < 5)
    end)

    it("workers ignore SIGINT", function()
      local pool <close> = ctx.Pool(1)
      assert.are.equal("alive", pool:apply(function()
        os.execute("kill -INT " .. require("process").current_process().pid)
        return "alive"
      end))
    end)

    it("nothing is left behind when the workers cannot start", function()
      internal.fault("fork", "EAGAIN", 1)
      local pool, err, ename = ctx.Pool(2)
      internal.fault("fork", "EAGAIN", 0)
      assert.is_nil(pool)
      assert.matches("^start: ", err)
      assert.are.equal("EAGAIN", ename)
    end)

    -- TestPoolNotLeakOnFailure: the third worker cannot start; the two
    -- that did are ended and reaped.  (Fork only: the wrapped start would
    -- have to travel to spawn and forkserver workers with their class.)
    if method == "fork" then
      it("workers already started are released when a later one cannot start", function()
        local cls = ctx.Process
        local n = 0
        rawset(cls, "start", function(self)
          n = n + 1
          if n == 3 then return nil, "start: Resource temporarily unavailable", "EAGAIN" end
          return process.Process.start(self)
        end)
        local pool, err, ename = ctx.Pool(4)
        rawset(cls, "start", nil)
        assert.is_nil(pool)
        assert.are.equal(3, n)
        assert.matches("^start: ", err)
        assert.are.equal("EAGAIN", ename)
      end)
    end

    local function alive(pid)
      local _, _, code = H.run("kill -0 " .. pid)
      return code == 0
    end

    local function wait_gone(pids, seconds)
      local deadline = internal.now() + seconds
      for _, pid in ipairs(pids) do
        while alive(pid) do
          if internal.now() > deadline then return false end
          process.wait({}, 0.02)
        end
      end
      return true
    end

    local function pids_of(out)
      local pids = {}
      for pid in out:gmatch("pid (%d+)") do pids[#pids + 1] = tonumber(pid) end
      return pids
    end

    local head = ([[
      local process = require "process"
      local pool = process.get_context(%q).Pool(2)
      local pids = pool:map(function() process.wait({}, 0.05) return process.current_process().pid end, {1, 2, 3, 4}, 1)
      local seen = {}
      for _, pid in ipairs(pids) do if not seen[pid] then seen[pid] = true print("pid " .. pid) end end
      io.stdout:flush()
    ]]):format(method)

    it("workers end with their owner, also when it is SIGKILLed", function()
      local out, _, code = H.script(head .. [[
        os.execute("kill -KILL " .. process.current_process().pid)
      ]])
      assert.is_true(code == -9 or code == 137, "exit code " .. code)
      local pids = pids_of(out)
      assert.is_true(#pids >= 1)
      assert.is_true(wait_gone(pids, 10), "a worker outlived its killed owner")
    end)

    it("an owner that exits without closing its pool neither hangs nor leaves workers", function()
      local out, _, code = H.script(head .. [[
        pool:apply_async(function() process.wait({}, 60) end)
        os.exit(5)
      ]])
      assert.are.equal(5, code)
      assert.is_true(wait_gone(pids_of(out), 10))
      out, _, code = H.script(head .. "pool:apply_async(function() process.wait({}, 60) end)\n")
      assert.are.equal(0, code)
      assert.is_true(wait_gone(pids_of(out), 10))
    end)

    it("Ctrl-C while the owner waits terminates the workers and re-raises", function()
      local flag = os.tmpname()
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(head, ([[
        local f = assert(io.open(%q, "w")) f:write("waiting") f:close()
        pool:map(function() process.wait({}, 60) end, {1, 2})
      ]]):format(flag))
      f:close()
      os.remove(flag)
      local out, err = H.run(([[
        %s %s & owner=$!
        i=0; while [ ! -s %s ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        sleep 0.1; kill -INT $owner; wait $owner; echo "rc=$?"
      ]]):format(H.luamp, script, flag))
      os.remove(script)
      os.remove(flag)
      assert.matches("interrupted", err)
      assert.matches("rc=1", out)
      assert.is_true(wait_gone(pids_of(out), 10), "a worker outlived the interrupted owner")
    end)
  end)
end)
