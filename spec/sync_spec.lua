-- Synchronisation and shared memory (doc/API.md "Synchronisation and shared
-- memory"): CPython's _TestLock, _TestSemaphore, _TestCondition,
-- _TestEvent, _TestBarrier, _TestValue and _TestArray ported (the same
-- cases, in Lua), atomic adds from many processes, and deaths: a lock
-- holder, a Condition waiter and a Barrier party SIGKILLed.  Every wait
-- has a deadline, so a hang fails the test instead of the suite.
local process = require "process"
local H = require "spec.helper"

local now, sleep = require("process.internal").now, process.sleep
local T1, T2 = 0.1, 0.2 -- CPython's TIMEOUT1/TIMEOUT2, smaller

-- Shared mappings of luamp objects in this process (/proc/self/maps).
local function mappings()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("memfd:luamp%-sync") then n = n + 1 end
  end
  return n
end

local maps_before
local function snapshot()
  H.snapshot()
  collectgarbage("collect")
  maps_before = mappings()
end
local function check()
  H.check()
  collectgarbage("collect")
  collectgarbage("collect")
  assert.equal(maps_before, mappings(), "shared mappings left behind")
end

local function elapsed(f, ...)
  local t0 = now()
  local r = table.pack(f(...))
  return now() - t0, table.unpack(r, 1, r.n)
end

-- Start a child and return it; kill_all/join_all at the end of a test.
local function spawn(ctx, f, ...)
  local p = ctx.Process{target = f, args = table.pack(...)}
  assert(p:start())
  return p
end

local function join_all(ps, timeout)
  for _, p in ipairs(ps) do
    local code = p:join(timeout or 10)
    if code == nil then p:kill(); p:join() end
    assert.equal(0, code, p.error)
  end
end

-- Wait (with a deadline) until f() is truthy.
local function until_(f, timeout)
  local dl = now() + (timeout or 10)
  while not f() do
    assert(now() < dl, "condition not reached in time")
    sleep(0.005)
  end
end

describe("process.sleep", function()
  it("sleeps on a monotonic clock and rejects NaN", function()
    local t = elapsed(sleep, 0.05)
    assert.is_true(t >= 0.05 and t < 1)
    assert.is_true(elapsed(sleep, -1) < 0.05)
    assert.has_error(function() sleep(0 / 0) end)
    assert.has_error(function() sleep("x") end)
  end)

  it("is not cut short by a handled signal", function()
    -- the runner's SIGINT handler (lua.c's) interrupts the script at its
    -- next instruction, after the sleep: an EINTR must not end it early
    local out, err, code = H.script([[
      local process = require "process"
      local t0 = require("process.internal").now()
      os.execute("(sleep 0.05; kill -INT " .. process.current_process().pid .. ") &")
      local ok, why = pcall(function() process.sleep(1) end)
      print(require("process.internal").now() - t0 >= 1, ok, why)
    ]])
    assert.equal(0, code, err)
    assert.matches("^true\tfalse\t.*interrupted!\n$", out)
  end)
end)

