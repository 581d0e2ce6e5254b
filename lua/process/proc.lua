-- process/proc.lua - the Process class: making objects (and subclasses),
-- their properties and methods, starting a child in the parent, and the
-- bookkeeping of the children started (reaped exactly once, swept when
-- nobody joins them); and in a child a fresh runtime started (spawn,
-- forkserver), the object rebuilt from its payload (child_main).
--
-- Lua owns the object model (names, daemon flags, state checks, error
-- messages); the core (src/lua/lproc.c) owns every system call.  It must
-- never fork, wait or signal by itself, and never ask which start method
-- is which but through state.copies_caller (src/start/method.h).
local core = ...
local state = require "process.state"
local errors = require "process.errors"
local payload = require "process.payload"
local child = require "process.child"

local getpid = core.getpid
local error, type, rawget, rawset = error, type, rawget, rawset
local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring
local fmt = string.format
local argerror, bad_self, opt_timeout = errors.argerror, errors.bad_self, errors.opt_timeout

local Process = {}
local getters, setters = {}, {}
local instance_mt = setmetatable({}, { __mode = "k" }) -- class -> mt
local process_mts = setmetatable({}, { __mode = "k" }) -- mt -> true

local function is_process(o)
  return type(o) == "table" and process_mts[getmetatable(o)] == true
end

local function closed_check(self, level)
  if not is_process(self) then bad_self(self, "process.Process", level) end
  if rawget(self, "_closed") then error("process object is closed", level + 1) end
end

local function is_child(self)
  return rawget(self, "_parent_pid") == getpid() and not rawget(self, "_is_current")
end

local function mt_for(cls)
  local mt = instance_mt[cls]
  if mt then return mt end
  mt = {
    __name = "process.Process",
    __index = function(self, k)
      local get = getters[k]
      if get then
        local v = get(self) -- not a tail call: getters raise at level 3
        return v
      end
      return cls[k]
    end,
    __newindex = function(self, k, v)
      local set = setters[k]
      if set then
        set(self, v)
      elseif getters[k] then
        error(fmt("cannot assign to '%s'", k), 2)
      else
        rawset(self, k, v)
      end
    end,
    __tostring = function(self) return self:_repr() end,
    __class = cls, -- for spawn: the class travels with the object
  }
  instance_mt[cls] = mt
  process_mts[mt] = true
  return mt
end

local KNOWN = { target = true, args = true, name = true, daemon = true }

