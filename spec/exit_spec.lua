-- The creator's exit: daemons terminated, non-daemons joined on every path
-- out, daemons killed with their parent, signals reset in children, no
-- output written twice.  Driven from outside on fixture scripts, under the
-- runner and under a stock lua5.4.
local H = require "spec.helper"
local process = require "process"

local function gone(pid)
  -- the pid is not ours to wait on: poll /proc until a deadline
  local deadline = os.time() + 10
  repeat
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return true end
    local st = f:read("a"):match("^%d+ %b() (%a)")
    f:close()
    if st == "Z" or st == "X" then return true end
    process.wait({}, 0.02)
  until os.time() > deadline
  return false
end

H.each_method(function(_, method)
for _, how in ipairs{"luamp", "lua"} do
  describe("exit under " .. how .. " [" .. method .. "]", function()
    before_each(H.snapshot)
    after_each(H.check)

    local function run(name, args)
      local interp = how == "lua" and H.lua or H.luamp
      return H.run("LUAMP_TEST_METHOD=" .. method .. " " .. interp .. " spec/fixtures/" .. name .. " " .. (args or ""))
    end

    for _, path in ipairs{{"end", 0}, {"exit", 3}, {"error", 1}} do
      it("terminates daemons and joins the rest at " .. path[1], function()
        local out, err, code = run("exit_paths.lua", path[1])
        assert.equal(path[2], code)
        local pid = assert(tonumber(out:match("daemon (%d+)")))
        assert.matches("non%-daemon done", out)
        assert.is_true(gone(pid))
        if path[1] == "error" then assert.matches(": uncaught", err) end
      end)
    end

    it("kills daemons when the parent is killed outright", function()
      local out, _, code = run("exit_paths.lua", "kill")
      assert.is_true(code == -9 or code == 128 + 9) -- the shell may report it
      local pid = assert(tonumber(out:match("daemon (%d+)")))
      assert.is_true(gone(pid))
    end)

    it("resets the SIGINT handler in the child", function()
      local out, _, code = run("interrupt.lua")
      assert.equal(0, code)
      assert.equal("-2\n", out)
    end)

    it("never runs the parent's pending code or finalizers in a child", function()
      local out, _, code = run("no_rerun.lua")
      assert.equal(0, code)
      local _, finals = out:gsub("finalizer", "")
      local _, buffered = out:gsub("buffered before start", "")
      assert.equal(1, buffered)
      assert.matches("parent only\t4", out)
      assert.equal(1, finals) -- the parent's, at its lua_close
    end)

    it("prints buffered output once: five workers to a file make five lines", function()
      local tmp = os.tmpname()
      local interp = how == "lua" and H.lua or H.luamp
      local _, _, code = H.run(interp .. " -e 'require(\"process\").set_start_method(\"" .. method ..
        "\")' examples/workers.lua > " .. tmp)
      assert.equal(0, code)
      local f = assert(io.open(tmp))
      local text = f:read("a")
      f:close()
      os.remove(tmp)
      local _, lines = text:gsub("Worker\n", "")
      assert.equal(5, lines)
      assert.equal(#"Worker\n" * 5, #text)
    end)
  end)
end
end)
