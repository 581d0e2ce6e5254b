-- process/init.lua - the `process` module: the Process class and the
-- module functions (README.md, "The process API"), over the C core
-- (src/lua/lproc.c).
--
-- Lua owns the object model (names, daemon flags, state checks, error
-- messages); C owns every system call.  This file is compiled into the
-- library; it is called with the core table and returns the module.
-- It must never fork, wait or signal by itself.
local core = ...

local getpid = core.getpid
local error, type, rawget, rawset, select = error, type, rawget, rawset, select
local setmetatable, tostring = setmetatable, tostring
local fmt = string.format

local M = {}
-- Hooks for the runner, the specs and the benchmarks, kept out of the
-- public table: require "process.internal" (see the end of this file).
local internal = {}

-- An error value as lua.c shows it: strings as they are, numbers
-- converted, a value with __tostring through it, anything else named by
-- its type.  Used by every handler that reports a child's or a task's error.
function internal.error_text(msg)
  if type(msg) == "number" then
    return tostring(msg) -- lua.c's lua_tostring converts numbers
  elseif type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if type(mt) == "table" and mt.__tostring then return tostring(msg) end
    return string.format("(error object is a %s value)", type(msg))
  end
  return msg
end

-- Per-process bookkeeping; a child starts it afresh (see bootstrap).
local state = {
  current = nil,   -- this process's Process object
  parent = false,  -- parent_process() object, made on first use in a child
  parent_pid = false,
  parent_name = false,
  counter = 0,     -- names Process-N
  seq = 0,         -- start order, for active_children()
  children = {},   -- started, not yet reaped Process objects (false: none yet)
  nchildren = 0,   -- how many
  sweep_at = 64,   -- cleanup() sweeps them at this many
  method = nil,    -- set by set_start_method
}

-- The start methods, the default first (get_all_start_methods), and
-- those whose child is a copy of the caller (src/start/method.h: the
-- methods are known there, never by name here).
local AVAILABLE, COPIES_CALLER = core.methods()
local START_METHODS = {}
for _, m in ipairs(AVAILABLE) do START_METHODS[m] = true end

local function argerror(n, fname, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 1) + 1)
end

-- A timeout argument (nil: forever); errors point at the caller's caller.
local function opt_timeout(t, fname, n)
  if t ~= nil and type(t) ~= "number" then
    argerror(n or 1, fname, "number expected, got " .. type(t), 3)
  end
  if t ~= t then argerror(n or 1, fname, "timeout is NaN", 3) end
  return t
end

-- How luaL_traceback names a function: by where package.loaded holds it,
-- else by how it was called, else by where it was defined.
local function loaded_name(f)
  for modname, mod in next, package.loaded do
    if rawequal(mod, f) then return modname end
    if type(mod) == "table" then
      for k, v in next, mod do
        if rawequal(v, f) and type(k) == "string" then
          local name = modname .. "." .. k
          return name:sub(1, 3) == "_G." and name:sub(4) or name
        end
      end
    end
  end
end

-- What luaL_checkudata says when a method gets no object of its class
-- (p.start() for p:start()), named after the method as it was called
-- and pointing at the line that called it.  `level` is the method's
-- level as seen from bad_self's caller.
local function bad_self(self, tname, level)
  local ar = debug.getinfo(level + 1, "n")
  local name = ar and (ar.name or loaded_name(debug.getinfo(level + 1, "f").func)) or "?"
  local mt = getmetatable(self)
  local got = self == nil and "no value"
    or type(mt) == "table" and type(rawget(mt, "__name")) == "string" and mt.__name
    or type(self)
  if ar and ar.namewhat == "method" then
    error(fmt("calling '%s' on bad self (%s expected, got %s)", name, tname, got), level + 2)
  end
  error(fmt("bad argument #1 to '%s' (%s expected, got %s)", name, tname, got), level + 2)
end

----------------------------------------------------------------------------
-- The Process class
----------------------------------------------------------------------------

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

local bootstrap, make_payload -- defined below

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
  local method = self._start_method or state.method or AVAILABLE[1]
  local popen, err, ename
  if COPIES_CALLER[method] then
    warn_threads()
    popen, err, ename = core.start(method, rawget(self, "_daemon"))
  else
    if type(rawget(self, "_target")) == "table" then
      error(fmt("target: cannot send a callable table to a %s child (metatables are not " ..
        "sent); use a function", method), 2)
    end
    local pl
    pl, err, ename = make_payload(self)
    if not pl then return nil, err, ename end
    popen, err, ename = core.start(method, rawget(self, "_daemon"), pl)
  end
  if not popen then return nil, err, ename end
  if popen == true then bootstrap(self) end -- the child: never returns
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

M.Process = Process

----------------------------------------------------------------------------
-- The child's side
----------------------------------------------------------------------------

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
  msg = internal.error_text(msg)
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

-- In the child, right after fork: become the current process and run.
-- Every page written here is copied from the parent, so the child writes
-- little: existing fields only, no new tables before the target runs.
function bootstrap(self, parent_name)
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