local function new(cls, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerror(1, "Process", "table expected, got " .. type(opts), 2) end
  local target, args, name, daemon = opts.target, opts.args, opts.name, opts.daemon
  if target ~= nil and type(target) ~= "function" then
    local mt = getmetatable(target)
    if not (type(mt) == "table" and mt.__call) then
      argerror(1, "Process", "target must be a function, got " .. type(target), 2)
    end
  end
  if args ~= nil and type(args) ~= "table" then
    argerror(1, "Process", "args must be a table, got " .. type(args), 2)
  end
  if name ~= nil and type(name) ~= "string" then
    argerror(1, "Process", "name must be a string, got " .. type(name), 2)
  end
  if daemon ~= nil and type(daemon) ~= "boolean" then
    argerror(1, "Process", "daemon must be a boolean, got " .. type(daemon), 2)
  end
  local cur = state.current
  if daemon == nil then daemon = cur._daemon end
  state.counter = state.counter + 1
  local identity = {}
  for i, v in ipairs(cur._identity) do identity[i] = v end
  identity[#identity + 1] = state.counter
  -- Every field start() sets is present from the start (false): setting
  -- it later then never grows the table, which after fork would allocate
  -- in pages the child shares.
  local self = {
    _target = target,
    _args = args or {},
    _name = name or ("Process-" .. table.concat(identity, ":")),
    _daemon = daemon,
    _identity = identity,
    _parent_pid = getpid(),
    _popen = false,
    _pid = false,
    _started = false,
    _seq = false,
    _closed = false,
    _is_current = false,
  }
  for k, v in pairs(opts) do
    if not KNOWN[k] then
      if getters[k] or type(k) == "string" and k:sub(1, 1) == "_" then
        argerror(1, "Process", fmt("field '%s' is reserved", tostring(k)), 2)
      end
      self[k] = v
    end
  end
  return setmetatable(self, mt_for(cls))
end

setmetatable(Process, { __call = new })

-- Process:extend() -> a subclass; override run() on it.
function Process:extend()
  if type(self) ~= "table" then bad_self(self, "process.Process class", 1) end
  return setmetatable({}, { __index = self, __call = new })
end

local function exitcode_name(code)
  if code < 0 then
    local name = core.signame(-code)
    if name then return "-" .. name end
  end
  return tostring(code)
end

-- properties ---------------------------------------------------------------

function getters.name(self) return rawget(self, "_name") end
function setters.name(self, v)
  if type(v) ~= "string" then error("name must be a string", 3) end
  rawset(self, "_name", v)
end

function getters.daemon(self) return rawget(self, "_daemon") end
function setters.daemon(self, v)
  if rawget(self, "_started") then error("process has already started", 3) end
  if type(v) ~= "boolean" then error("daemon must be a boolean", 3) end
  rawset(self, "_daemon", v)
end

function getters.pid(self)
  closed_check(self, 3)
  if rawget(self, "_is_current") then return getpid() end
  return rawget(self, "_pid") or nil
end
getters.ident = getters.pid

local function reaped(self)
  local children = state.children
  if children and children[self] then
    children[self] = nil
    state.nchildren = state.nchildren - 1
  end
end

-- Reap finished children nobody joined (Python's _cleanup), so that
-- fire-and-forget starts leave no zombies and free their descriptors once
-- the objects are collected.  Amortised: a sweep only when the number of
-- unreaped children has doubled since the last one.
local function cleanup()
  if state.nchildren < state.sweep_at then return end
  for p in pairs(state.children) do
    if rawget(p, "_popen"):poll() ~= nil then reaped(p) end
  end
  state.sweep_at = math.max(64, 2 * state.nchildren)
end

function getters.exitcode(self)
  closed_check(self, 3)
  local popen = rawget(self, "_popen")
  if not popen or not is_child(self) then return nil end
  local code = popen:poll()
  if code ~= nil then reaped(self) end
  return code
end

function getters.sentinel(self)
  closed_check(self, 3)
  local popen = rawget(self, "_popen")
  if not popen then error("process not started", 3) end
  return popen:sentinel()
end

-- The child's results, fetched from the C side once, after the end.
-- Returns kind ("R", "E", "X" or false for nothing sent) and the value.
local function outcome(self)
  local kind = rawget(self, "_rkind")
  if kind == nil then
    local popen = rawget(self, "_popen")
    if not popen or not is_child(self) or popen:poll() == nil then return nil end
    reaped(self)
    local value
    kind, value = popen:take_result()
    kind = kind or false
    rawset(self, "_rkind", kind)
    rawset(self, "_rvalue", value)
  end
  return kind, rawget(self, "_rvalue")
end

function getters.error(self)
  closed_check(self, 3)
  local kind, value = outcome(self)
  if kind == "E" then return value end
  return nil
end

-- methods ------------------------------------------------------------------

-- What the child runs: the target with the arguments.
function Process:run()
  closed_check(self, 2)
  local target = rawget(self, "_target")
  if target ~= nil then
    local args = rawget(self, "_args")
    return target(table.unpack(args, 1, args.n or #args))
  end
end

-- Python 3.12+ warns too: fork copies one thread; a lock another thread
-- held at that moment stays locked in the child forever.
local warned_threads = false
local function warn_threads()
  if warned_threads then return end
  local n = core.threads()
  if n > 1 then
    warned_threads = true
    io.stderr:write(fmt("luamp: warning: this process (pid %d) has %d threads; starting a " ..
      "process with fork may deadlock the child (a lock held by another thread stays " ..
      "locked there). Use the 'forkserver' or 'spawn' start method instead.\n", getpid(), n))
    io.stderr:flush()
  end
end

function Process:start()
  closed_check(self, 2)
  if rawget(self, "_started") then error("cannot start a process twice", 2) end
  if rawget(self, "_parent_pid") ~= getpid() then
    error("can only start a process object created by current process", 2)
  end
  if state.current._daemon then
    error("daemonic processes are not allowed to have children", 2)
  end
  cleanup()
  local method = self._start_method or state.method or state.available[1]
  local popen, err, ename
  if state.copies_caller[method] then
    warn_threads()
    popen, err, ename = core.start(method, rawget(self, "_daemon"))
  else
    if type(rawget(self, "_target")) == "table" then
      error(fmt("target: cannot send a callable table to a %s child (metatables are not " ..
        "sent); use a function", method), 2)
    end
    local pl
    pl, err, ename = payload.make(self, Process)
    if not pl then return nil, err, ename end
    popen, err, ename = core.start(method, rawget(self, "_daemon"), pl)
  end
  if not popen then return nil, err, ename end
  if popen == true then child.bootstrap(self) end -- the child: never returns
  rawset(self, "_popen", popen)
  rawset(self, "_pid", popen:pid())
  rawset(self, "_started", true)
  state.seq = state.seq + 1
  rawset(self, "_seq", state.seq)
  if not state.children then state.children = {} end
  state.children[self] = true
  state.nchildren = state.nchildren + 1
  return self
end

function Process:join(timeout)
  closed_check(self, 2)
  if not is_child(self) then error("can only join a child process", 2) end
  local popen = rawget(self, "_popen")
  if not popen then error("can only join a started process", 2) end
  local code, err, ename = popen:wait(opt_timeout(timeout, "join"))
  if code == nil then
    if err then return nil, err, ename end
    return nil, "timeout"
  end
  reaped(self)
  return code
end

function Process:is_alive()
  closed_check(self, 2)
  if rawget(self, "_is_current") then return true end
  if rawget(self, "_parent_pid") ~= getpid() then error("can only test a child process", 2) end
  local popen = rawget(self, "_popen")
  if not popen then return false end
  if popen:poll() == nil then return true end
  reaped(self)
  return false
end

-- The checks before terminate, kill and interrupt signal: returns the
-- child's handle (called from the method, so errors are at level 3).
local function signal_target(self)
  closed_check(self, 3)
  local popen = rawget(self, "_popen")
  if not popen then error("can only signal a started process", 3) end
  if not is_child(self) then error("can only signal a child process", 3) end
  return popen
end

-- p:result() -> the values the target returned (beyond Python).
function Process:result()
  closed_check(self, 2)
  if not rawget(self, "_popen") then error("process not started", 2) end
  if not is_child(self) then error("can only get the result of a child process", 2) end
  local kind, value = outcome(self)
  if kind == nil then error("process has not finished", 2) end
  if kind == "E" then error(value, 0) end
  local code = rawget(self, "_popen"):poll()
  if kind == "X" then
    error(fmt("process ended with exitcode %s and its result was lost (%s)", exitcode_name(code), value), 2)
  end
  if kind == false then
    if code ~= 0 then
      error(fmt("process ended with exitcode %s before returning", exitcode_name(code)), 2)
    end
    return
  end
  return table.unpack(value, 1, value.n)
end

function Process:terminate() return signal_target(self):signal(core.SIGTERM) end
function Process:kill() return signal_target(self):signal(core.SIGKILL) end
function Process:interrupt() return signal_target(self):signal(core.SIGINT) end

function Process:close()
  if not is_process(self) then bad_self(self, "process.Process", 1) end
  if rawget(self, "_closed") then return end
  local popen = rawget(self, "_popen")
  if popen then
    if is_child(self) and popen:poll() == nil then
      error("cannot close a process while it is still running", 2)
    end
    popen:close()
    rawset(self, "_popen", false)
  end
  reaped(self)
  rawset(self, "_closed", true)
end


function Process:_repr()
  local status, exitcode
  local popen = rawget(self, "_popen")
  if rawget(self, "_is_current") then
    status = "started"
  elseif rawget(self, "_closed") then
    status = "closed"
  elseif rawget(self, "_parent_pid") ~= getpid() then
    status = "unknown"
  elseif not popen then
    status = "initial"
  else
    exitcode = popen:poll()
    status = exitcode ~= nil and "stopped" or "started"
  end
  local info = { "Process", fmt("name='%s'", rawget(self, "_name")) }
  local pid = rawget(self, "_is_current") and getpid() or rawget(self, "_pid")
  if pid and not rawget(self, "_closed") then info[#info + 1] = "pid=" .. pid end
  info[#info + 1] = "parent=" .. tostring(rawget(self, "_parent_pid"))
  info[#info + 1] = status
  if exitcode ~= nil then info[#info + 1] = "exitcode=" .. exitcode_name(exitcode) end
  if rawget(self, "_daemon") then info[#info + 1] = "daemon" end
  return "<" .. table.concat(info, " ") .. ">"
end

-- The runner's child mode (src/runner/main.c), process.internal.child_main:
--   child_main("--luamp-child", method, args...)
-- the method's arguments are its own (src/start/<method>.c); a forkserver
-- returns here when its owner ends, and in each child it forks.
local function child_main(mode, method, ...)
  if mode ~= "--luamp-child" or type(method) ~= "string" then
    error("luamp: unknown child mode", 0)
  end
  state.parent_pid = core.become(method, ...)
  if not state.parent_pid then return end -- no child to be: the owner has ended
  local ok, boot = pcall(payload.load)
  if not ok then child.fail(boot) end
  -- Re-chain the class: each table of the chain extends the next (a class
  -- that came as a module reference is already chained).
  local base = Process
  for i = #boot.class, 1, -1 do
    local cls = boot.class[i]
    if getmetatable(cls) == nil then setmetatable(cls, { __index = base, __call = new }) end
    base = cls
  end
  state.method = boot.method or nil
  child.bootstrap(setmetatable(boot.obj, mt_for(base)), boot.parent_name)
end

-- This process's own object until it starts as a child.
state.current = setmetatable({
  _name = "MainProcess",
  _identity = {},
  _daemon = false,
  _is_current = true,
  _started = true,
}, mt_for(Process))

-- A target holding the Process class as an upvalue sends it by name (the
-- codec sends what package.loaded holds by reference, and the child
-- requires it).
package.loaded["process.Process"] = Process

return {
  Process = Process,
  is_process = is_process,   -- o is a Process object
  closed_check = closed_check, -- raises unless self is an open Process object
  child_main = child_main,
}
