-- process/init.lua - the `process` module table (README.md, "The process
-- API"): the module functions over the C core (src/lua/lproc.c), with the
-- Process class, the contexts and the child's side gathered from the
-- other files of lua/process/.
--
-- This file and the others below are compiled into the library; each is
-- called with the core table.  Which file owns what (each says what it
-- must never do at its top):
--   errors.lua    error wording and levels, function names, error values
--   state.lua     this process's bookkeeping, the start methods offered
--   payload.lua   what a spawn/forkserver child starts from, both sides
--   child.lua     the child's side: run, report, exit; parent_process()
--   proc.lua      the Process class; a fresh child's object rebuilt
--   contexts.lua  start-method choice and contexts
--   internal.lua  process.internal, the hooks that are not API
-- They require one another in that order, never back.  This file must
-- never fork, wait or signal by itself, and the module table must hold
-- nothing but the API (doc/API.md).
local core = ...
-- Loaded here in that order, so that no file's load nests in another's:
-- nested loads allocate the interpreter's call records (CallInfo) deep
-- and scattered among the chunks' objects, and every fork round trip then
-- writes (copies) one more page of them (bench: page faults per round trip).
local errors = require "process.errors"
local state = require "process.state"
require "process.payload"
require "process.child"
local proc = require "process.proc"
require "process.internal" -- package.loaded["process.internal"], for the runner

local error, type, rawget, pcall = error, type, rawget, pcall
local fmt = string.format
local argerror, opt_timeout, reraise = errors.argerror, errors.opt_timeout, errors.reraise
local is_process, closed_check = proc.is_process, proc.closed_check

local M = {}

M.Process = proc.Process
require("process.child").install(M)    -- parent_process
require("process.contexts").install(M) -- start methods, get_context

function M.current_process() return state.current end

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

return M
