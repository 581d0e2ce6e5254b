-- process/contexts.lua - choosing a start method and the contexts:
-- set_start_method, get_start_method, get_all_start_methods and
-- get_context, whose tables hold their own Process class bound to one
-- method and reach the module's other functions through __index.
--
-- It must never start a process, and never know a method by name: the
-- methods are the core's list (process/state.lua).
local core = ...
local state = require "process.state"
local errors = require "process.errors"
local Process = require("process.proc").Process

local error, type, rawset, setmetatable = error, type, rawset, setmetatable
local fmt = string.format
local argerror = errors.argerror

local X = {}

local function check_method(method, fname, level)
  if type(method) ~= "string" then argerror(1, fname, "string expected, got " .. type(method), level + 1) end
  if not state.known[method] then error(fmt("cannot find context for '%s'", method), level + 1) end
end

-- X.install(M): the public functions of this file, into the module table
-- M (which every context reaches through __index).
function X.install(M)
  function M.get_start_method() return state.method or state.available[1] end

  function M.get_all_start_methods()
    local t = {}
    for i, m in ipairs(state.available) do t[i] = m end
    return t
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

  -- A target holding a context as an upvalue sends it by name (the codec
  -- sends what package.loaded holds by reference, and the child requires
  -- it): "process.context.<method>".
  for _, m in ipairs(state.available) do
    package.preload["process.context." .. m] = function() return M.get_context(m) end
  end
end

return X