----------------------------------------------------------------------------
-- spawn and forkserver: the payload a fresh runtime starts from
----------------------------------------------------------------------------

-- The codec names an unsendable value from the payload's root; say it the
-- way the user wrote it: args[2].handler, target<upvalue 'f'>, run...
local function user_path(msg)
  msg = tostring(msg)
  local rules = {
    { "^process%.obj%._target", "target" },
    { "^process%.obj%._args", "args" },
    { "^process%.obj%.", "" },
    { "^process%.obj", "process" },
    { "^process%.class%[%d+%]%.?", "" },
  }
  for _, r in ipairs(rules) do
    local out, n = msg:gsub(r[1], r[2], 1)
    if n > 0 then return out end
  end
  return msg
end

-- Encode what the child needs, before any process exists: the object (its
-- target, args, name, identity and extra fields), its class chain up to
-- Process (for a subclass's run), the start method, and the parent's
-- package.path, package.cpath and working directory.  Raises with the
-- path of an unsendable value.
function make_payload(self)
  local chain = {}
  local cls = getmetatable(self).__class
  while cls and cls ~= Process do
    chain[#chain + 1] = cls
    local mt = getmetatable(cls)
    cls = mt and mt.__index
  end
  local env = { path = package.path, cpath = package.cpath, cwd = core.getcwd() }
  local boot = { obj = self, class = chain, method = state.method or false,
                 parent_name = state.current._name }
  local ok, pl, err, ename = pcall(core.payload, env, boot)
  if not ok then
    error(user_path(pl), 3)
  end
  return pl, err, ename
end

-- The child's end when the payload itself cannot be used (a module its
-- target needs is missing, the directory is gone): reported like an error
-- of the target.
local function child_failed(msg)
  msg = tostring(msg)
  io.stderr:write(fmt("Process (spawned by %d):\n%s\n", state.parent_pid or 0, msg))
  io.stderr:flush()
  pcall(core.send_result, "E", msg:sub(1, core.ERROR_MAX))
  core.exit(1)
end

local function load_payload()
  local env = core.child_env()
  package.path, package.cpath = env.path, env.cpath
  if env.cwd then
    local ok, err = core.chdir(env.cwd)
    if not ok then error(err, 0) end
  end
  return core.child_value()
end

-- The runner's child mode (src/runner/main.c):
--   child_main("--luamp-child", method, args...)
-- the method's arguments are its own (src/start/<method>.c); a forkserver
-- returns here when its owner ends, and in each child it forks.
function internal.child_main(mode, method, ...)
  if mode ~= "--luamp-child" or type(method) ~= "string" then
    error("luamp: unknown child mode", 0)
  end
  state.parent_pid = core.become(method, ...)
  if not state.parent_pid then return end -- no child to be: the owner has ended
  local ok, boot = pcall(load_payload)
  if not ok then child_failed(boot) end
  -- Re-chain the class: each table of the chain extends the next (a class
  -- that came as a module reference is already chained).
  local base = Process
  for i = #boot.class, 1, -1 do
    local cls = boot.class[i]
    if getmetatable(cls) == nil then setmetatable(cls, { __index = base, __call = new }) end
    base = cls
  end
  state.method = boot.method or nil
  bootstrap(setmetatable(boot.obj, mt_for(base)), boot.parent_name)
end

----------------------------------------------------------------------------
-- Module functions
----------------------------------------------------------------------------

state.current = setmetatable({
  _name = "MainProcess",
  _identity = {},
  _daemon = false,
  _is_current = true,
  _started = true,
}, mt_for(Process))

function M.current_process() return state.current end
function M.parent_process()
  if not state.parent and state.parent_pid then
    state.parent = setmetatable({ pid = state.parent_pid, name = state.parent_name }, ParentProcess)
  end
  return state.parent or nil
end

function M.active_children()
  local list = {}
  for p in pairs(state.children or {}) do
    if p:is_alive() then list[#list + 1] = p end
  end
  table.sort(list, function(a, b) return rawget(a, "_seq") < rawget(b, "_seq") end)
  return list
end

function M.cpu_count() return core.cpu_count() end

local function has_fileno(o)
  local ok, f = pcall(function() return o.fileno end)
  return ok and type(f) == "function"
end

-- For a public function calling the core: a bad argument the core finds
-- (luaL_argerror, which names this file's line) is raised again at the
-- public function's caller, under the public function's name.
-- reraise(fname, pcall(core.f, ...)) -> core.f's values
local function reraise(fname, ok, ...)
  if ok then return ... end
  local msg = ...
  if type(msg) == "string" then
    msg = msg:gsub("^process/init%.lua:%d+: ", "", 1)
    msg = msg:gsub("^(bad argument #%d+ to )'%?'", "%1'" .. fname .. "'", 1)
  end
  error(msg, 3)
end

-- wait(objects[, timeout]) -> the ready objects, in the order given.
function M.wait(objects, timeout)
  if type(objects) ~= "table" then argerror(1, "wait", "table expected, got " .. type(objects), 2) end
  opt_timeout(timeout, "wait", 2)
  local ar = package.loaded["process.asyncresult"] -- AsyncResults (Pool)
  if ar then
    for i = 1, #objects do
      if ar.is_result(objects[i]) then return ar.wait(objects, timeout, M.wait) end
    end
  end
  local items = {}
  for i = 1, #objects do
    local o = objects[i]
    if math.type(o) == "integer" then
      items[i] = o
    elseif is_process(o) then
      closed_check(o, 2)
      local popen = rawget(o, "_popen")
      if not popen then error("process not started", 2) end
      items[i] = popen
    elseif (type(o) == "table" or type(o) == "userdata") and has_fileno(o) then
      items[i] = o:fileno()
    else
      argerror(1, "wait", fmt("object %d is not a sentinel, Process or Connection (%s)", i, type(o)), 2)
    end
  end
  local ready, err, ename = reraise("wait", pcall(core.wait, items, timeout))
  if ready == nil then return nil, err, ename end
  for i, idx in ipairs(ready) do ready[i] = objects[idx] end
  return ready
end

M.Pipe = core.Pipe
M.Queue = core.Queue

-- Synchronisation and shared memory (src/lua/lsync.c), JoinableQueue
-- (src/lua/lqueue.c), process.sleep; contexts reach them through __index.
for _, name in ipairs { "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition",
  "Barrier", "Value", "Array", "JoinableQueue", "sleep" } do
  M[name] = core[name]
end

function M.get_start_method() return state.method or AVAILABLE[1] end

function M.get_all_start_methods()
  local t = {}
  for i, m in ipairs(AVAILABLE) do t[i] = m end
  return t
end

local function check_method(method, fname, level)
  if type(method) ~= "string" then argerror(1, fname, "string expected, got " .. type(method), level + 1) end
  if not START_METHODS[method] then error(fmt("cannot find context for '%s'", method), level + 1) end
end

-- set_start_method(m[, force]); set_start_method(nil, true) goes back to
-- the default.
function M.set_start_method(method, force)
  if method == nil and force then state.method = nil return end
  check_method(method, "set_start_method", 2)
  if state.method ~= nil and not force then error("context has already been set", 2) end
  state.method = method
end

-- Contexts: a table with its own Process class bound to one start method,
-- and the module's other functions (Pipe, Queue, wait...) through __index.
local contexts = {}
function M.get_context(method)
  if method == nil then method = M.get_start_method() end
  check_method(method, "get_context", 2)
  local ctx = contexts[method]
  if not ctx then
    local cls = Process:extend()
    rawset(cls, "_start_method", method)
    ctx = setmetatable({
      Process = cls,
      Pipe = core.Pipe,
      Queue = core.Queue,
      get_start_method = function() return method end,
      Pool = function(...) local pool, e, en = require("process.pool_local").new(method, ...) return pool, e, en end,
    }, { __index = M })
    contexts[method] = ctx
    package.loaded["process.context." .. method] = ctx
  end
  return ctx
end

-- A target holding the Process class or a context as an upvalue sends it
-- by name (the codec sends what package.loaded holds by reference, and
-- the child requires it): "process.Process", "process.context.<method>".
package.loaded["process.Process"] = Process
for _, m in ipairs(AVAILABLE) do
  package.preload["process.context." .. m] = function() return M.get_context(m) end
end

-- process.Pool and process.as_completed (lua/process/pool*.lua, loaded
-- on first use: a child that never makes a pool never loads them).
function M.Pool(...)
  local pool, err, ename = require("process.pool_local").new(nil, ...)
  return pool, err, ename
end
function M.as_completed(...)
  return require("process.asyncresult").as_completed(...)
end

-- The runner that spawn and the forkserver execute (found by default next
-- to the library, in the build tree or where it is installed).
function M.set_executable(path)
  if path ~= nil and type(path) ~= "string" then
    argerror(1, "set_executable", "string expected, got " .. type(path), 2)
  end
  reraise("set_executable", pcall(core.set_executable, path))
end

-- Run once here what every child runs: a stock interpreter binds its
-- symbols lazily, and a function first called in a child would be bound
-- there, in every child, writing to pages it shares with its parent.
core.call(handler, select, "#")
pcall(table.unpack, table.pack())

-- process.internal: hooks that are not API.
-- Test hook: make the next n calls of a system operation fail,
-- e.g. fault("fork", "EAGAIN") to see start() refused without a real
-- process limit (root ignores RLIMIT_NPROC).
internal.fault = core.fault
-- Monotonic seconds, and the codec by itself (benchmarks and tests).
internal.now = core.now
internal.WAIT_MAX = core.WAIT_MAX -- objects one wait watches (core/bounds.h)
internal.encode = core.encode
internal.decode = core.decode
-- Whether sentinels are pidfds (false: the pipe fallback is in use).
internal.have_pidfd = core.have_pidfd
-- The forkserver's pid (nil when none runs), and the runner spawn uses.
internal.forkserver_pid = core.forkserver_pid
internal.get_executable = core.get_executable
package.loaded["process.internal"] = internal

return M
