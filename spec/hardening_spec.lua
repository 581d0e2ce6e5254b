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

describe("Connections", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("recv returns nil, 'recv: strerror', ENAME on an OS refusal (not the bare name)", function()
    local a, b = process.Pipe()
    assert(a:send("unread")) -- b closes with it unread: a's next read is refused
    b:close()
    local v, err, ename = a:recv()
    assert.is_nil(v)
    assert.are.equal("recv: Connection reset by peer", err)
    assert.are.equal("ECONNRESET", ename)
    a:close()
  end)

  it("recv and recv_bytes raise 'connection closed' once the peer has closed", function()
    local a, b = process.Pipe()
    b:close()
    assert.has_error(function() a:recv() end, "connection closed")
    assert.has_error(function() a:recv_bytes() end, "connection closed")
    a:close()
  end)

  it("send to a closed peer returns nil, 'send: Broken pipe', 'EPIPE'", function()
    local a, b = process.Pipe()
    b:close()
    assert.are.same({ nil, "send: Broken pipe", "EPIPE" }, { a:send(1) })
    a:close()
  end)

  H.each_method(function(ctx, m)
    it("carries 4 writers x 4 readers on one Pipe without loss or desync [" .. m .. "]", function()
      local r, w = ctx.Pipe(false)
      local back_r, back_w = ctx.Pipe(false)
      local N, big = 2000, string.rep("b", 40000) -- some messages take the memfd path
      local writers, readers = {}, {}
      for k = 1, 4 do
        writers[k] = ctx.Process{target = function()
          for i = 1, N do assert(w:send({ k, i, i % 97 == 0 and big or "s" })) end
        end}
        readers[k] = ctx.Process{target = function()
          local sum, n, bad = 0, 0, 0
          while true do
            local v = r:recv()
            if v == false then break end
            n = n + 1
            sum = sum + v[1] * 100000 + v[2]
            if v[3] ~= (v[2] % 97 == 0 and big or "s") then bad = bad + 1 end
          end
          back_w:send({ n, sum, bad })
        end}
      end
      for k = 1, 4 do assert(readers[k]:start()); assert(writers[k]:start()) end
      for k = 1, 4 do assert.are.equal(0, writers[k]:join(60)) end
      for _ = 1, 4 do assert(w:send(false)) end -- one end mark per reader
      local n, sum, bad = 0, 0, 0
      for _ = 1, 4 do
        assert.is_true(back_r:poll(60))
        local t = back_r:recv()
        n, sum, bad = n + t[1], sum + t[2], bad + t[3]
      end
      for k = 1, 4 do assert.are.equal(0, readers[k]:join(60)) end
      local want = 0
      for k = 1, 4 do want = want + k * 100000 * N + N * (N + 1) // 2 end
      assert.are.equal(4 * N, n)
      assert.are.equal(want, sum)
      assert.are.equal(0, bad)
      for _, c in ipairs{ r, w, back_r, back_w } do c:close() end
      for k = 1, 4 do writers[k]:close(); readers[k]:close() end
    end)
  end)
end)

describe("the forkserver", function()
  local ctx = process.get_context("forkserver")
  local function state(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    local st = f and f:read("a"):match("^%d+ %b() (%a)")
    if f then f:close() end
    return st
  end

  before_each(function()
    assert(ctx.Process{target = function() end}:start()):join() -- the server runs
    H.snapshot()
  end)
  after_each(H.check)

  it("takes its children with it when it dies: none runs on unkillable", function()
    local p = ctx.Process{target = function() while true do end end}
    assert(p:start())
    local server = assert(require("process.internal").forkserver_pid())
    os.execute("kill -KILL " .. server)
    assert.are.equal(255, p:join(30))
    local st = state(p.pid)
    assert.is_true(st == nil or st == "Z", "the child runs on: " .. tostring(st))
    p:close()
  end)

  it("starts right after it was killed, 40 rounds (dead connections are retried)", function()
    for i = 1, 40 do
      local server = assert(require("process.internal").forkserver_pid())
      os.execute("kill -KILL " .. server)
      local p = ctx.Process{target = function(x) return x * 2 end, args = { i }}
      local ok, err, ename = p:start()
      assert.is_truthy(ok, "round " .. i .. ": " .. tostring(err) .. " " .. tostring(ename))
      assert.are.equal(0, p:join(30))
      assert.are.equal(2 * i, p:result())
      p:close()
    end
  end)

  it("puts nothing on disk: it starts with TMPDIR pointing nowhere", function()
    local out, err, code = H.run("TMPDIR=/nonexistent/luamp-test " .. H.luamp .. " -e " .. H.q([[
      local process = require "process"
      local p = process.get_context("forkserver").Process{target = function() return "ran" end}
      assert(p:start()); p:join()
      print(p:result())
    ]]))
    assert.are.equal(0, code, err)
    assert.are.equal("ran\n", out)
  end)

  it("leaves nothing in TMPDIR when its owner is killed while starting it", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    assert(require("lfs").mkdir(tmp))
    for i = 1, 10 do
      -- the kill lands somewhere in the server's start (0-9 ms in)
      -- the owner runs in the background and is killed by its own pid ($!),
      -- so no kill can miss it and leave it looping
      H.run("TMPDIR=" .. tmp .. " " .. H.luamp .. " -e " .. H.q([[
        local process = require "process"
        local ctx = process.get_context("forkserver")
        while true do assert(ctx.Process{target = function() end}:start()):join() end
      ]]) .. " & pid=$!; sleep 0.00" .. (i - 1) .. "; kill -KILL $pid; wait $pid")
    end
    local left = {}
    for name in require("lfs").dir(tmp) do
      if name ~= "." and name ~= ".." then left[#left + 1] = name end
    end
    os.remove(tmp)
    assert.are.same({}, left)
  end)

end)
