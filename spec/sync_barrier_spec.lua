-- A Barrier's action that calls wait on its own barrier (API.md
-- "Synchronisation and shared memory").  The action runs in the last
-- party to arrive, before anyone is released, so that wait could only
-- wait for itself: Python's threading.Barrier hangs there.  Here it
-- breaks the barrier: the nested wait raises at once, timeout or not, and
-- every party gets `barrier is broken`.  The parties are children joined
-- with a deadline, so a hang fails the test instead of the suite.
local process = require "process"
local H = require "spec.helper"

local now = require("process.internal").now

local function until_(f, timeout)
  local dl = now() + (timeout or 10)
  while not f() do
    assert(now() < dl, "condition not reached in time")
    process.sleep(0.005)
  end
end

-- Join every process within a deadline; a hung one is killed and fails.
local function join_all(ps)
  local hung = {}
  for name, p in pairs(ps) do
    if p:join(10) == nil then
      hung[#hung + 1] = name
      p:kill()
      p:join()
    end
  end
  table.sort(hung)
  assert.same({}, hung, "hung parties (killed)")
  for name, p in pairs(ps) do assert.equal(0, p.exitcode, name .. ": " .. tostring(p.error)) end
end

local SELF = "its action called wait on it"

-- A process's state letter (R running, S sleeping, ...; nil once reaped).
local function state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %b() (%a)")
end

H.each_method(function(ctx, method)
  describe("a Barrier whose action waits on it [" .. method .. "]", function()
    before_each(H.snapshot)
    after_each(H.check)

    -- the first party waits without a timeout; the last (a child, so the
    -- action runs there) arrives once it waits
    local function parties(b, last_target)
      local first = assert(ctx.Process{target = function(bb) return pcall(bb.wait, bb) end, args = {b}}:start())
      until_(function() return b.n_waiting == 1 end)
      local last = assert(ctx.Process{target = last_target, args = {b}}:start())
      join_all{first = first, last = last}
      return first, last
    end

    it("breaks it: the action's wait raises, every party gets barrier is broken", function()
      local b = ctx.Barrier(2, function() _G.SELF:wait() end)
      local first, last = parties(b, function(bb)
        _G.SELF = bb
        return pcall(bb.wait, bb)
      end)
      local ok, err = last:result()
      assert.is_false(ok)
      assert.matches("barrier is broken: " .. SELF, err, 1, true)
      ok, err = first:result()
      assert.is_false(ok)
      assert.matches("barrier is broken", err, 1, true)
      assert.is_true(b.broken)
      assert.equal(0, b.n_waiting)
      assert.has_error(function() b:wait(10) end, "barrier is broken")
      b:reset()
      assert.is_false(b.broken)
    end)

    it("raises at once under a timeout too; an action that catches it still leaves the barrier broken", function()
      local b = ctx.Barrier(2, function()
        local t0 = require("process.internal").now()
        local ok, err = pcall(_G.SELF.wait, _G.SELF, 60)
        _G.INNER = {ok, err, require("process.internal").now() - t0}
      end)
      local first, last = parties(b, function(bb)
        _G.SELF = bb
        local ok, err = pcall(bb.wait, bb)
        return ok, err, table.unpack(_G.INNER)
      end)
      local ok, err, inner_ok, inner_err, inner_t = last:result()
      assert.is_false(inner_ok)
      assert.matches("barrier is broken: " .. SELF, inner_err, 1, true)
      assert.is_true(inner_t < 5, "the nested wait took " .. inner_t .. " s")
      -- the action returned normally, yet the barrier broke under it
      assert.is_false(ok)
      assert.matches("barrier is broken$", err)
      ok, err = first:result()
      assert.is_false(ok)
      assert.matches("barrier is broken", err, 1, true)
      assert.is_true(b.broken)
    end)

    it("refuses only the action's own thread: another process arriving meanwhile waits for it", function()
      -- the action runs in `last` until go is set; next1 arrives while it
      -- runs and must wait for it (asleep in its wait: the only blocking
      -- call after it said it was arriving), then pass with next2
      local running, arriving, go = ctx.Event(), ctx.Event(), ctx.Event()
      local b = ctx.Barrier(2, function()
        if _G.GO then
          _G.RUNNING:set()
          assert(_G.GO:wait(10))
        end
      end)
      local wait = function(bb, ev)
        if ev then ev:set() end
        return bb:wait(10)
      end
      local first = assert(ctx.Process{target = wait, args = {b}}:start())
      until_(function() return b.n_waiting == 1 end)
      local last = assert(ctx.Process{target = function(bb, r, g)
        _G.RUNNING, _G.GO = r, g
        return bb:wait(10)
      end, args = {b, running, go}}:start())
      assert.is_true(running:wait(10))
      local next1 = assert(ctx.Process{target = wait, args = {b, arriving}}:start())
      assert.is_true(arriving:wait(10))
      until_(function() return state(next1.pid) == "S" or not next1:is_alive() end)
      go:set()
      local next2 = assert(ctx.Process{target = wait, args = {b}}:start())
      join_all{first = first, last = last, next1 = next1, next2 = next2}
      local idx = {}
      for _, p in ipairs{first, last, next1, next2} do idx[#idx + 1] = (p:result()) end
      table.sort(idx)
      assert.same({0, 0, 1, 1}, idx)
      assert.is_false(b.broken)
    end)
  end)
end)
