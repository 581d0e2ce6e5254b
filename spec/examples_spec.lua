-- Every example runs under the runner and prints what it promises, so the
-- examples never rot.
local H = require "spec.helper"

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function sorted(t)
  table.sort(t)
  return t
end

local examples = {
  ["start_methods.lua"] = function(out)
    assert.same({
      "fork       exitcode 0  sum 60  pi 3.141592  global set in the parent",
      "spawn      exitcode 0  sum 60  pi 3.141592  global nil",
      "forkserver exitcode 0  sum 60  pi 3.141592  global nil",
    }, lines(out))
  end,
  ["workers.lua"] = function(out)
    assert.same({"Worker", "Worker", "Worker", "Worker", "Worker"}, lines(out))
  end,
  ["worker_args.lua"] = function(out)
    assert.same({"Worker:\t0", "Worker:\t1", "Worker:\t2", "Worker:\t3", "Worker:\t4"}, sorted(lines(out)))
  end,
  ["names.lua"] = function(out)
    assert.same(sorted{"worker 1\tStarting", "Process-3\tStarting", "my_service\tStarting",
      "worker 1\tExiting", "Process-3\tExiting", "my_service\tExiting"}, sorted(lines(out)))
  end,
  ["daemon.lua"] = function(out)
    local l = lines(out)
    assert.equal(3, #l)
    assert.matches("^Starting:\tdaemon\t%d+$", l[1])
    local pid = l[2]:match("^Starting:\tnon%-daemon\t(%d+)$")
    assert.equal("Exiting :\tnon-daemon\t" .. pid, l[3])
  end,
  ["daemon_join.lua"] = function(out)
    assert.same({"Starting:\tdaemon", "Starting:\tnon-daemon", "Exiting :\tnon-daemon",
      "Exiting :\tdaemon"}, lines(out))
  end,
  ["daemon_join_timeout.lua"] = function(out)
    local l = lines(out)
    assert.same(sorted{"Starting:\tdaemon", "Starting:\tnon-daemon", "Exiting :\tnon-daemon",
      "d:join(1)\tnil\ttimeout", "d:is_alive()\ttrue"}, sorted(l))
    assert.not_matches("Exiting :\tdaemon", out)
  end,
  ["terminate.lua"] = function(out)
    local l = {}
    for _, x in ipairs(lines(out)) do
      if x ~= "Starting worker" then l[#l + 1] = x end -- if it got that far
    end
    assert.matches("^BEFORE:\t<Process name='Process%-1' parent=%d+ initial>\tfalse$", l[1])
    assert.matches("^DURING:\t<Process name='Process%-1' pid=%d+ parent=%d+ started>\ttrue$", l[2])
    assert.matches("^TERMINATED:\t<Process name='Process%-1' pid=%d+ parent=%d+ %a+.*>\t%a+$", l[3])
    assert.matches("^JOINED:\t<Process name='Process%-1' pid=%d+ parent=%d+ stopped exitcode=%-SIGTERM>\tfalse$", l[4])
  end,
  ["exitcode.lua"] = function(out, err)
    assert.matches("     exit_error.exitcode = 1\n        exit_ok.exitcode = 0\n" ..
      "   return_value.exitcode = 0\n         raises.exitcode = 1\n     terminated.exitcode = %-15\n$", out)
    assert.matches("^Process raises:\nexamples/exitcode.lua:%d+: There was an error!\nstack traceback:", err)
  end,
  ["first_of_three.lua"] = function(out)
    local l = lines(out)
    assert.matches("^first to finish:\tp[123]$", l[1])
    assert.matches("^next to finish:\tp[123]$", l[2])
    assert.not_equal(l[1]:match("p%d"), l[2]:match("p%d"))
    assert.equal("all finished", l[3])
  end,
  ["lifecycle.lua"] = function(out)
    -- parent and children write to one stdout: check lines, not their order
    local seen = {}
    for _, l in ipairs(lines(out)) do seen[l] = true end
    for _, l in ipairs{"is_alive() before start:\tfalse", "is_alive() after start:\ttrue", "pid:\tinteger",
      "[Worker-1] Starting", "[Worker-1] Done after 0.2s", "is_alive() after join:\tfalse", "exitcode:\t0",
      "Hello from greeter, greeting Alice", "Step 0", "Process exitcode:\t-15", "Main process finished"} do
      assert.is_true(seen[l], l)
    end
    assert.matches("\nProcess exitcode:\t%-15\nMain process finished\n$", out)
  end,
  ["pi.lua"] = function(out)
    local l = lines(out)
    assert.matches("^pi by the Leibniz series, kernel %w+, %d+ CPUs$", l[1])
    assert.equal(5, #l)
    for i, p in ipairs{1, 2, 4} do
      local terms, procs, est = l[i + 2]:match("^%s+(%d+)%s+(%d+)%s+[%d.]+%s+[%d.]+%s+([%d.]+)%s+%-?[%d.e+-]+$")
      assert.equal("1000000000", terms)
      assert.equal(tostring(p), procs)
      assert.is_true(math.abs(tonumber(est) - math.pi) < 1.1e-9)
    end
  end,
  ["sync.lua"] = function(out)
    local l = lines(out)
    assert.equal(9, #l)
    assert.same({"worker 1 done", "worker 2 done", "worker 3 done", "worker 4 done"},
      sorted{l[1], l[2], l[3], l[4]})
    assert.equal("atomic add: 80000 of 80000", l[5])
    assert.matches("^read then write: %d+ lost$", l[6])
    assert.equal("read then write under get_lock(): 0 lost", l[7])
    assert.equal("after the holder was killed:\tnil\tlock owner died\tEOWNERDEAD", l[8])
    assert.equal("and then:\ttrue", l[9])
  end,
  ["pi_series.lua"] = function(out)
    -- partial sums printed by every process; the shares add up to pi
    local total = {}
    local procs
    for l in out:gmatch("[^\n]+") do
      local p = l:match("^(%d+) process")
      if p then procs = tonumber(p); total[procs] = 0 end
      local s = l:match(": ([%d.e+-]+)$")
      if s and procs then total[procs] = total[procs] + tonumber(s) end
    end
    for _, p in ipairs{1, 2, 4} do
      assert.is_true(math.abs(total[p] - math.pi) < 1e-4, "procs " .. p .. ": " .. tostring(total[p]))
    end
  end,
  ["pool.lua"] = function(out)
    local l = lines(out)
    local est = tonumber(l[1]:match("^pi over 100000000 terms in 8 tasks on 2 workers: ([%d.]+)$"))
    assert.is_true(math.abs(est - math.pi) < 1e-7, l[1])
    assert.same({"map raised:\ttimeout", "1\tok\t1", "2\tok\t4", "3\tfailed\ttimeout", "4\tok\t16",
      "5\tfailed\tworker exited with exitcode -9", "6\tok\t36"}, {table.unpack(l, 2)})
  end,
}

-- examples checked by another test, with what they need
local elsewhere = {
  -- (pi.lua --mpi needs mpiexec: spec/mpi_test.sh runs it beside pi.lua)
}

describe("examples", function()
  before_each(H.snapshot)
  after_each(H.check)

  for name, check in pairs(examples) do
    it(name, function()
      local args = name == "pi_series.lua" and " 200000" or ""
      local out, err, code = H.run(H.luamp .. " examples/" .. name .. args)
      assert.equal(0, code, err)
      if name ~= "exitcode.lua" then assert.equal("", err) end
      check(out, err)
    end)
  end

  it("pi.lua --json prints the same table as JSON", function()
    local out, err, code = H.run(H.luamp .. " examples/pi.lua --terms 1e7 --procs 1,2 --json")
    assert.equal(0, code, err)
    local t = require("cjson").decode(out)
    assert.equal(2, #t.rows)
    assert.equal(2, t.rows[2].processes)
    assert.equal(1e7, t.rows[1].terms)
    assert.is_true(math.abs(tonumber(t.rows[2].estimate_exact) - math.pi) < 1.1e-7)
  end)

  it("pi.lua --help prints its usage on stdout and exits 0; a bad option, on stderr and 2", function()
    local out, err, code = H.run(H.luamp .. " examples/pi.lua --help")
    assert.equal(0, code, err)
    assert.equal("", err)
    assert.matches("^usage: luamp examples/pi.lua ", out)
    out, err, code = H.run(H.luamp .. " examples/pi.lua --bogus")
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("^pi.lua: unknown option '%-%-bogus'\nusage: luamp examples/pi.lua ", err)
  end)

  it("covers every example in examples/", function()
    local lfs = require "lfs"
    for f in lfs.dir("examples") do
      if f:match("%.lua$") and not elsewhere[f] then assert.is_function(examples[f], f .. " has no check") end
    end
  end)
end)
