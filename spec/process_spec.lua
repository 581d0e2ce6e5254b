-- The Process object: every row of doc/API.md's "Process objects" table,
-- under every start method.
local process = require "process"
local internal = require "process.internal"
local H = require "spec.helper"

H.each_method(function(ctx, method)
describe("Process [" .. method .. "]", function()
  before_each(H.snapshot)
  after_each(H.check)

  describe("constructor", function()
    it("applies defaults and counts default names", function()
      local a, b = ctx.Process{}, ctx.Process()
      local na = tonumber(a.name:match("^Process%-(%d+)$"))
      assert.is_number(na)
      assert.equal("Process-" .. (na + 1), b.name)
      assert.is_false(a.daemon)
      assert.is_nil(a.pid)
      assert.is_nil(a.ident)
      assert.is_nil(a.exitcode)
      assert.is_nil(a.error)
    end)

    it("keeps name, daemon and extra fields", function()
      local p = ctx.Process{name = "worker 1", daemon = true, count = 3}
      assert.equal("worker 1", p.name)
      assert.is_true(p.daemon)
      assert.equal(3, p.count)
      p.name = "renamed"
      assert.equal("renamed", p.name)
    end)

    it("rejects wrong types", function()
      assert.has_error(function() ctx.Process(1) end,
        "bad argument #1 to 'Process' (table expected, got number)")
      assert.has_error(function() ctx.Process{target = 1} end,
        "bad argument #1 to 'Process' (target must be a function, got number)")
      assert.has_error(function() ctx.Process{args = "x"} end,
        "bad argument #1 to 'Process' (args must be a table, got string)")
      assert.has_error(function() ctx.Process{name = 2} end,
        "bad argument #1 to 'Process' (name must be a string, got number)")
      assert.has_error(function() ctx.Process{daemon = 1} end,
        "bad argument #1 to 'Process' (daemon must be a boolean, got number)")
      assert.has_error(function() ctx.Process{pid = 1} end,
        "bad argument #1 to 'Process' (field 'pid' is reserved)")
      local p = ctx.Process{}
      assert.has_error(function() p.name = 5 end, "name must be a string")
      assert.has_error(function() p.daemon = "yes" end, "daemon must be a boolean")
      assert.has_error(function() p.exitcode = 1 end, "cannot assign to 'exitcode'")
    end)

    it("passes args, with args.n for embedded nils", function()
      local p = ctx.Process{
        target = function(...)
          local a, b, c = ...
          os.exit(select("#", ...) == 3 and a == 1 and b == nil and c == "x" and 7 or 1)
        end,
        args = {1, nil, "x", n = 3},
      }
      assert.equal(7, p:start():join())
    end)

    it("passes extra constructor fields to the child", function()
      local p = ctx.Process{target = function() end, code = 42}
      function p:run() os.exit(self.code) end
      assert.equal(42, p:start():join())
    end)
  end)

  describe("subclassing", function()
    it("runs an overridden run() with its own fields", function()
      local Worker = ctx.Process:extend()
      function Worker:run() os.exit(self.base + 1) end
      local w = Worker{name = "w", base = 10}
      assert.equal("w", w.name)
      assert.equal(11, w:start():join())
      local Sub = Worker:extend()
      local s = Sub{base = 20}
      assert.equal(21, s:start():join())
    end)

    it("runs the target in the parent when run() is called directly", function()
      local p = ctx.Process{target = function(a, b) return a + b end, args = {2, 3}}
      assert.equal(5, p:run())
      assert.is_nil((ctx.Process{}:run()))
    end)
  end)

  describe("start", function()
    it("returns the object and refuses a second start", function()
      local p = ctx.Process{target = function() end}
      assert.equal(p, p:start())
      assert.has_error(function() p:start() end, "cannot start a process twice")
      assert.equal(0, p:join())
      assert.has_error(function() p:start() end, "cannot start a process twice")
    end)

    it("refuses after close", function()
      local p = ctx.Process{}
      p:close()
      assert.has_error(function() p:start() end, "process object is closed")
    end)

    it("refuses daemon changes after start", function()
      local p = ctx.Process{target = function() end}
      p:start()
      assert.has_error(function() p.daemon = true end, "process has already started")
      p:join()
    end)

    it("returns nil, message, EAGAIN when fork is refused and stays startable", function()
      local p = ctx.Process{target = function() os.exit(5) end}
      internal.fault("fork", "EAGAIN")
      local r, err, ename = p:start()
      assert.is_nil(r)
      assert.equal("start: Resource temporarily unavailable", err)
      assert.equal("EAGAIN", ename)
      assert.is_nil(p.pid)
      assert.is_false(p:is_alive())
      assert.equal(p, p:start())
      assert.equal(5, p:join())
    end)

    it("kills and reaps the child when no pidfd can be had", function()
      if not internal.have_pidfd() then return pending("pipe fallback: no pidfd to refuse") end
      if method == "forkserver" then return pending("the server opens the pidfds") end
      local p = ctx.Process{target = function() os.exit(5) end}
      internal.fault("pidfd", "EMFILE")
      local r, err, ename = p:start()
      assert.is_nil(r)
      assert.equal("start: Too many open files", err)
      assert.equal("EMFILE", ename)
      assert.equal(5, p:start():join())
    end)
  end)

  describe("exit codes", function()
    local cases = {
      {"normal end", function() end, 0},
      {"a returned value", function() return 1 end, 0},
      {"os.exit()", function() os.exit() end, 0},
      {"os.exit(true)", function() os.exit(true) end, 0},
      {"os.exit(false)", function() os.exit(false) end, 1},
      {"os.exit(3)", function() os.exit(3) end, 3},
      {"os.exit(255)", function() os.exit(255) end, 255},
      {"a nil target", nil, 0},
    }
    for _, c in ipairs(cases) do
      it("is " .. c[3] .. " after " .. c[1], function()
        local p = ctx.Process{target = c[2]}
        p:start()
        assert.equal(c[3], p:join())
        assert.equal(c[3], p.exitcode)
        assert.is_false(p:is_alive())
      end)
    end

    it("is 1 after an error, with the message printed by the child", function()
      -- stderr of the child goes to ours: check it from outside
      local _, err, code = H.script([[
        local process = require "process"
        local ctx = process.get_context(arg[1])
        local p = ctx.Process{name = "raises", target = function() error("There was an error!") end}
        p:start()
        io.write(p:join())
      ]], "lua", method)
      assert.equal(0, code)
      assert.matches("^Process raises:\n[^\n]*: There was an error!\nstack traceback:\n", err)
    end)

    for _, s in ipairs{{"terminate", -15}, {"kill", -9}, {"interrupt", -2}} do
      it("is " .. s[2] .. " after " .. s[1] .. "()", function()
        local p = ctx.Process{target = H.block}
        p:start()
        assert.is_true(p:is_alive())
        assert.is_nil(p.exitcode)
        p[s[1]](p)
        assert.equal(s[2], p:join())
        assert.equal(s[2], p.exitcode)
      end)
    end

    it("is -11 for a child that segfaults", function()
      local p = ctx.Process{target = function()
        os.execute("kill -SEGV " .. process.current_process().pid)
        process.wait({}, 10) -- the signal arrives first
      end}
      assert.equal(-11, p:start():join())
    end)
  end)

  describe("join", function()
    it("times out on a running child and returns the exit code later", function()
      local p = ctx.Process{target = H.block}
      p:start()
      local r, why = p:join(0.05)
      assert.is_nil(r)
      assert.equal("timeout", why)
      assert.same({nil, "timeout"}, {p:join(-1)})
      p:terminate()
      assert.equal(-15, p:join(30))
      assert.equal(-15, p:join()) -- twice: at once
      assert.equal(-15, p:join(0))
    end)

    it("raises on a process not started, itself, or a bad timeout", function()
      local p = ctx.Process{}
      assert.has_error(function() p:join() end, "can only join a started process")
      assert.has_error(function() process.current_process():join() end, "can only join a child process")
      local q = ctx.Process{target = function() end}
      q:start()
      assert.has_error(function() q:join("1") end, "bad argument #1 to 'join' (number expected, got string)")
      q:join()
    end)

    it("refuses to join another process's child", function()
      local sibling = ctx.Process{target = H.block}
      sibling:start()
      local p = ctx.Process{target = function()
        local ok, err = pcall(sibling.join, sibling)
        local ok2, err2 = pcall(process.current_process().join, process.current_process())
        os.exit((not ok and err:find("can only join a child process", 1, true)
          and not ok2 and err2:find("can only join a child process", 1, true)) and 0 or 1)
      end}
      if method == "fork" then
        assert.equal(0, p:start():join())
      else -- a started Process holds descriptors: it cannot be sent
        assert.has_error(function() p:start() end,
          "target<upvalue 'sibling'>._popen: cannot send a userdata")
        assert.is_nil(p.pid)
      end
      sibling:kill()
      sibling:join()
    end)
  end)

  describe("pid, sentinel, signals", function()
    it("raises after close when run() is called", function()
      local p = ctx.Process{target = function() end}
      p:close()
      assert.has_error(function() p:run() end, "process object is closed")
    end)

    it("gives pid and ident after start", function()
      local p = ctx.Process{target = H.block}
      p:start()
      assert.is_number(p.pid)
      assert.equal(p.pid, p.ident)
      assert.is_true(H.children()[1] ~= nil)
      p:kill()
      p:join()
      assert.is_number(p.pid) -- kept after the end
    end)

    it("has a sentinel that is ready when the child ends", function()
      local p = ctx.Process{target = H.block}
      assert.has_error(function() return p.sentinel end, "process not started")
      p:start()
      local s = p.sentinel
      assert.equal("integer", math.type(s))
      assert.same({}, process.wait({s}, 0))
      p:terminate()
      assert.same({s}, process.wait({s}, 30))
      p:join()
    end)

    it("raises when signalling a process not started; no-op after the end", function()
      local p = ctx.Process{target = function() end}
      assert.has_error(function() p:terminate() end, "can only signal a started process")
      assert.has_error(function() p:kill() end, "can only signal a started process")
      assert.has_error(function() p:interrupt() end, "can only signal a started process")
      p:start()
      p:join()
      assert.is_true(p:terminate())
      assert.is_true(p:kill())
      assert.equal(0, p.exitcode)
    end)
  end)

  describe("close", function()
    it("raises while running, then makes the object unusable", function()
      local p = ctx.Process{target = H.block}
      p:start()
      assert.has_error(function() p:close() end, "cannot close a process while it is still running")
      p:kill()
      p:join()
      p:close()
      p:close() -- twice is fine
      for _, use in ipairs{
        function() return p.pid end, function() return p.exitcode end,
        function() return p.sentinel end, function() return p.error end,
        function() p:join() end, function() p:is_alive() end,
        function() p:start() end, function() p:terminate() end,
      } do
        assert.has_error(use, "process object is closed")
      end
      assert.matches("closed>$", tostring(p))
    end)

    it("closes a process never started", function()
      local p = ctx.Process{}
      p:close()
      assert.has_error(function() p:join() end, "process object is closed")
    end)
  end)

  describe("tostring", function()
    it("shows initial, started, stopped with the signal name, daemon", function()
      local me = process.current_process().pid
      local p = ctx.Process{target = H.block, daemon = true}
      local name = p.name
      assert.equal(("<Process name='%s' parent=%d initial daemon>"):format(name, me), tostring(p))
      p:start()
      assert.equal(("<Process name='%s' pid=%d parent=%d started daemon>"):format(name, p.pid, me), tostring(p))
      p:terminate()
      p:join()
      assert.equal(("<Process name='%s' pid=%d parent=%d stopped exitcode=-SIGTERM daemon>"):format(name, p.pid, me),
        tostring(p))
      local q = ctx.Process{target = function() os.exit(3) end}
      q:start()
      q:join()
      assert.matches("stopped exitcode=3>$", tostring(q))
    end)
  end)

  describe("what a child must never do", function()
    it("never resumes its parent's coroutine when the target yields", function()
      local co = coroutine.wrap(function()
        local p = ctx.Process{target = function() coroutine.yield("from the child") end}
        p:start()
        return p
      end)
      local p = co()
      assert.equal(1, p:join()) -- "attempt to yield across a C-call boundary"
      assert.matches("yield", p.error)
    end)

    it("refuses to use a sibling's sentinel in a child", function()
      local a = ctx.Process{target = H.block}
      a:start()
      local b = ctx.Process{target = function()
        local ok1, e1 = pcall(process.wait, {a}, 0)
        local ok2, e2 = pcall(function() return a.sentinel end)
        os.exit((not ok1 and e1:find("can only wait for a child process", 1, true)
          and not ok2 and e2:find("can only use the sentinel of a child process", 1, true)) and 0 or 1)
      end}
      if method == "fork" then
        assert.equal(0, b:start():join())
      else
        assert.has_error(function() b:start() end, "target<upvalue 'a'>._popen: cannot send a userdata")
      end
      a:kill()
      a:join()
    end)
  end)

  describe("fire and forget", function()
    it("reaps children nobody joined, so zombies and descriptors do not pile up", function()
      for _ = 1, 200 do ctx.Process{target = function() end}:start() end
      local last = ctx.Process{target = function() end}
      last:start()
      last:join()
      collectgarbage()
      collectgarbage()
      -- at most the amortised sweep's worth of unreaped children remain
      assert.is_true(#H.children() <= 130, #H.children() .. " children left")
      for _, p in ipairs(process.active_children()) do p:join() end
    end)
  end)

  describe("names and daemons in a child", function()
    it("names a child's child Process-N:1 and inherits the daemon flag", function()
      local p = ctx.Process{daemon = true, target = function()
        local me = process.current_process()
        local n = me.name:match("^Process%-(%d+)$")
        local c = ctx.Process{}
        local ok, err = pcall(c.start, c)
        os.exit((c.name == "Process-" .. n .. ":1" and c.daemon == true and not ok
          and err:find("daemonic processes are not allowed to have children", 1, true)) and 0 or 1)
      end}
      assert.equal(0, p:start():join())
    end)

    it("lets a non-daemonic child start its own children", function()
      local p = ctx.Process{target = function()
        local c = ctx.Process{target = function() os.exit(9) end}
        c:start()
        os.exit(c:join() == 9 and c.name:match(":1$") and 0 or 1)
      end}
      assert.equal(0, p:start():join())
    end)
  end)
end)
end)