H.each_method(function(ctx, method)
describe("Lock, RLock [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  it("_TestLock.test_lock", function()
    local lock = ctx.Lock()
    assert.is_true(lock:acquire())
    assert.same({nil, "timeout"}, {lock:acquire(0)})
    assert.is_true(lock:locked())
    assert.is_nil(lock:release())
    assert.is_false(lock:locked())
    assert.has_error(function() lock:release() end, "release unlocked lock")
  end)

  it("_TestLock.test_rlock", function()
    local lock = ctx.RLock()
    assert.is_true(lock:acquire())
    assert.is_true(lock:acquire())
    assert.is_true(lock:acquire())
    lock:release(); lock:release(); lock:release()
    assert.has_error(function() lock:release() end, "cannot release un-acquired lock")
  end)

  it("_TestLock.test_lock_context: with, guard, and release on error", function()
    local lock = ctx.Lock()
    assert.same({3, "x"}, {lock:with(function(a, b) assert.is_true(lock:locked()); return a + b, "x" end, 1, 2)})
    assert.is_false(lock:locked())
    assert.has_error(function() lock:with(function() error("boom") end) end)
    assert.is_false(lock:locked())
    do
      local _ <close> = lock:guard()
      assert.is_true(lock:locked())
    end
    assert.is_false(lock:locked())
    pcall(function() local _ <close> = lock:guard(); error("x") end)
    assert.is_false(lock:locked())
  end)

  it("excludes across processes and times out", function()
    local lock, e = ctx.Lock(), ctx.Event()
    local p = spawn(ctx, function(l, e) l:acquire(); e:set(); process.parent_process():join(5) end, lock, e)
    assert.is_true(e:wait(10))
    assert.is_true(lock:locked())
    local t, ok, why = elapsed(lock.acquire, lock, T1)
    assert.is_nil(ok); assert.equal("timeout", why)
    assert.is_true(t >= T1)
    p:kill(); p:join()
    -- it died holding the lock: reported once, then usable
    assert.same({nil, "lock owner died", "EOWNERDEAD"}, {lock:acquire(5)})
    assert.is_true(lock:acquire(5))
    lock:release()
  end)

  it("a holder SIGKILLed inside acquire..release: a blocked acquire elsewhere gets EOWNERDEAD", function()
    local lock, e = ctx.RLock(), ctx.Event()
    local holder = spawn(ctx, function(l, e) l:acquire(); l:acquire(); e:set(); process.sleep(60) end, lock, e)
    assert.is_true(e:wait(10))
    local waiter = spawn(ctx, function(l)
      local ok, why, ename = l:acquire(10)
      local again = l:acquire(10)
      l:release()
      return ok, why, ename, again
    end, lock)
    sleep(0.05)
    holder:kill(); holder:join()
    assert.equal(0, waiter:join(10))
    assert.same({nil, "lock owner died", "EOWNERDEAD", true}, {waiter:result()})
    assert.is_true(lock:acquire(1))
    lock:release()
  end)

  it("with and guard raise 'lock owner died' once after a holder's death; f does not run", function()
    for _, use in ipairs{"with", "guard"} do
      local lock, e = ctx.Lock(), ctx.Event()
      local p = spawn(ctx, function(l, e) l:acquire(); e:set(); process.sleep(60) end, lock, e)
      assert.is_true(e:wait(10))
      p:kill(); p:join()
      local ran = false
      local f = function() ran = true; return "ran" end
      local ok, err = pcall(function()
        if use == "with" then return lock:with(f) end
        local _ <close> = lock:guard()
        return f()
      end)
      assert.is_false(ok)
      assert.matches("lock owner died", err)
      assert.is_false(ran)
      assert.is_false(lock:locked())
      assert.equal("ran", lock:with(f)) -- reported once: usable again
      assert.is_false(lock:locked())
    end
  end)

  it("releasing a lock held by another process raises", function()
    local lock = ctx.Lock()
    lock:acquire()
    local p = spawn(ctx, function(l) return pcall(l.release, l) end, lock)
    p:join(10)
    local ok, err = p:result()
    assert.is_false(ok)
    assert.matches("release unlocked lock", err)
    lock:release()
  end)
end)

