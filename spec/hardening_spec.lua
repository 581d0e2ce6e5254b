-- spec/hardening_spec.lua - what a hostile tester found (issue 10): closed
-- standard descriptors, bad integers and strings crossing into C,
-- Connection error conventions, Pipe concurrency, the forkserver's trust
-- in its peer and its life, descriptor limits when collecting results.
local H = require "spec.helper"
local process = require "process"

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

describe("closed standard descriptors", function()
  -- The script writes to stdout and stderr while a Queue and the result
  -- channels are in use; what it saw goes to a file named by arg[1].
  local script = [[
    local process = require "process"
    local res = {}
    local q = process.Queue()
    for i = 1, 50 do
      io.write(string.rep("x", 100), "\n"); io.stdout:flush()
      io.stderr:write("y\n")
      assert(q:put(i))
    end
    local sum = 0
    for _ = 1, 50 do sum = sum + q:get(5) end
    res[#res + 1] = "queue " .. sum
    for _, m in ipairs{"fork", "spawn", "forkserver"} do
      local ctx = process.get_context(m)
      local p = ctx.Process{target = function()
        io.write(string.rep("o", 5000)); io.stdout:flush()
        io.stderr:write(string.rep("e", 5000))
        return 42
      end}
      assert(p:start()); p:join()
      local e = ctx.Process{target = function()
        io.write(string.rep("o", 5000)); io.stdout:flush()
        io.stderr:write(string.rep("e", 5000))
        error("boom")
      end}
      assert(e:start()); e:join()
      res[#res + 1] = m .. " " .. tostring(p:result()) .. " " .. tostring(e.error and e.error:match("boom"))
    end
    local f = assert(io.open(arg[1], "w"))
    f:write(table.concat(res, "\n"), "\n")
    f:close()
  ]]
  local want = "queue 1275\nfork 42 boom\nspawn 42 boom\nforkserver 42 boom\n"
  for _, case in ipairs{{"fd 1 closed", "1>&-"}, {"fds 0-2 closed", "0<&- 1>&- 2>&-"}} do
    for _, how in ipairs{"runner", "lua"} do
      it(case[1] .. " (" .. how .. "): Queue, results and errors still work", function()
        local path, out = os.tmpname(), os.tmpname()
        local f = assert(io.open(path, "w")); f:write(script); f:close()
        local interp = how == "lua" and H.lua or H.luamp
        local _, err, code = H.run("exec " .. case[2] .. "; exec " .. interp .. " " .. path .. " " .. out)
        local got = readfile(out)
        os.remove(path); os.remove(out)
        assert.are.equal(0, code, err)
        assert.are.equal(want, got)
      end)
    end
  end
end)

describe("integers and strings crossing into C", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("wait refuses a descriptor beyond int instead of polling its truncated alias", function()
    local r, w = process.Pipe()
    w:send(1) -- r is ready: an alias of it would be reported ready
    local big = r:fileno() + (1 << 32)
    local ok, err = pcall(process.wait, { big }, 0)
    assert.is_false(ok)
    assert.matches("out of range", err)
    ok, err = pcall(process.wait, { -1 - (1 << 32) + r:fileno() }, 0)
    assert.is_false(ok)
    assert.matches("out of range", err)
    assert.are.same({ r:fileno() }, process.wait({ r:fileno() }, 0))
    r:close(); w:close()
  end)

  it("set_executable refuses a path with a zero byte instead of cutting it", function()
    local ok, err = pcall(process.set_executable, "/x\0y")
    assert.is_false(ok)
    assert.matches("zero byte", err)
    -- and the runner set before is still the one spawn uses
    local p = process.get_context("spawn").Process{target = function() return 7 end}
    assert(p:start()); p:join()
    assert.are.equal(7, p:result())
    p:close()
  end)
end)
