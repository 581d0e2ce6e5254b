-- process.pi: the native kernel as a function and as a process target,
-- and pi.parallel.
local process = require "process"
local pi = require "process.pi"
local H = require "spec.helper"

-- the plain loop, with Kahan summation so the reference is exact enough
local function naive(m, n)
  local s, c = 0.0, 0.0
  for k = m, n do
    local y = (k % 2 == 1 and 1 or -1) / (2 * k - 1) - c
    local t = s + y
    c = (t - s) - y
    s = t
  end
  return s
end

describe("process.pi", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("names the code path it chose", function()
    assert.is_true(pi.impl == "avx512" or pi.impl == "avx2" or pi.impl == "scalar")
  end)

  it("sums any range like the plain loop", function()
    for _, r in ipairs{{1, 1}, {2, 2}, {1, 2}, {1, 3}, {1, 7}, {2, 9}, {3, 17}, {1, 1000}, {999, 1001},
      {12345, 67890}, {1, 100001}} do
      local got, want = pi.leibniz(r[1], r[2]), naive(r[1], r[2])
      assert.is_true(math.abs(got - want) <= 1e-14 * math.max(1, math.abs(want)),
        ("%d..%d: %.17g vs %.17g"):format(r[1], r[2], got, want))
      assert.equal("float", math.type(got))
    end
    assert.equal(1.0, pi.leibniz(1, 1))
    assert.equal(-1 / 3, pi.leibniz(2, 2))
  end)

  it("accepts floats with an integer value, such as 1e6", function()
    assert.equal(pi.leibniz(1, 1000000), pi.leibniz(1.0, 1e6))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() pi.leibniz(0, 5) end)
    assert.has_error(function() pi.leibniz(5, 4) end)
    assert.has_error(function() pi.leibniz(1.5, 4) end)
    assert.has_error(function() pi.leibniz(1) end)
    assert.has_error(function() pi.leibniz(nil, 2) end)
    assert.has_error(function() pi.leibniz(1, 2^54) end)
    local ok, err = pcall(pi.leibniz, 0, 5)
    assert.is_false(ok)
    assert.matches("m must be >= 1", err, 1, true)
    ok, err = pcall(pi.leibniz, 5, 4)
    assert.is_false(ok)
    assert.matches("n must be >= m", err, 1, true)
  end)

  it("is a C function usable directly as a process target", function()
    local p = process.Process{target = pi.leibniz, args = {1, 1e7}}
    p:start()
    assert.equal(0, p:join())
    assert.equal(pi.leibniz(1, 1e7), p:result())
  end)

  it("splits the series across processes and gets the same estimate", function()
    local one = pi.parallel{terms = 1e8, processes = 1}
    for _, procs in ipairs{2, 3, 4} do
      local est, err, t = pi.parallel{terms = 1e8, processes = procs}
      assert.is_true(math.abs(est - one) <= 8 * 4.5e-16, procs .. ": " .. est .. " vs " .. one)
      assert.is_true(math.abs(err - (est - math.pi)) == 0)
      assert.equal(procs, #t.children)
      assert.equal(1, t.children[1].first)
      assert.equal(1e8, t.children[procs].last)
      for i = 2, procs do assert.equal(t.children[i - 1].last + 1, t.children[i].first) end
      for _, c in ipairs(t.children) do assert.is_true(c.seconds >= 0) end
      assert.is_true(t.wall > 0)
    end
    assert.is_true(math.abs(one - math.pi) < 1.1e-8)
  end)

  it("reports progress from the children", function()
    local calls, last = 0, nil
    local est = pi.parallel{terms = 4e7, processes = 2, progress = function(done, total)
      calls = calls + 1
      last = {done, total}
    end}
    assert.is_true(calls >= 1)
    assert.same({4e7, 4e7}, last)
    assert.is_true(math.abs(est - math.pi) < 1e-7)
  end)

  it("the native kernel publishes its progress in a shared Array (luamp_shared_get)", function()
    local arr = process.Array("int64", 3, {lock = false})
    local s = pi.leibniz(1, 3e7, arr, 2)
    assert.same({0, 30000000, 0}, arr:totable())
    assert.is_true(math.abs(4 * s - 4 * pi.leibniz(1, 3e7)) < 1e-14)
    -- from a child, seen by the parent while it runs
    local p = process.Process{target = pi.leibniz, args = {1, 4e8, arr, 1}}
    p:start()
    p:join()
    assert.equal(4e8, arr[1])
    assert.has_error(function() pi.leibniz(1, 10, {}, 1) end)
    assert.has_error(function() pi.leibniz(1, 10, process.Array("double", 1), 1) end)
    assert.has_error(function() pi.leibniz(1, 10, arr, 4) end)
  end)

  it("reports progress from a Lua kernel's children", function()
    local last
    local est = pi.parallel{terms = 2e7, processes = 2, kernel = function(m, n) return pi.leibniz(m, n) end,
      progress = function(done, total) last = {done, total} end}
    assert.same({2e7, 2e7}, last)
    assert.is_true(math.abs(est - math.pi) < 1e-6)
  end)

  it("raises on bad options", function()
    assert.has_error(function() pi.parallel(5) end, "bad argument #1 to 'parallel' (table expected, got number)")
    assert.has_error(function() pi.parallel{terms = 0} end,
      "bad argument #1 to 'parallel' (terms must be between 1 and 9007199254740992)")
    assert.has_error(function() pi.parallel{terms = 10, processes = 1.5} end,
      "bad argument #1 to 'parallel' (processes must be an integer, got 1.5)")
    assert.has_error(function() pi.parallel{terms = 10, kernel = "nope"} end,
      "bad argument #1 to 'parallel' (unknown kernel 'nope')")
  end)
end)
