-- process/child.lua - the child's side, once it exists: becoming the
-- current process, running the target under a message handler that shows
-- the child's own frames as lua.c would, sending the results or the
-- error, the child's os.exit, and parent_process() (the ParentProcess
-- object).
--
-- It must never start a process, and never return from bootstrap or fail:
-- a child ends in core.exit (its own clean-up, then _exit), never in the
-- parent's atexit work nor in lua_close of the state it inherited.
local core = ...
local state = require "process.state"
local errors = require "process.errors"

local error, rawget, rawset, select, pcall = error, rawget, rawset, select, pcall
local getmetatable, setmetatable, tostring = getmetatable, setmetatable, tostring
local fmt = string.format
local argerror, bad_self, opt_timeout = errors.argerror, errors.bad_self, errors.opt_timeout
local loaded_name, error_text = errors.loaded_name, errors.error_text

local C = {}

local function frame_line(ar)
  local where = ar.currentline > 0 and fmt("%s:%d:", ar.short_src, ar.currentline)
    or ar.short_src .. ":"
  local gname = loaded_name(ar.func)
  local what
  if gname then what = fmt("function '%s'", gname)
  elseif ar.namewhat ~= "" then what = fmt("%s '%s'", ar.namewhat, ar.name)
  elseif ar.what == "main" then what = "main chunk"
  elseif ar.what ~= "C" then what = fmt("function <%s:%d>", ar.short_src, ar.linedefined)
  else what = "?" end
  return "\n\t" .. where .. " in " .. what .. (ar.istailcall and "\n\t(...tail calls...)" or "")
end

-- Message handler for the target: the message and a traceback of the
-- child's own frames, as lua.c prints them.  The child runs on top of its
-- parent's stack (fork) or of the runner's (spawn): the frames from
-- core.call down are not the child's and are left out.
local function handler(msg)
  msg = error_text(msg)
  -- last: the deepest of the child's frames (below it, core.call).  A
  -- level costs getinfo time in proportion to it: on a deep stack (a
  -- runaway recursion) core.call is searched from the bottom up.
  local getinfo, last = debug.getinfo, nil
  for level = 3, 200 do
    local ar = getinfo(level, "f")
    if not ar or ar.func == core.call then last = level - 1 break end
  end
  if not last then
    local lo, hi = 200, 400
    while getinfo(hi, "l") do lo, hi = hi, hi * 2 end
    while hi - lo > 1 do
      local mid = (lo + hi) // 2
      if getinfo(mid, "l") then lo = mid else hi = mid end
    end
    last = lo
    for level = lo, 201, -1 do
      if getinfo(level, "f").func == core.call then last = level - 1 break end
    end
  end
  local lines = { msg, "\nstack traceback:" }
  local n = last - 1 -- frames 2..last; like luaL_traceback, 10 first and 11 last
  for level = 2, last do
    if n > 21 and level == 12 then
      lines[#lines + 1] = fmt("\n\t...\t(skipping %d levels)", n - 21)
    elseif n <= 21 or level < 12 or level > last - 11 then
      lines[#lines + 1] = frame_line(getinfo(level, "Slnft"))
    end
  end
  return table.concat(lines)
end

-- os.exit inside a child: its own clean-up, then _exit (never the
-- parent's atexit work, never lua_close of the inherited state).
local function child_exit(code)
  if code == nil or code == true then
    code = 0
  elseif code == false then
    code = 1
  else
    code = math.tointeger(code)
    if code == nil then argerror(1, "exit", "integer expected", 2) end
  end
  core.exit(code)
end

----------------------------------------------------------------------------
-- parent_process(): the ParentProcess object
----------------------------------------------------------------------------

local ParentProcess = {}

local function parent_sentinel(self, soft) -- soft: an OS refusal is returned
  local fd = rawget(self, "sentinel")
  if fd == nil then
    local err, ename
    fd, err, ename = core.parent_sentinel()
    if fd == nil then if soft then return nil, err, ename end error(err, 3) end
    rawset(self, "sentinel", fd)
  end
  return fd
end

local function parent_check(self)
  if getmetatable(self) ~= ParentProcess then bad_self(self, "ParentProcess", 2) end
end

function ParentProcess:is_alive()
  parent_check(self)
  return #core.wait({ parent_sentinel(self) }, 0) == 0
end

function ParentProcess:join(timeout)
  parent_check(self)
  local fd, err, ename = parent_sentinel(self, true)
  local ready
  if fd then ready, err, ename = core.wait({ fd }, opt_timeout(timeout, "join")) end
  if not ready then return nil, err, ename end -- OS refusals as Process:join's
  if #ready == 0 then return nil, "timeout" end
  return true
end

ParentProcess.__index = function(self, k)
  if k == "sentinel" then
    local fd = parent_sentinel(self) -- not a tail call: it raises at level 3
    return fd
  end
  return ParentProcess[k]
end

function ParentProcess:__tostring()
  return fmt("<ParentProcess name='%s' pid=%d>", self.name, self.pid)
end

local function parent_process()
  if not state.parent and state.parent_pid then
    state.parent = setmetatable({ pid = state.parent_pid, name = state.parent_name }, ParentProcess)
  end
  return state.parent or nil
end

----------------------------------------------------------------------------
-- Running the target, and the end
----------------------------------------------------------------------------

-- The child's end: send the results (or the error), then exit.
local function finish(self, ok, ...)
  local err
  if ok then
    if select("#", ...) > 0 then
      local sent, why = pcall(core.send_result, "R", table.pack(...))
      if not sent then err = why end
    end
  else
    err = ...
  end
  local code = 0
  if err ~= nil then
    err = tostring(err)
    io.stderr:write(fmt("Process %s:\n%s\n", rawget(self, "_name"), err))
    io.stderr:flush()
    -- kept short enough to go inline: it cannot fail for want of a memfd
    pcall(core.send_result, "E", err:sub(1, core.ERROR_MAX))
    code = 1
  end
  core.exit(code)
end

-- C.bootstrap(obj[, parent_name]): in the child, right after fork (or once
-- a fresh runtime has rebuilt obj): become the current process, run, send,
-- exit.  Every page written here is copied from the parent, so the child
-- writes little: existing fields only, no new tables before the target runs.
function C.bootstrap(self, parent_name)
  state.parent_pid = rawget(self, "_parent_pid")
  state.parent_name = parent_name or state.current._name
  state.parent = false
  state.current = self
  state.children = false
  state.nchildren = 0
  state.sweep_at = 64
  state.counter = 0
  rawset(self, "_is_current", true)
  rawset(self, "_started", true)
  os.exit = child_exit -- luacheck: ignore 122 (the child's own os.exit)
  finish(self, core.call(handler, self.run, self))
end

-- C.fail(msg): the child's end when the payload itself cannot be used (a
-- module its target needs is missing, the directory is gone): reported
-- like an error of the target.
function C.fail(msg)
  msg = tostring(msg)
  io.stderr:write(fmt("Process (spawned by %d):\n%s\n", state.parent_pid or 0, msg))
  io.stderr:flush()
  pcall(core.send_result, "E", msg:sub(1, core.ERROR_MAX))
  core.exit(1)
end

-- C.install(M): the public functions of this file, into the module table.
function C.install(M)
  M.parent_process = parent_process
end

-- Run once here what every child runs: a stock interpreter binds its
-- symbols lazily, and a function first called in a child would be bound
-- there, in every child, writing to pages it shares with its parent.
core.call(handler, select, "#")
pcall(table.unpack, table.pack())

return C