describe("Semaphore [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  local function test_semaphore(sem)
    assert.is_true(sem:acquire())
    assert.equal(1, sem:get_value())
    assert.is_true(sem:acquire())
    assert.equal(0, sem:get_value())
    assert.same({nil, "timeout"}, {sem:acquire(0)})
    assert.equal(0, sem:get_value())
    sem:release()
    assert.equal(1, sem:get_value())
    sem:release()
    assert.equal(2, sem:get_value())
  end

  it("_TestSemaphore.test_semaphore", function()
    local sem = ctx.Semaphore(2)
    test_semaphore(sem)
    sem:release()
    assert.equal(3, sem:get_value())
    sem:release(2)
    assert.equal(5, sem:get_value())
  end)

  it("_TestSemaphore.test_bounded_semaphore", function()
    local sem = ctx.BoundedSemaphore(2)
    test_semaphore(sem)
    assert.has_error(function() sem:release() end, "semaphore released too many times")
    assert.equal(2, sem:get_value())
  end)

  it("_TestSemaphore.test_timeout", function()
    local sem = ctx.Semaphore(0)
    assert.same({nil, "timeout"}, {sem:acquire(0)})
    for _, t in ipairs {T1, T2} do
      local dt, ok = elapsed(sem.acquire, sem, t)
      assert.is_nil(ok)
      assert.is_true(dt >= t and dt < t + 2)
    end
  end)

  it("bad arguments raise", function()
    assert.has_error(function() ctx.Semaphore(-1) end)
    assert.has_error(function() ctx.Semaphore(1.5) end)
    assert.has_error(function() ctx.Semaphore(1):release(0) end)
    -- the count never wraps: past math.maxinteger a release is refused
    local big = ctx.Semaphore(math.maxinteger)
    assert.has_error(function() big:release() end, "semaphore released too many times")
    assert.equal(math.maxinteger, big:get_value())
    local zero = ctx.Semaphore(0)
    zero:release(math.maxinteger)
    assert.has_error(function() zero:release(1) end, "semaphore released too many times")
    assert.equal(math.maxinteger, zero:get_value())
  end)

  it("gives back the slots of a SIGKILLed holder to a blocked waiter", function()
    local sem, e = ctx.Semaphore(2), ctx.Event()
    local holder = spawn(ctx, function(s, e) s:acquire(); s:acquire(); e:set(); process.sleep(60) end, sem, e)
    assert.is_true(e:wait(10))
    assert.equal(0, sem:get_value())
    local waiter = spawn(ctx, function(s) local r = s:acquire(10); s:release(); return r end, sem)
    sleep(0.05)
    holder:kill(); holder:join()
    assert.equal(0, waiter:join(10))
    assert.is_true(waiter:result())
    assert.equal(2, sem:get_value())
  end)

  if method == "fork" then
    it("a fork child inheriting an open guard does not release its parent's unit", function()
      local sem = ctx.Semaphore(1)
      do
        local g <close> = sem:guard()
        -- the child's copy of the guard is closed there (as a state
        -- closed at exit would): it must not give back the parent's unit
        local p = spawn(ctx, function() getmetatable(g).__close(g) end)
        join_all {p}
        assert.equal(0, sem:get_value())
      end
      assert.equal(1, sem:get_value())
    end)
  end

  it("a unit released for another process is not given back twice", function()
    local sem, e = ctx.BoundedSemaphore(1), ctx.Event()
    local holder = spawn(ctx, function(s, e) s:acquire(); e:set(); process.sleep(60) end, sem, e)
    assert.is_true(e:wait(10))
    sem:release() -- on the holder's behalf
    holder:kill(); holder:join()
    assert.equal(1, sem:get_value())
  end)
end)

describe("Event [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  it("_TestEvent.test_event", function()
    local event = ctx.Event()
    assert.is_false(event:is_set())
    assert.is_false(event:wait(0))
    local t, r = elapsed(event.wait, event, T1)
    assert.is_false(r)
    assert.is_true(t >= T1)
    event:set()
    assert.is_true(event:is_set())
    assert.is_true(event:wait())
    t, r = elapsed(event.wait, event, 2)
    assert.is_true(r)
    assert.is_true(t < 1) -- at once, not after the timeout
    event:clear()
    assert.is_false(event:is_set())
    local p = spawn(ctx, function(e) process.sleep(0.05); e:set() end, event)
    assert.is_true(event:wait(10))
    join_all {p}
  end)

  it("wakes every waiting process", function()
    local event, woken = ctx.Event(), ctx.Value("int64", 0)
    local ps = {}
    for i = 1, 3 do ps[i] = spawn(ctx, function(e, w) if e:wait(10) then w:add(1) end end, event, woken) end
    sleep(0.05)
    event:set()
    join_all(ps)
    assert.equal(3, woken.value)
  end)
end)

