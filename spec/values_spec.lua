-- Values between processes: results and errors from children, Pipe and
-- Queue (doc/API.md "Values between processes", p:result(), p.error).
local process = require "process"
local H = require "spec.helper"

H.each_method(function(ctx, method)
describe("results [" .. method .. "]", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("returns every value the target returned, nils included", function()
    local p = ctx.Process{target = function(a) return a, nil, a * 2, {x = {a}} end, args = {21}}
    p:start()
    assert.equal(0, p:join())
    local r = table.pack(p:result())
    assert.equal(4, r.n)
    assert.equal(21, r[1])
    assert.is_nil(r[2])
    assert.equal(42, r[3])
    assert.same({x = {21}}, r[4])
    assert.equal(r[4], select(4, p:result())) -- decoded once
    assert.is_nil(p.error)
  end)

  it("returns nothing when the target returned nothing", function()
    local p = ctx.Process{target = function() end}
    p:start()
    p:join()
    assert.equal(0, select("#", p:result()))
  end)

  it("raises the child's error, with its traceback", function()
    local p = ctx.Process{target = function() error("There was an error!") end}
    p:start()
    assert.equal(1, p:join())
    assert.matches("There was an error!\nstack traceback:\n", p.error, 1, true)
    local ok, err = pcall(p.result, p)
    assert.is_false(ok)
    assert.equal(p.error, err)
  end)

  it("raises while running, before start, and after a kill", function()
    local p = ctx.Process{target = H.block}
    assert.has_error(function() p:result() end, "process not started")
    p:start()
    assert.has_error(function() p:result() end, "process has not finished")
    assert.is_nil(p.error)
    p:kill()
    p:join()
    assert.has_error(function() p:result() end, "process ended with exitcode -SIGKILL before returning")
  end)

  it("reports a large result lost when the child has no descriptor left for it", function()
    local out, err, code = H.run("prlimit --nofile=64:64 " .. H.luamp .. " spec/fixtures/result_emfile.lua child " .. method)
    assert.equal(0, code, err)
    assert.equal("1\tresult: Too many open files\tfalse\tresult: Too many open files\n", out)
  end)

  it("collects a large result when the parent is at its descriptor limit (the slot was reserved)", function()
    local out, err, code = H.run("prlimit --nofile=64:64 " .. H.luamp .. " spec/fixtures/result_emfile.lua parent " .. method)
    assert.equal(0, code, err)
    assert.equal("0\tnil\ttrue\t100000\n", out)
  end)

  -- A result beyond 32 KB travels in a memfd, whatever its size: 100 MB
  -- once (the size README.md promises), and 4 MB (beyond the default
  -- socket buffers) for the other ways of waiting, which drain the same
  -- channel.
  for _, case in ipairs{{"join", 100}, {"wait", 4}, {"is_alive", 4}} do
    local how, mb = case[1], case[2]
    it("brings back a " .. mb .. " MB result without deadlock, waiting with " .. how, function()
      local p = ctx.Process{target = function(n) return string.rep("r", n), 7 end, args = {mb * 1024 * 1024}}
      p:start()
      if how == "join" then
        assert.equal(0, p:join(60))
      elseif how == "wait" then
        assert.same({p}, process.wait({p}, 60))
      else
        -- is_alive drains too: call it each time the raw sentinel is ready
        -- or a deadline-bounded wait on it returns
        while p:is_alive() do process.wait({p.sentinel}, 0.05) end
      end
      assert.equal(0, p:join(60))
      local s, n = p:result()
      assert.equal(mb * 1024 * 1024, #s)
      assert.equal(7, n)
    end)
  end
end)

describe("Pipe [" .. method .. "]", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("carries values both ways across fork", function()
    local a, b = process.Pipe()
    local p = ctx.Process{target = function()
      a:close()
      local v = b:recv()
      b:send({got = v, twice = v * 2})
      b:close()
    end}
    p:start()
    b:close()
    assert.is_true(a:send(21))
    assert.same({got = 21, twice = 42}, a:recv())
    assert.has_error(function() a:recv() end, "connection closed")
    assert.equal(0, p:join())
    a:close()
  end)

  it("carries a 10 MB message intact", function()
    local a, b = process.Pipe()
    local big = string.rep("0123456789", 1024 * 1024)
    local p = ctx.Process{target = function() a:close(); b:send(big); b:send("after") end}
    p:start()
    b:close()
    assert.equal(big, a:recv())
    assert.equal("after", a:recv())
    p:join()
    a:close()
  end)

  it("is one way with duplex = false", function()
    local r, w = process.Pipe(false)
    assert.has_error(function() r:send(1) end, "connection is read-only")
    assert.has_error(function() w:recv() end, "connection is write-only")
    w:send("one way")
    assert.equal("one way", r:recv())
    r:close()
    w:close()
  end)

  it("polls with a timeout", function()
    local a, b = process.Pipe()
    assert.is_false(a:poll())
    assert.is_false(a:poll(0.01))
    b:send(1)
    assert.is_true(a:poll(0))
    assert.equal(1, a:recv())
    b:close()
    assert.is_true(a:poll(0)) -- the peer's close counts as ready
    a:close()
  end)

  it("sends raw bytes", function()
    local a, b = process.Pipe()
    a:send_bytes("\0raw\255")
    a:send_bytes("")
    assert.equal("\0raw\255", b:recv_bytes())
    assert.equal("", b:recv_bytes())
    a:close()
    b:close()
  end)

  it("reports a closed peer on send, and a closed end on use", function()
    local a, b = process.Pipe()
    b:close()
    assert.same({nil, "send: Broken pipe", "EPIPE"}, {a:send("x")})
    a:close()
    assert.has_error(function() a:send(1) end, "connection is closed")
    assert.has_error(function() a:fileno() end, "connection is closed")
    assert.equal("<Connection closed>", tostring(a))
  end)

  it("works in process.wait next to sentinels", function()
    local a, b = process.Pipe()
    local p = ctx.Process{target = H.block}
    p:start()
    assert.equal("integer", math.type(a:fileno()))
    assert.same({}, process.wait({p.sentinel, a}, 0))
    b:send("ready")
    assert.same({a}, process.wait({p.sentinel, a}, 10))
    assert.equal("ready", a:recv())
    p:kill()
    assert.same({p.sentinel}, process.wait({p.sentinel, a}, 10))
    p:join()
    a:close()
    b:close()
  end)

  it("tells a grandchild when its parent was killed", function()
    local a, b = process.Pipe()
    local mid = ctx.Process{target = function()
      local g = ctx.Process{target = function()
        process.parent_process():join()
        b:send({alive = process.parent_process():is_alive()})
      end}
      g:start()
      b:send("started")
      H.block() -- killed below: its exit clean-up never runs
    end}
    mid:start()
    b:close()
    assert.equal("started", a:recv())
    mid:kill()
    assert.equal(-9, mid:join())
    assert.is_true(a:poll(30))
    assert.same({alive = false}, a:recv())
    a:close()
  end)
end)

describe("Queue [" .. method .. "]", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("is first in, first out, with timeouts on get", function()
    local q = process.Queue()
    assert.is_true(q:empty())
    for i = 1, 100 do assert.is_true(q:put({i = i})) end
    assert.is_false(q:empty())
    assert.equal(100, q:qsize())
    for i = 1, 100 do assert.same({i = i}, q:get()) end
    assert.same({nil, "timeout"}, {q:get(0.01)})
    assert.same({nil, "timeout"}, {q:get(-1)})
  end)

  it("refuses nil and unsendable values", function()
    local q = process.Queue()
    assert.has_error(function() q:put(nil) end, "bad argument #1 to 'put' (nil cannot be put in a queue)")
    assert.has_error(function() q:put({io.stdout}) end, "value[1]: cannot send a userdata")
    assert.is_true(q:empty())
  end)

  it("blocks put on a full queue until the timeout", function()
    local q = process.Queue(2)
    q:put(1)
    q:put(2)
    assert.same({nil, "timeout"}, {q:put(3, 0.01)})
    assert.equal(1, q:get())
    assert.is_true(q:put(3, 0))
  end)

  it("delivers every message exactly once: 3 producers, 2 consumers", function()
    local q = process.Queue()
    local N = 2000
    local producers, consumers = {}, {}
    for i = 1, 3 do
      producers[i] = ctx.Process{target = function()
        for j = 1, N do q:put(i * 100000 + j) end
      end}
    end
    for i = 1, 2 do
      consumers[i] = ctx.Process{target = function()
        local got = {}
        while true do
          local v = q:get()
          if v == "stop" then break end
          got[#got + 1] = v
        end
        return got
      end}
    end
    for _, p in ipairs(producers) do p:start() end
    for _, p in ipairs(consumers) do p:start() end
    for _, p in ipairs(producers) do assert.equal(0, p:join()) end
    q:put("stop")
    q:put("stop")
    local seen, total = {}, 0
    for _, p in ipairs(consumers) do
      assert.equal(0, p:join())
      for _, v in ipairs(p:result()) do
        assert.is_nil(seen[v], "delivered twice: " .. v)
        seen[v] = true
        total = total + 1
      end
    end
    assert.equal(3 * N, total)
    for i = 1, 3 do
      for j = 1, N do assert.is_true(seen[i * 100000 + j]) end
    end
  end)

  it("raises after close", function()
    local q = process.Queue()
    q:close()
    assert.has_error(function() q:put(1) end, "queue is closed")
    assert.has_error(function() q:get() end, "queue is closed")
  end)
end)
end)
