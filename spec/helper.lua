-- spec/helper.lua - what every spec shares: leak checks (no child process,
-- no descriptor left behind by a test), running commands from outside, and
-- the paths of the build.
local lfs = require "lfs"

local H = {}

H.luamp = os.getenv("LUAMP") or "build/luamp"
if H.luamp:sub(1, 1) ~= "/" then H.luamp = os.getenv("PWD") .. "/" .. H.luamp end
H.lua = os.getenv("LUA") or "lua5.4"
H.srcdir = os.getenv("LUAMP_SRCDIR") or "."

local function fds()
  local set = {}
  for f in lfs.dir("/proc/self/fd") do
    if f ~= "." and f ~= ".." then set[tonumber(f)] = true end
  end
  return set
end

-- The start methods every behaviour is checked under (LUAMP_TEST_METHODS
-- restricts them, e.g. "fork spawn").
H.methods = {}
for m in (os.getenv("LUAMP_TEST_METHODS") or "fork spawn forkserver"):gmatch("%S+") do
  H.methods[#H.methods + 1] = m
end

-- each_method([only,] function(ctx, method) ... end): define the same
-- tests once per start method, with ctx = process.get_context(method)
-- (each test names its method: "... [spawn]").  `only` (a list of
-- methods) keeps those of them under test, for what only some methods do;
-- the order is always H.methods'.  The forkserver is started before the
-- first test so that its connection is not taken for a leak.
function H.each_method(only, body)
  if body == nil then only, body = nil, only end
  local keep
  if only then
    keep = {}
    for _, m in ipairs(only) do keep[m] = true end
  end
  local process = require "process"
  for _, m in ipairs(H.methods) do
    if not keep or keep[m] then
      local ctx = process.get_context(m)
      if m == "forkserver" then
        local p = ctx.Process{}
        assert(p:start())
        p:join()
        p:close()
      end
      body(ctx, m)
    end
  end
end

-- A target that blocks until its parent ends (or it is signalled): its
-- only upvalue is _ENV, so it travels to a spawn or forkserver child as it
-- is.
function H.block() require("process").parent_process():join() end

-- A Pool result that must fail: its error (within 20 s) matches the Lua
-- pattern; returns the error.
function H.fails_with(r, pattern)
  local ok, err = pcall(r.get, r, 20)
  if ok then error("the task should have failed", 2) end
  if not tostring(err):find(pattern) then
    error(("the task's error %q does not match %q"):format(tostring(err), pattern), 2)
  end
  return err
end

-- The forkserver's own descriptors and pid, which live as long as the
-- program (or until it dies and is restarted), are not a test's leak.
local function forkserver()
  local pid, a, b, c = require("process.internal").forkserver_pid()
  return pid, { [a or -1] = true, [b or -1] = true, [c or -1] = true }
end

-- Pids of this process's children (or of process pid's), zombies included.
function H.children(pid)
  local list = {}
  local base = "/proc/" .. (pid or "self") .. "/task"
  if not lfs.attributes(base) then return list end
  for tid in lfs.dir(base) do
    if tid ~= "." and tid ~= ".." then
      local f = io.open(base .. "/" .. tid .. "/children")
      if f then
        for kid in f:read("a"):gmatch("%d+") do list[#list + 1] = tonumber(kid) end
        f:close()
      end
    end
  end
  return list
end

local before
function H.snapshot()
  before = fds()
end

-- after_each: the test left no child and no descriptor behind.
function H.check()
  local process = require "process"
  local server, server_fds = forkserver()
  local kids = {}
  for _, pid in ipairs(H.children()) do
    if pid ~= server then kids[#kids + 1] = pid end
  end
  -- the forkserver's children are ours too; it reaps them at once, so
  -- one still listed after a short grace was left running by the test
  if server then
    for _ = 1, 50 do
      if #H.children(server) == 0 then break end
      process.wait({}, 0.01)
    end
    for _, pid in ipairs(H.children(server)) do kids[#kids + 1] = pid end
  end
  if #kids > 0 then
    for _, p in ipairs(process.active_children()) do p:kill(); p:join() end
    for _, pid in ipairs(kids) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    error("test left child processes behind: " .. table.concat(kids, " "), 2)
  end
  -- a Process object holds its sentinel until close() or collection
  collectgarbage("collect")
  collectgarbage("collect")
  local now, leaked = fds(), {}
  for fd in pairs(now) do
    if not before[fd] and not server_fds[fd] then leaked[#leaked + 1] = fd end
  end
  -- the directory handle lfs.dir held while listing is gone by now, but
  -- one listing may see the other's handle: ignore descriptors now closed
  local still = {}
  for _, fd in ipairs(leaked) do
    if lfs.attributes("/proc/self/fd/" .. fd) then still[#still + 1] = fd end
  end
  if #still > 0 then
    table.sort(still)
    error("test leaked descriptors: " .. table.concat(still, " "), 2)
  end
end


local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Run a shell command; returns stdout, stderr, exit code (-signum when
-- a signal ended it).
function H.run(cmd, stdin)
  local out, err, inf = os.tmpname(), os.tmpname(), "/dev/null"
  if stdin then
    inf = os.tmpname()
    local f = assert(io.open(inf, "wb"))
    f:write(stdin)
    f:close()
  end
  local ok, how, code = os.execute("exec 2>/dev/null; (" .. cmd .. ") < " .. inf .. " > " .. out .. " 2> " .. err)
  local o, e = readfile(out), readfile(err)
  os.remove(out)
  os.remove(err)
  if stdin then os.remove(inf) end
  if ok then return o, e, 0 end
  return o, e, how == "signal" and -code or code
end

-- Run a Lua script text under the runner (or stock lua5.4 with how="lua").
function H.script(text, how, args)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  local interp = how == "lua" and H.lua or H.luamp
  local o, e, c = H.run(interp .. " " .. path .. " " .. (args or ""))
  os.remove(path)
  return o, e, c
end

-- Quote a value for a shell command line.
function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

return H