describe("Condition [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  -- children wait on cond, counting themselves in sleeping/woken
  local function waiter(cond, sleeping, woken, timeout)
    cond:acquire()
    sleeping:release()
    cond:wait(timeout)
    woken:release()
    cond:release()
  end

  local function start_waiters(n, ...)
    local ps = {}
    for i = 1, n do ps[i] = spawn(ctx, waiter, ...) end
    return ps
  end

  local function sleepers(sleeping, n)
    for _ = 1, n do assert.is_true(sleeping:acquire(10)) end
  end

  local function woken_becomes(woken, n)
    until_(function() return woken:get_value() >= n end, 10)
    sleep(0.02)
    assert.equal(n, woken:get_value())
  end

  it("_TestCondition.test_notify", function()
    local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    local ps = start_waiters(2, cond, sleeping, woken)
    sleepers(sleeping, 2)
    sleep(0.05) -- they are in wait()
    assert.equal(0, woken:get_value())
    cond:with(cond.notify, cond)
    woken_becomes(woken, 1)
    cond:with(cond.notify, cond)
    woken_becomes(woken, 2)
    join_all(ps)
  end)

  it("_TestCondition.test_notify_all", function()
    local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    -- waiters that time out
    local ps = start_waiters(3, cond, sleeping, woken, T1)
    sleepers(sleeping, 3)
    woken_becomes(woken, 3)
    join_all(ps)
    for _ = 1, 3 do woken:acquire() end
    -- waiters that do not
    ps = start_waiters(3, cond, sleeping, woken)
    sleepers(sleeping, 3)
    sleep(0.05)
    assert.equal(0, woken:get_value())
    cond:with(cond.notify_all, cond)
    woken_becomes(woken, 3)
    join_all(ps)
  end)

  it("_TestCondition.test_notify_n", function()
    local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    local ps = start_waiters(4, cond, sleeping, woken)
    sleepers(sleeping, 4)
    sleep(0.05)
    cond:with(cond.notify, cond, 2)
    woken_becomes(woken, 2)
    cond:with(cond.notify, cond, 5) -- more than wait
    woken_becomes(woken, 4)
    cond:with(cond.notify, cond, 3) -- nobody left: no effect
    join_all(ps)
  end)

  it("_TestCondition.test_timeout", function()
    local cond = ctx.Condition()
    cond:acquire()
    local t, ok, why = elapsed(cond.wait, cond, T1)
    cond:release()
    assert.is_nil(ok); assert.equal("timeout", why)
    assert.is_true(t >= T1)
  end)

  it("_TestCondition.test_waitfor", function()
    local cond, state, ready = ctx.Condition(), ctx.Value("int32", -1), ctx.Event()
    local p = spawn(ctx, function(cond, state, ready)
      cond:acquire()
      ready:set()
      local r = cond:wait_for(function() return state.value >= 0 end, 10)
      local r2 = cond:wait_for(function() return state.value == 4 and "four" end, 10)
      cond:release()
      return r, r2
    end, cond, state, ready)
    assert.is_true(ready:wait(10))
    for i = 0, 4 do
      cond:acquire(); state.value = i; cond:notify(); cond:release()
      sleep(0.02)
    end
    join_all {p}
    assert.same({true, "four"}, {p:result()})
  end)

  it("_TestCondition.test_waitfor_timeout", function()
    local cond, state = ctx.Condition(), ctx.Value("int32", -1)
    cond:acquire()
    local t, r, why = elapsed(cond.wait_for, cond, function() return state.value == 0 end, T1)
    cond:release()
    assert.is_nil(r); assert.equal("timeout", why)
    assert.is_true(t >= T1 and t < T1 + 2)
  end)

  it("wait and notify without the lock raise", function()
    local cond = ctx.Condition(ctx.Lock())
    assert.has_error(function() cond:wait(0) end, "cannot wait on un-acquired lock")
    assert.has_error(function() cond:notify() end, "cannot notify on un-acquired lock")
    assert.has_error(function() cond:release() end, "release unlocked lock")
  end)

  it("a waiter SIGKILLed inside wait does not swallow a notify; a holder killed gives EOWNERDEAD", function()
    local cond, e = ctx.Condition(), ctx.Event()
    local dead = spawn(ctx, function(c, e) c:acquire(); e:set(); c:wait(60) end, cond, e)
    assert.is_true(e:wait(10))
    assert.is_true(cond:acquire(10)) -- dead is now inside wait
    cond:release()
    e:clear()
    local live = spawn(ctx, function(c, e) c:acquire(); e:set(); local r = c:wait(10); c:release(); return r end,
      cond, e)
    assert.is_true(e:wait(10))
    assert.is_true(cond:acquire(10)) -- live is now inside wait too
    cond:release()
    dead:kill(); dead:join()
    cond:with(cond.notify, cond, 1) -- must reach the live waiter
    assert.equal(0, live:join(10))
    assert.is_true(live:result())
    -- a process killed holding the Condition's lock
    e:clear()
    local holder = spawn(ctx, function(c, e) c:acquire(); e:set(); process.sleep(60) end, cond, e)
    assert.is_true(e:wait(10))
    holder:kill(); holder:join()
    assert.same({nil, "lock owner died", "EOWNERDEAD"}, {cond:acquire(5)})
    assert.is_true(cond:acquire(5))
    cond:release()
  end)
end)

