-- process/payload.lua - the payload a spawn or forkserver child starts
-- from, both sides: the parent encodes what the child needs before any
-- process exists (the object, its class chain, the start method, the
-- parent's package paths and working directory); the child reads it back
-- and restores the paths and the directory.
--
-- The bytes themselves are the core's (src/lua/lspawn.c, the codec).  It
-- must never start, wait for or signal a process, and never build a
-- Process object (process/proc.lua rebuilds it from what load returns).
local core = ...
local state = require "process.state"

local error, pcall, tostring = error, pcall, tostring

local PL = {}

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

-- PL.make(obj, root) -> payload | nil, err, ename.  Encodes the object
-- (its target, args, name, identity and extra fields) and its class chain
-- up to the class `root` (for a subclass's run).  Called by Process:start:
-- an unsendable value raises at start's caller, with its path.
function PL.make(self, root)
  local chain = {}
  local cls = getmetatable(self).__class
  while cls and cls ~= root do
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

-- In the child: the parent's paths and directory restored, then the boot
-- table PL.make encoded ({obj, class, method, parent_name}).  Raises when
-- the payload cannot be used (a module its target needs is missing, the
-- directory is gone).
function PL.load()
  local env = core.child_env()
  package.path, package.cpath = env.path, env.cpath
  if env.cwd then
    local ok, err = core.chdir(env.cwd)
    if not ok then error(err, 0) end
  end
  return core.child_value()
end

return PL
