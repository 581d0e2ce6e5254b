-- process/state.lua - what this process knows about itself: its own
-- Process object, its parent, the children it started and has not reaped,
-- the start method in force, and the start methods the core offers.
--
-- A plain table, shared by the other files of the module; a child starts
-- its part afresh (process/child.lua, bootstrap).  It must never hold a
-- function, never call the core but to ask which methods exist, and never
-- know a start method by name (src/start/method.h knows them).
local core = ...

-- The start methods, the default first (get_all_start_methods), and
-- those whose child is a copy of the caller.
local available, copies_caller = core.methods()
local known = {}
for _, m in ipairs(available) do known[m] = true end

return {
  current = nil,   -- this process's Process object (process/proc.lua sets it)
  parent = false,  -- parent_process() object, made on first use in a child
  parent_pid = false,
  parent_name = false,
  counter = 0,     -- names Process-N
  seq = 0,         -- start order, for active_children()
  children = {},   -- started, not yet reaped Process objects (false: none yet)
  nchildren = 0,   -- how many
  sweep_at = 64,   -- cleanup() sweeps them at this many
  method = nil,    -- set by set_start_method (nil: the default)
  available = available,         -- the start methods, the default first
  copies_caller = copies_caller, -- method -> true when its child is a copy of the caller
  known = known,                 -- method -> true for every method available
}
