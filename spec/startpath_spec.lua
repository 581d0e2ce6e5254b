-- The start path (issue 13): what a child finds right after start.  Its
-- creator's private descriptors (siblings' sentinels and result channels)
-- are closed, in runs, while the user's own descriptors between them stay
-- (fork); the child knows its own pid without asking its parent's cache;
-- the parent's children records are forgotten, so a child's own children
-- are its only ones.
local process = require "process"
local H = require "spec.helper"
local lfs = require "lfs"

-- What a descriptor is, in a form that means the same in any process: a
-- pidfd by the pid it names, anything else by its link ("pipe:[1234]").
local function identity(fd)
  local f = io.open("/proc/self/fdinfo/" .. fd)
  local info = f and f:read("a") or ""
  if f then f:close() end
  local pid = info:match("\nPid:%s*(%-?%d+)")
  if pid then return "pid " .. pid end
  return lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
end

local function open_fds()
  local set = {}
  for f in lfs.dir("/proc/self/fd") do
    if f ~= "." and f ~= ".." then
      local id = identity(f)
      if id then set[#set + 1] = id end
    end
  end
  return set
end

local function own_pid()
  return tonumber(lfs.symlinkattributes("/proc/self", "target"))
end

H.each_method(function(ctx, method)
describe("start path [" .. method .. "]", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("closes the siblings' descriptors and keeps the user's between them", function()
    local siblings, pipes = {}, {}
    finally(function()
      for i = 1, #siblings do
        siblings[i]:kill()
        siblings[i]:join(30)
        siblings[i]:close()
      end
      for i = 1, #pipes do
        pipes[i][1]:close()
        pipes[i][2]:close()
      end
    end)
    -- interleave: luamp's descriptors of a sibling, then a user Pipe, ...
    for i = 1, 6 do
      siblings[i] = ctx.Process{target = H.block}
      assert(siblings[i]:start())
      local r, w = process.Pipe(false)
      pipes[i] = {r, w}
    end
    local p = ctx.Process{target = open_fds}
    assert(p:start())
    assert.equal(0, p:join(30))
    local seen = {}
    for _, id in ipairs(p:result()) do seen[id] = true end
    p:close()
    local inherits = method == "fork"
    for i = 1, 6 do
      local s = identity(siblings[i].sentinel)
      assert.is_string(s)
      assert.is_nil(seen[s], "sibling " .. i .. "'s sentinel is open in the child")
      for j = 1, 2 do
        local u = identity(pipes[i][j]:fileno())
        assert.equal(inherits, seen[u] == true, "user pipe " .. i)
      end
    end
  end)

  it("gives the child its own pid, and children of its own only", function()
    local sibling = ctx.Process{target = H.block}
    assert(sibling:start())
    local p = ctx.Process{target = function()
      local before = #process.active_children()
      local q = process.Process{target = function() return 7 end}
      q:start()
      assert(q:join(30) == 0)
      return process.current_process().pid, own_pid(), before, q:result(), #process.active_children()
    end}
    assert(p:start())
    assert.equal(0, p:join(30))
    local pid, real, before, r, after = p:result()
    assert.equal(p.pid, pid)
    assert.equal(p.pid, real)
    assert.equal(0, before)
    assert.equal(7, r)
    assert.equal(0, after)
    assert.equal(process.current_process().pid, own_pid())
    sibling:kill()
    sibling:join(30)
    sibling:close()
    p:close()
  end)

  it("starts and joins many in a row, descriptors and children all released", function()
    local live = {}
    for i = 1, 40 do
      local p = ctx.Process{target = function() return i end}
      assert(p:start())
      live[#live + 1] = p
      if i % 8 == 0 then
        for _, q in ipairs(live) do
          assert.equal(0, q:join(30))
          q:close()
        end
        live = {}
      end
    end
    assert.same({}, process.active_children())
  end)
end)
end)