describe("Barrier [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  local N = 3

  it("_TestBarrier.test_barrier and test_wait_return: passes, each index once", function()
    local b, seen = ctx.Barrier(N), ctx.Array("int64", N)
    local ps = {}
    for i = 1, N - 1 do
      ps[i] = spawn(ctx, function(b, seen) for _ = 1, 3 do seen:add(b:wait(10) + 1, 1) end end, b, seen)
    end
    for _ = 1, 3 do seen:add(b:wait(10) + 1, 1) end
    join_all(ps)
    assert.same({3, 3, 3}, seen:totable())
    assert.equal(N, b.parties)
    assert.equal(0, b.n_waiting)
    assert.is_false(b.broken)
  end)

  it("_TestBarrier.test_action: runs once per pass", function()
    local count = ctx.Value("int64", 0)
    local b = ctx.Barrier(N, function() count:add(1) end)
    local ps = {}
    for i = 1, N - 1 do ps[i] = spawn(ctx, function(b) b:wait(10); b:wait(10) end, b) end
    b:wait(10); b:wait(10)
    join_all(ps)
    assert.equal(2, count.value)
  end)

  it("an action that raises breaks the barrier; its error reaches the last party", function()
    local b = ctx.Barrier(2, function() error("action failed") end)
    local other = spawn(ctx, function(b) return pcall(b.wait, b, 10) end, b)
    until_(function() return b.n_waiting == 1 end)
    assert.has_error(function() b:wait(10) end)
    assert.equal(0, other:join(10))
    local ok, err = other:result()
    assert.is_false(ok); assert.matches("barrier is broken", err)
    assert.is_true(b.broken)
  end)

  it("_TestBarrier.test_abort and test_reset", function()
    local b = ctx.Barrier(N)
    local ps = {}
    for i = 1, N - 1 do ps[i] = spawn(ctx, function(b) return pcall(b.wait, b, 10) end, b) end
    until_(function() return b.n_waiting == N - 1 end)
    b:abort()
    for _, p in ipairs(ps) do
      assert.equal(0, p:join(10))
      local ok, err = p:result()
      assert.is_false(ok); assert.matches("barrier is broken", err)
    end
    assert.is_true(b.broken)
    assert.has_error(function() b:wait(1) end, "barrier is broken")
    b:reset()
    assert.is_false(b.broken)
    ps = {}
    for i = 1, N - 1 do ps[i] = spawn(ctx, function(b) return b:wait(10) end, b) end
    assert.is_number(b:wait(10))
    join_all(ps)
  end)

  it("_TestBarrier.test_timeout and test_default_timeout: the barrier breaks", function()
    local b = ctx.Barrier(N)
    local other = spawn(ctx, function(b) return pcall(b.wait, b, 10) end, b)
    until_(function() return b.n_waiting == 1 end)
    local t, ok, why = elapsed(b.wait, b, T1)
    assert.is_nil(ok); assert.equal("timeout", why)
    assert.is_true(t >= T1)
    assert.equal(0, other:join(10))
    assert.is_false((other:result()))
    assert.is_true(b.broken)
    local d = ctx.Barrier(2, nil, T1)
    assert.same({nil, "timeout"}, {d:wait()})
  end)

  it("_TestBarrier.test_single_thread", function()
    local b = ctx.Barrier(1)
    assert.equal(0, b:wait())
    assert.equal(0, b:wait())
  end)

  it("a party SIGKILLed while waiting breaks the barrier for the others", function()
    local b = ctx.Barrier(N)
    local victim = spawn(ctx, function(b) b:wait(60) end, b)
    local other = spawn(ctx, function(b) return pcall(b.wait, b, 60) end, b)
    until_(function() return b.n_waiting == 2 end)
    victim:kill(); victim:join()
    assert.equal(0, other:join(10)) -- noticed within a slice, not after 60 s
    local ok, err = other:result()
    assert.is_false(ok); assert.matches("barrier is broken", err)
    assert.has_error(function() b:wait(10) end, "barrier is broken")
  end)
end)

