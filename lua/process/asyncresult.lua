-- process/asyncresult.lua - AsyncResult (what apply_async and map_async
-- return), process.as_completed, and process.wait over AsyncResults.
--
-- Transport-independent: a result only knows its pool, and the pool
-- exposes what waiting needs (README "Pool"):
--   pool:_wait_for(cond, deadline, arg)
--                                   runs the pool's bookkeeping until
--                                   cond(arg) is true or the monotonic
--                                   deadline passes (nil: none)
--   pool:_fds()                     descriptors whose readiness means the
--                                   pool has work (nil: the backend has
--                                   none, waits are then sliced)
--   pool:_next_wake()               the pool's own earliest deadline
--   pool:_step()                    the bookkeeping, without blocking
-- A result is completed by the pool with R._complete(r, ok, values) and
-- runs its callbacks from the pool's callback queue, in the caller.
local core = ...

local error, type, setmetatable, getmetatable = error, type, setmetatable, getmetatable
local fmt = string.format
local now = core.now

local R = {}
local AsyncResult = {}
AsyncResult.__index = AsyncResult
AsyncResult.__name = "process.AsyncResult"
R.AsyncResult = AsyncResult

local seq = 0 -- completion order, for as_completed

-- Fields left nil are not written: a result is made per task, and an
-- empty slot in the constructor still costs.  Fields: _pool, _id, _done,
-- _ok, _values (table.pack'd values, or the error message), _seq
-- (completion order), _callback, _error_callback and _cancel (the
-- pool's: function(r) -> true when cancelled).  A pool may make a
-- result itself, as a table with these fields beside its own (none of
-- them named as AsyncResult's methods) and AsyncResult as metatable:
-- process.pool's apply_async does (its task is its result: one table).
function R.new(pool, id, opts, cancel)
  if opts then
    return setmetatable({ _pool = pool, _id = id, _done = false, _seq = false,
                          _cancel = cancel,
                          _callback = opts.callback, _error_callback = opts.error_callback },
                        AsyncResult)
  end
  return setmetatable({ _pool = pool, _id = id, _done = false, _seq = false,
                        _cancel = cancel }, AsyncResult)
end

-- The condition a result's waits pass to the pool (one for all results).
local function is_done(r) return r._done end

function R.is_result(o)
  return getmetatable(o) == AsyncResult
end

-- Complete r once; callbacks are queued on the pool (they run in the
-- caller, after the bookkeeping step that completed r).
function R._complete(r, ok, values)
  if r._done then return false end
  r._done = true
  r._ok = ok
  r._values = values
  seq = seq + 1
  r._seq = seq
  local pool = r._pool
  if ok and r._callback then
    pool:_queue_callback(r._callback, values)
  elseif not ok and r._error_callback then
    pool:_queue_callback(r._error_callback, table.pack(values))
  end
  return true
end

local function opt_timeout(t, fname)
  if t ~= nil and type(t) ~= "number" then
    error(fmt("bad argument #1 to '%s' (number expected, got %s)", fname, type(t)), 3)
  end
  if t == nil or t >= 1e9 then return nil end
  return now() + math.max(t, 0)
end

local function check(self, fname)
  if getmetatable(self) ~= AsyncResult then
    error(fmt("bad argument #1 to '%s' (AsyncResult expected, got %s)", fname, type(self)), 3)
  end
end

function AsyncResult:ready()
  check(self, "ready")
  if not self._done then self._pool:_step() end
  return self._done
end

function AsyncResult:successful()
  check(self, "successful")
  if not self._done then self._pool:_step() end
  if not self._done then error("result is not ready", 2) end
  return self._ok
end

-- wait([timeout]) -> true when ready, false when the timeout ran out.
function AsyncResult:wait(timeout)
  check(self, "wait")
  local deadline = opt_timeout(timeout, "wait")
  if not self._done then self._pool:_wait_for(is_done, deadline, self) end
  return self._done
end

-- get([timeout]) -> the values; raises the task's error; nil, "timeout".
function AsyncResult:get(timeout)
  if getmetatable(self) ~= AsyncResult then check(self, "get") end
  local deadline = timeout ~= nil and opt_timeout(timeout, "get") or nil
  if not self._done then
    self._pool:_wait_for(is_done, deadline, self)
    if not self._done then return nil, "timeout" end
  end
  if not self._ok then error(self._values, 0) end
  local v = self._values
  return table.unpack(v, 1, v.n)
end

-- cancel() -> true when the task will not complete normally any more
-- (it fails with "cancelled"); false when it had already finished.
function AsyncResult:cancel()
  check(self, "cancel")
  if self._done then return false end
  return self._cancel(self)
end

function AsyncResult:__tostring()
  local st = not self._done and "pending" or (self._ok and "ok" or "failed")
  return fmt("<AsyncResult task=%s %s>", tostring(self._id), st)
end

----------------------------------------------------------------------------
-- waiting on many: process.wait and process.as_completed
----------------------------------------------------------------------------

-- The descriptor of a non-result object process.wait accepts.
local function fd_of(o)
  if math.type(o) == "integer" then return o end
  if type(o) == "table" and rawget(o, "_popen") ~= nil then return o.sentinel end
  return o:fileno()
end

-- wait(objects, timeout, base_wait) -> the ready objects in the order
-- given ({} on timeout).  base_wait is process.wait without results.
function R.wait(objects, timeout, base_wait)
  local deadline = timeout and timeout < 1e9 and now() + math.max(timeout, 0) or nil
  local others, pools = {}, {}
  for _, o in ipairs(objects) do
    if R.is_result(o) then
      pools[o._pool] = true
    else
      others[#others + 1] = o
    end
  end
  local function collect()
    for p in pairs(pools) do p:_step() end
    local ready_other = {}
    if #others > 0 then
      for _, o in ipairs(base_wait(others, 0)) do ready_other[o] = true end
    end
    local ready = {}
    for _, o in ipairs(objects) do
      if (R.is_result(o) and o._done) or ready_other[o] then ready[#ready + 1] = o end
    end
    return ready
  end
  while true do
    local ready = collect()
    if #ready > 0 then return ready end
    local t = now()
    if deadline and t >= deadline then return ready end
    -- one sleep on everything: the pools' descriptors and the others'
    local fds, wake, sliced = {}, deadline, false
    for p in pairs(pools) do
      local pf = p:_fds()
      if pf then
        for _, fd in ipairs(pf) do fds[#fds + 1] = fd end
      else
        sliced = true
      end
      local w = p:_next_wake()
      if w and (not wake or w < wake) then wake = w end
    end
    for _, o in ipairs(others) do fds[#fds + 1] = fd_of(o) end
    local left = wake and math.max(0, wake - t) or nil
    if sliced and (not left or left > 0.01) then left = 0.01 end
    core.pool_wait(fds, left)
  end
end

-- as_completed(results[, timeout]): an iterator over the results in the
-- order they complete, each once; raises on timeout.
function R.as_completed(results, timeout)
  if type(results) ~= "table" then
    error(fmt("bad argument #1 to 'as_completed' (table expected, got %s)", type(results)), 2)
  end
  if timeout ~= nil and type(timeout) ~= "number" then
    error(fmt("bad argument #2 to 'as_completed' (number expected, got %s)", type(timeout)), 2)
  end
  local pending = {}
  for i, r in ipairs(results) do
    if not R.is_result(r) then
      error(fmt("bad argument #1 to 'as_completed' (item %d is not an AsyncResult)", i), 2)
    end
    pending[#pending + 1] = r
  end
  local deadline = timeout and now() + math.max(timeout, 0) or nil
  local seen = {}
  return function()
    while #pending > 0 do
      -- the earliest completed first
      local best, bi
      for i, r in ipairs(pending) do
        if r._done and not seen[r] and (not best or r._seq < best._seq) then best, bi = r, i end
      end
      if best then
        seen[best] = true
        table.remove(pending, bi)
        return best
      end
      local left = deadline and deadline - now() or nil
      if left and left <= 0 then
        error(fmt("as_completed: timeout, %d of %d results unfinished", #pending, #results), 2)
      end
      R.wait(pending, left, nil)
    end
    return nil
  end
end

return R
