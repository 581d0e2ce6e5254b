-- Module functions: current_process, parent_process, active_children,
-- cpu_count, wait and the start-method functions.
local process = require "process"
local H = require "spec.helper"

describe("module", function()
  before_each(H.snapshot)
  after_each(H.check)

  H.each_method(function(ctx, method)
  describe("[" .. method .. "]", function()
  describe("current_process", function()
    it("is MainProcess in the root", function()
      local me = process.current_process()
      assert.equal("MainProcess", me.name)
      assert.is_number(me.pid)
      assert.is_true(me:is_alive())
      assert.is_false(me.daemon)
      assert.matches("^<Process name='MainProcess' pid=%d+ parent=nil started>$", tostring(me))
      assert.equal(me, process.current_process())
    end)

    it("is the child's own object in a child", function()
      local parent_pid = process.current_process().pid
      local p = ctx.Process{name = "kid", target = function()
        local me = process.current_process()
        os.exit((me.name == "kid" and me.pid ~= parent_pid and me:is_alive()
          and tostring(me):find("started", 1, true)) and 0 or 1)
      end}
      assert.equal(0, p:start():join())
    end)
  end)

  describe("parent_process", function()
    it("is nil in the root", function()
      assert.is_nil(process.parent_process())
    end)

    it("describes the parent in a child", function()
      local me = process.current_process().pid
      local p = ctx.Process{target = function()
        local parent = process.parent_process()
        local r, why = parent:join(0.01)
        os.exit((parent.pid == me and parent.name == "MainProcess" and parent:is_alive()
          and math.type(parent.sentinel) == "integer" and r == nil and why == "timeout") and 0 or 1)
      end}
      assert.equal(0, p:start():join())
    end)
  end)

  describe("active_children", function()
    it("lists live children in start order and reaps the finished", function()
      assert.same({}, process.active_children())
      local a = ctx.Process{target = H.block}
      local b = ctx.Process{target = H.block}
      a:start()
      b:start()
      assert.same({a, b}, process.active_children())
      a:kill()
      assert.equal(-9, a:join())
      assert.same({b}, process.active_children())
      b:terminate()
      process.wait({b})
      assert.same({}, process.active_children()) -- reaped b here
      assert.equal(-15, b.exitcode)
    end)
  end)

  it("cpu_count is the number of online CPUs", function()
    local out = H.run("nproc")
    assert.equal(tonumber(out), process.cpu_count())
  end)

  describe("wait", function()
    it("returns the first of several to end, as the values given", function()
      local ps, sentinels = {}, {}
      for i = 1, 3 do
        ps[i] = ctx.Process{target = H.block}
        ps[i]:start()
        sentinels[i] = ps[i].sentinel
      end
      assert.same({}, process.wait(sentinels, 0))
      ps[2]:terminate()
      assert.same({sentinels[2]}, process.wait(sentinels))
      assert.same({ps[2]}, process.wait(ps, 10))
      ps[1]:terminate()
      ps[3]:terminate()
      for _, p in ipairs(ps) do p:join() end
      assert.same(sentinels, process.wait(sentinels, 0)) -- ended stays ready
      assert.same({ps[3], ps[1]}, process.wait({ps[3], ps[1]}))
    end)

    it("returns an empty list on timeout and accepts an empty list", function()
      local p = ctx.Process{target = H.block}
      p:start()
      assert.same({}, process.wait({p}, 0.02))
      assert.same({}, process.wait({}, 0.01))
      assert.same({}, process.wait({p}, -5))
      p:kill()
      p:join()
    end)

    it("raises on bad input", function()
      assert.has_error(function() process.wait(1) end,
        "bad argument #1 to 'wait' (table expected, got number)")
      assert.has_error(function() process.wait({"x"}) end,
        "bad argument #1 to 'wait' (object 1 is not a sentinel, Process or Connection (string))")
      assert.has_error(function() process.wait({ctx.Process{}}) end, "process not started")
      local c = ctx.Process{}
      c:close()
      assert.has_error(function() process.wait({c}) end, "process object is closed")
      local ok, err = pcall(function() process.wait({}, "1") end)
      assert.is_false(ok)
      -- the argument is #2, and the position is the caller's line
      assert.matches("^spec/module_spec.lua:%d+: bad argument #2 to 'wait' %(number expected, got string%)$", err)
    end)

    it("reports a descriptor that is not open", function()
      local r, err, ename = process.wait({100000}, 0)
      assert.is_nil(r)
      assert.equal("wait: Bad file descriptor", err)
      assert.equal("EBADF", ename)
    end)
  end)
  end)
  end)

  describe("start methods", function()
    after_each(function() process.set_start_method(nil, true) end)

    it("has fork as the default, listed first", function()
      assert.equal("fork", process.get_start_method())
      assert.same({"fork", "spawn", "forkserver"}, process.get_all_start_methods())
    end)

    it("sets a method once unless forced", function()
      process.set_start_method("spawn")
      assert.equal("spawn", process.get_start_method())
      assert.has_error(function() process.set_start_method("fork") end, "context has already been set")
      process.set_start_method("forkserver", true)
      assert.equal("forkserver", process.get_start_method())
      process.set_start_method(nil, true)
      assert.equal("fork", process.get_start_method())
    end)

    it("starts with the method set", function()
      process.set_start_method("spawn")
      -- a spawn child is a fresh runtime: a global set here is not there
      _G.LUAMP_SPEC_MARK = true
      local p = process.Process{target = function() return rawget(_G, "LUAMP_SPEC_MARK") == nil end}
      assert.equal(0, p:start():join())
      _G.LUAMP_SPEC_MARK = nil
      assert.is_true(p:result())
    end)

    it("names the methods it cannot use", function()
      assert.has_error(function() process.set_start_method("bogus", true) end,
        "cannot find context for 'bogus'")
      assert.has_error(function() process.get_context("bogus") end,
        "cannot find context for 'bogus'")
      assert.has_error(function() process.set_start_method(1) end,
        "bad argument #1 to 'set_start_method' (string expected, got number)")
    end)
  end)

  describe("contexts", function()
    it("have their own Process bound to their method, and the module's functions", function()
      -- every method offered (the list itself is checked above), whatever
      -- LUAMP_TEST_METHODS keeps: this only makes contexts
      for _, m in ipairs(process.get_all_start_methods()) do
        local ctx = process.get_context(m)
        assert.equal(ctx, process.get_context(m))
        assert.equal(m, ctx.get_start_method())
        assert.is_function(ctx.Pipe)
        assert.is_function(ctx.Queue)
        assert.equal(process.wait, ctx.wait)
        assert.equal(process.current_process(), ctx.current_process())
        assert.are_not.equal(process.Process, ctx.Process)
      end
      assert.equal(process.get_context(process.get_start_method()), process.get_context())
    end)

    it("keep their method for subclasses and whatever the default is", function()
      local Worker = process.get_context("spawn").Process:extend()
      function Worker:run()
        return self.base + 1, process.current_process().name, rawget(_G, "LUAMP_SPEC_MARK") == nil
      end
      process.set_start_method("fork")
      _G.LUAMP_SPEC_MARK = true
      local p = Worker{name = "w", base = 41, target = function() end}
      p:start()
      _G.LUAMP_SPEC_MARK = nil
      assert.equal(0, p:join())
      assert.same({42, "w", true}, {p:result()}) -- spawned: no global of ours
      process.set_start_method(nil, true)
    end)
  end)
end)