describe("Value, Array [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  local cases = {
    {"int64", 3, -(1 << 62)},
    {"int32", -1, 2147483647},
    {"uint8", 7, 255},
    {"double", 1.25, -0.0},
  }

  it("_TestValue.test_value: changes in a child are seen by the parent", function()
    local vs = {}
    for i, c in ipairs(cases) do vs[i] = ctx.Value(c[1], c[2]) end
    for i, c in ipairs(cases) do assert.equal(c[2], vs[i].value) end
    local p = spawn(ctx, function(vs, cases) for i, c in ipairs(cases) do vs[i].value = c[3] end end, vs, cases)
    join_all {p}
    for i, c in ipairs(cases) do
      assert.equal(c[3], vs[i].value)
      assert.equal(math.type(c[3]), math.type(vs[i].value))
    end
    assert.equal("-0.0", tostring(vs[4].value))
  end)

  it("_TestValue.test_getobj_getlock: an RLock by default, none, or the one given", function()
    local v = ctx.Value("int64", 0)
    local l = v:get_lock()
    assert.is_true(l:acquire()); assert.is_true(l:acquire()); l:release(); l:release() -- recursive
    assert.has_error(function() ctx.Value("int64", 0, {lock = false}):get_lock() end)
    local mine = ctx.Lock()
    assert.equal(mine, ctx.Value("double", 0, {lock = mine}):get_lock())
    assert.has_error(function() ctx.Value("int64", 0, {lock = {}}) end)
  end)

  it("converts exactly or raises", function()
    local v = ctx.Value("int32", 2.0)
    assert.equal(2, v.value); assert.equal("integer", math.type(v.value))
    assert.has_error(function() v.value = 1.5 end)
    assert.has_error(function() v.value = "1" end)
    assert.has_error(function() v.value = true end)
    assert.has_error(function() v.value = 2147483648 end)
    assert.has_error(function() ctx.Value("uint8", 256) end)
    assert.has_error(function() ctx.Value("uint8", -1) end)
    assert.has_error(function() ctx.Value("float", 1) end)
    assert.has_error(function() v.other = 1 end)
    local ok, err = pcall(ctx.Value, "int64", 0, {lock = 5})
    assert.is_false(ok)
    assert.matches("bad argument #3 to '[%w.]*Value' %(lock must be a boolean, a Lock or an RLock, got number%)", err)
    local d = ctx.Value("double", 3)
    assert.equal("float", math.type(d.value))
    local big = ctx.Value("int64", math.maxinteger)
    assert.equal(math.maxinteger, big.value)
    assert.equal(math.mininteger, big:add(1)) -- wraps as Lua does
    local u = ctx.Value("uint8", 250)
    assert.has_error(function() u:add(6) end)
    assert.equal(250, u.value)
    assert.equal(255, u:add(5))
  end)

  it("add and compare_exchange", function()
    local v = ctx.Value("int64", 5)
    assert.equal(8, v:add(3))
    assert.same({true, 8}, {v:compare_exchange(8, 1)})
    assert.same({false, 1}, {v:compare_exchange(8, 2)})
    local d = ctx.Value("double", 0.5)
    assert.equal(1.0, d:add(0.5))
    assert.same({true, 1.0}, {d:compare_exchange(1.0, 2.5)})
    assert.equal(2.5, d.value)
  end)

  it("N processes each adding 100000 end at exactly N x 100000", function()
    local N, K = 3, 100000
    local v, a = ctx.Value("int64", 0), ctx.Array("double", 2)
    local ps = {}
    for i = 1, N do
      ps[i] = spawn(ctx, function(v, a, K) for _ = 1, K do v:add(1); a:add(2, 0.5) end end, v, a, K)
    end
    join_all(ps, 60)
    assert.equal(N * K, v.value)
    assert.equal(N * K * 0.5, a[2])
  end)

  it("_TestArray.test_array: from a list, changed in a child", function()
    local seq = {681, 626, 934, 821, 150, 233, 548, 982, 714, 831}
    local arr = ctx.Array("int32", seq)
    assert.equal(#seq, #arr)
    assert.equal(seq[3], arr[3])
    assert.same(seq, arr:totable())
    local p = spawn(ctx, function(a) for i = 2, #a do a[i] = a[i] + a[i - 1] end end, arr)
    join_all {p}
    local want = {}
    for i, x in ipairs(seq) do want[i] = x + (want[i - 1] or 0) end
    assert.same(want, arr:totable())
    local n = 0
    for i, x in ipairs(arr) do n = n + 1; assert.equal(want[i], x) end
    assert.equal(#seq, n)
  end)

  it("_TestArray.test_array_from_size: zeros; out of range reads nil, writes raise", function()
    local arr = ctx.Array("double", 10)
    assert.equal(10, #arr)
    for i = 1, 10 do assert.equal(0.0, arr[i]); assert.equal("float", math.type(arr[i])) end
    assert.is_nil(arr[0]); assert.is_nil(arr[11]); assert.is_nil(arr[1.5])
    assert.has_error(function() arr[11] = 1 end, "index out of range")
    assert.has_error(function() arr:add(0, 1) end, "index out of range")
    assert.has_error(function() arr.x = 1 end)
    assert.has_error(function() ctx.Array("int64", 0) end)
    assert.has_error(function() ctx.Array("int64", {1, "a"}) end)
    assert.equal(3, arr:add(10, 3))
    assert.same({true, 3.0}, {arr:compare_exchange(10, 3, 4)})
  end)

  it("_TestArray.test_getobj_getlock_obj", function()
    local arr = ctx.Array("uint8", 4)
    assert.truthy(arr:get_lock():acquire())
    arr:get_lock():release()
    assert.has_error(function() ctx.Array("uint8", 4, {lock = false}):get_lock() end)
  end)

  it("objects passed twice, nested, and on to a grandchild stay one object", function()
    local v, l = ctx.Value("int64", 0), ctx.Lock()
    local a = ctx.Array("double", {0 / 0, -0.0, 1.5})
    local p = spawn(ctx, function(v1, v2, nest, lk, arr)
      local same = v1 == v2 and v1 == nest[1][1] and v1 == nest.v
      assert(lk:acquire(5)); lk:release()
      v1:add(1); nest.v:add(10)
      local g = ctx.Process{target = function(vv, aa, ll)
        assert(ll:acquire(5)); ll:release()
        vv:add(100); aa[3] = 2.5
      end, args = {nest.v, arr, lk}}
      assert(g:start())
      local code = g:join(10)
      return same, code, arr[1] ~= arr[1], 1 / arr[2]
    end, v, v, {{v}, v = v}, l, a)
    assert.equal(0, p:join(10), p.error)
    assert.same({true, 0, true, -1 / 0}, {p:result()})
    assert.equal(111, v.value)
    assert.equal(2.5, a[3])
    assert.is_false(l:locked())
  end)
end)

describe("JoinableQueue, Queue extras [" .. method .. "]", function()
  before_each(snapshot)
  after_each(check)

  it("get_nowait, put_nowait, full, qsize", function()
    local q = ctx.Queue(2)
    assert.same({nil, "empty"}, {q:get_nowait()})
    assert.is_true(q:put_nowait(1))
    assert.is_false(q:full())
    assert.is_true(q:put_nowait(2))
    assert.is_true(q:full())
    assert.equal(2, q:qsize())
    assert.same({nil, "full"}, {q:put_nowait(3)})
    assert.equal(1, q:get_nowait())
    assert.is_nil(q.join)
    q:close()
  end)

  it("join returns once every put is matched by task_done in the children", function()
    local q = ctx.JoinableQueue()
    for i = 1, 6 do q:put(i) end
    local ps = {}
    for i = 1, 2 do
      ps[i] = spawn(ctx, function(q) for _ = 1, 3 do q:get(10); process.sleep(0.01); q:task_done() end end, q)
    end
    assert.same({nil, "timeout"}, {q:join(0)})
    assert.is_true(q:join(10))
    join_all(ps)
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
    q:put(1)
    assert.same({nil, "timeout"}, {q:join(T1)})
    q:get(); q:task_done()
    assert.is_true(q:join(0))
    q:close()
  end)
end)
end)

