-- process/errors.lua - how the module words its errors and where they
-- point: bad arguments raised at the caller's line under the public
-- name, a method called without its object named as luaL_checkudata
-- names it, how luaL_traceback names a function, and an error value
-- shown as lua.c shows it.
--
-- It owns no state and requires nothing; it must never call the core or
-- touch a process (it only words and places what its callers raise).
local error, type, rawget, rawequal, tostring = error, type, rawget, rawequal, tostring
local fmt = string.format

local E = {}

-- error(bad argument #n to 'fname' (msg)) at `level` above the caller.
function E.argerror(n, fname, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 1) + 1)
end
local argerror = E.argerror

-- A timeout argument (nil: forever); errors point at the caller's caller.
function E.opt_timeout(t, fname, n)
  if t ~= nil and type(t) ~= "number" then
    argerror(n or 1, fname, "number expected, got " .. type(t), 3)
  end
  if t ~= t then argerror(n or 1, fname, "timeout is NaN", 3) end
  return t
end

-- How luaL_traceback names a function: by where package.loaded holds it,
-- else by how it was called, else by where it was defined.
function E.loaded_name(f)
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
local loaded_name = E.loaded_name

-- What luaL_checkudata says when a method gets no object of its class
-- (p.start() for p:start()), named after the method as it was called
-- and pointing at the line that called it.  `level` is the method's
-- level as seen from bad_self's caller.
function E.bad_self(self, tname, level)
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

-- For a public function calling the core: a bad argument the core finds
-- (luaL_argerror, which may name one of this module's lines) is raised
-- again at the public function's caller, under the public function's name.
-- reraise(fname, pcall(core.f, ...)) -> core.f's values
function E.reraise(fname, ok, ...)
  if ok then return ... end
  local msg = ...
  if type(msg) == "string" then
    msg = msg:gsub("^process/[%w_]+%.lua:%d+: ", "", 1)
    msg = msg:gsub("^(bad argument #%d+ to )'%?'", "%1'" .. fname .. "'", 1)
  end
  error(msg, 3)
end

-- An error value as lua.c shows it: strings as they are, numbers
-- converted, a value with __tostring through it, anything else named by
-- its type.  Used by every handler that reports a child's or a task's
-- error (process.internal.error_text).
function E.error_text(msg)
  if type(msg) == "number" then
    return tostring(msg) -- lua.c's lua_tostring converts numbers
  elseif type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if type(mt) == "table" and mt.__tostring then return tostring(msg) end
    return fmt("(error object is a %s value)", type(msg))
  end
  return msg
end

return E
