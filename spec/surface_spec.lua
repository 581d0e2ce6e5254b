-- The public surface as a user meets it: what pairs(process) shows, the
-- version, where errors point, and what each start method accepts as a
-- target.  (Issue 10, items 14, 15, 18 and 20.)
local process = require "process"
local H = require "spec.helper"

describe("the process table", function()
  it("shows no internal hooks: no key starting with '_' but _VERSION", function()
    local hidden = {}
    for k in pairs(process) do
      if type(k) == "string" and k:sub(1, 1) == "_" and k ~= "_VERSION" then
        hidden[#hidden + 1] = k
      end
    end
    table.sort(hidden)
    assert.same({}, hidden)
  end)

  it("keeps the hooks in process.internal, for the runner, specs and benchmarks", function()
    local internal = require "process.internal"
    for _, k in ipairs{"fault", "now", "encode", "decode", "have_pidfd", "forkserver_pid",
                       "get_executable", "child_main"} do
      assert.is_function(internal[k], k)
    end
    assert.equal(3, internal.decode(internal.encode(3)))
  end)

  it("process.pi shows exactly its documented members (API.md, and pi.impl in doc/API.md)", function()
    local names = {}
    for k in pairs(require "process.pi") do names[#names + 1] = k end
    table.sort(names)
    assert.same({"impl", "leibniz", "parallel"}, names)
  end)

  it("process.internal can be required first, from a stock lua5.4", function()
    local out, err, code = H.run(H.lua .. " -e " .. H.q([[
      local internal = require "process.internal"
      print(type(internal.now()), package.loaded.process ~= nil)]]))
    assert.equal(0, code, err)
    assert.equal("number\ttrue\n", out)
  end)
end)

-- The chunk name errors must point at: this file, the caller's.
local here = debug.getinfo(1, "S").short_src:gsub("%p", "%%%0")

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "no error raised")
  return tostring(err)
end

describe("errors point at the caller's line", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("for a method called without its object, naming the method", function()
    local p = process.Process{}
    local calls = {
      start = function() p.start() end, join = function() p.join() end,
      is_alive = function() p.is_alive() end, run = function() p.run() end,
      terminate = function() p.terminate() end, kill = function() p.kill() end,
      interrupt = function() p.interrupt() end, result = function() p.result() end,
      close = function() p.close() end,
    }
    for m, f in pairs(calls) do
      assert.matches("^" .. here .. ":%d+: bad argument #1 to '" .. m ..
        "' %(process%.Process expected, got no value%)$", err_of(f))
    end
    -- called from C (no call site to name it): named as luaL_argerror does
    assert.matches("^bad argument #1 to 'process%.Process%.start'", err_of(p.start))
    assert.matches("^" .. here .. ":%d+: bad argument #1 to 'start' %(process%.Process expected, got number%)$",
      err_of(function() p.start(1) end))
    local t = {start = p.start}
    assert.matches("^" .. here .. ":%d+: calling 'start' on bad self", err_of(function() t:start() end))
    assert.matches("^" .. here .. ":%d+: bad argument #1 to 'extend'",
      err_of(function() process.Process.extend(1) end))
  end)

  it("for bad arguments to the module functions, naming them", function()
    local cases = {
      {"wait", function() process.wait("x") end, "table expected, got string"},
      {"wait", function() process.wait({"x"}) end, "object 1 is not a sentinel"},
      {"wait", function() process.wait({}, 0 / 0) end, "timeout is NaN", 2},
      {"set_executable", function() process.set_executable(42) end, "string expected, got number"},
      -- found by the C core, raised here all the same
      {"set_executable", function() process.set_executable("/x\0y") end, "zero byte"},
      {"wait", function() process.wait({-5}, 0) end, "out of range"},
      {"get_context", function() process.get_context(42) end, "string expected, got number"},
      {"set_start_method", function() process.set_start_method(42) end, "string expected, got number"},
    }
    for _, c in ipairs(cases) do
      local err = err_of(c[2])
      assert.matches("^" .. here .. ":%d+: bad argument #" .. (c[4] or 1) .. " to '" .. c[1] .. "' %(", err)
      assert.truthy(err:find(c[3], 1, true), err)
    end
  end)

  it("for a property read in the wrong state", function()
    local p = process.Process{}
    assert.matches("^" .. here .. ":%d+: process not started$", err_of(function() return p.sentinel end))
    p:close()
    assert.matches("^" .. here .. ":%d+: process object is closed$", err_of(function() return p.exitcode end))
    assert.matches("^" .. here .. ":%d+: process object is closed$", err_of(function() return p.pid end))
  end)

  H.each_method(function(ctx, method)
    it("for join(0/0), as 'join' [" .. method .. "]", function()
      local p = assert(ctx.Process{}:start())
      assert.matches("^" .. here .. ":%d+: bad argument #1 to 'join' %(timeout is NaN%)$",
        err_of(function() p:join(0 / 0) end))
      assert.equal(0, p:join())
      p:close()
    end)

    it("for a child's parent_process():join with a bad timeout [" .. method .. "]", function()
      local p = assert(ctx.Process{target = function()
        local ok, err = pcall(function() process.parent_process():join(0 / 0) end)
        local ok2, err2 = pcall(function() process.parent_process().join() end)
        return ok, err, ok2, err2
      end}:start())
      p:join()
      local ok, err, ok2, err2 = p:result()
      assert.is_false(ok)
      assert.matches("^" .. here .. ":%d+: bad argument #1 to 'join' %(timeout is NaN%)$", err)
      assert.is_false(ok2)
      assert.matches("^" .. here .. ":%d+: bad argument #1 to 'join' %(ParentProcess expected, got no value%)$", err2)
      p:close()
    end)
  end)
end)

describe("a child's error", function()
  before_each(H.snapshot)
  after_each(H.check)

  local function inner() error("deep down") end
  local function outer() inner() end

  H.each_method(function(ctx, method)
    it("shows the child's frames only, never luamp's or the parent's [" .. method .. "]", function()
      local p = assert(ctx.Process{target = outer})
      p:start()
      p:join()
      local tb = p.error
      assert.matches("^" .. here .. ":%d+: deep down\nstack traceback:\n", tb)
      assert.truthy(tb:find("in upvalue 'inner'", 1, true), tb)
      assert.truthy(tb:find(here:gsub("%%", "") .. ":%d+: in function <"), tb)
      for _, bad in ipairs{"bootstrap", "process.Process.start", "main chunk", "child_main",
                           "in field 'call'", "init.lua", "process/", "busted"} do
        assert.falsy(tb:find(bad, 1, true), bad .. " in:\n" .. tb)
      end
      p:close()
    end)

    it("names the module's chunks as installed (process/proc.lua) [" .. method .. "]", function()
      local pi = require "process.pi"
      local p = assert(ctx.Process{target = pi.leibniz, args = {0, 1}})
      p:start()
      p:join()
      -- pi.leibniz raises at its caller, Process:run in lua/process/proc.lua
      assert.matches("^process/proc%.lua:%d+: bad argument #1 to ", p.error)
      p:close()
    end)

    it("shows non-string error values as lua.c does [" .. method .. "]", function()
      local cases = {
        {"42", "42"},
        {"4.5", "4.5"},
        {"{}", "(error object is a table value)"},
        {"setmetatable({}, {__tostring = function() return 'custom' end})", "custom"},
        {"true", "(error object is a boolean value)"},
      }
      for _, c in ipairs(cases) do
        -- made in the child: a metatable is not sent to spawn children
        local make = load("return " .. c[1])
        local p = assert(ctx.Process{target = function() error(make()) end})
        p:start()
        p:join()
        assert.equal(c[2] .. "\nstack traceback:", p.error:match("^[^\n]*\n[^\n]*"))
        p:close()
      end
    end)
  end)
end)

describe("a callable table as target", function()
  before_each(H.snapshot)
  after_each(H.check)

  local callable = setmetatable({base = 40}, {__call = function(self, a) return self.base + a end})

  H.each_method(function(ctx, method)
    if method == "fork" then
      it("runs under fork, called with its arguments [fork]", function()
        local p = assert(ctx.Process{target = callable, args = {2}}:start())
        assert.equal(0, p:join())
        assert.equal(42, p:result())
        p:close()
      end)
    else
      it("is refused at start, before any process exists [" .. method .. "]", function()
        local p = ctx.Process{target = callable, args = {2}}
        local ok, err = pcall(p.start, p)
        assert.is_false(ok)
        assert.equal("target: cannot send a callable table to a " .. method ..
          " child (metatables are not sent); use a function", err)
        assert.matches("^" .. here .. ":%d+: target: cannot send a callable table",
          err_of(function() p:start() end))
        assert.is_nil(p.pid)
        -- still startable with a function
        local q = assert(ctx.Process{target = function(a) return callable.base + a end, args = {2}}:start())
        q:join()
        assert.equal(42, q:result())
        q:close()
        p:close()
      end)
    end
  end)
end)

describe("version and help", function()
  local version = assert(os.getenv("LUAMP_VERSION"), "LUAMP_VERSION (meson's project version) not set")

  it("process._VERSION is 'luamp' and meson's project version", function()
    assert.equal("luamp " .. version, process._VERSION)
  end)

  it("luamp --version prints the version and exits 0, running nothing", function()
    local out, err, code = H.run(H.luamp .. " --version")
    assert.equal(0, code, err)
    assert.equal("", err)
    assert.matches("^luamp " .. version:gsub("%p", "%%%0") .. " %(Lua 5%.4%.%d+%)\n$", out)
  end)

  it("luamp --help prints the usage on stdout, says process is preloaded, exits 0", function()
    local out, err, code = H.run(H.luamp .. " --help")
    assert.equal(0, code, err)
    assert.equal("", err)
    assert.matches("^usage: luamp %[options%] %[script %[args%]%]\n", out)
    assert.truthy(out:find("'process' and 'process.pi' preloaded", 1, true), out)
    for _, opt in ipairs{"-e stat", "-i", "-l mod", "-v", "-E", "-W", "--help", "--version", "--"} do
      assert.truthy(out:find("\n  " .. opt .. " ", 1, true), opt)
    end
  end)

  it("a bad option still prints the usage on stderr and exits 1", function()
    local out, err, code = H.run(H.luamp .. " --helpme")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^luamp: unrecognized option '%-%-helpme'\nusage: luamp", err)
  end)

  it("the man page documents every option --help lists", function()
    local f = assert(io.open(H.srcdir .. "/doc/luamp.1"))
    local man = f:read("a")
    f:close()
    assert.matches('\n%.TH LUAMP 1 "[^"]+" "luamp @VERSION@"', man)
    local out = H.run(H.luamp .. " --help")
    for opt in out:gmatch("\n  (%-%-?%a+)") do
      local roff = "\n.B" .. (opt:match("^%-[el]$") and "I" or "") .. " " .. opt:gsub("%-", "\\-")
      assert.truthy(man:find(roff, 1, true), opt .. " not in doc/luamp.1")
    end
  end)
end)
