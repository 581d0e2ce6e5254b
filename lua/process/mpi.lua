-- process/mpi.lua - process.mpi: the Pool over MPI ranks, and the serving
-- loop of ranks 1..N-1.  Compiled into process/mpi.so (src/mpi/lmpi.c)
-- and called with the C table (rank, size, processor_name, _send, _recv,
-- _shutdown and the protocol tags); returns the module.
--
-- Protocol (every message is codec bytes; the outer frame never carries
-- functions, the job and result blobs inside it do):
--   rank 0 -> server  TASK    {id =, timeout =, blob = encode(job, functions)}
--                     CANCEL  id          end the task's child if it runs id
--                     STOP    ""          end the running child, answer BYE
--   server -> rank 0  RESULT  {id =, status = "done", blob = encode(outcome)}
--                             {id =, status = "died", exitcode = n}
--                             {id =, status = "timeout" | "cancelled" | "error", err =}
--                     BYE     ""          sent by the C side at the end
-- job     = {f =, items = {args1, args2, ...}, init =, initargs =}
-- outcome = {ok = true, results = {pack1, pack2, ...}}
--         | {ok = false, index = i, err = msg}    (item i failed; i = 0: initializer)
--
-- Rank 0 hands a task only to an idle rank, so it always knows which task
-- each rank holds; a rank answers each task exactly once.  Each task runs
-- in a child the server forks for it (the process module's fork method),
-- so a crash, os.exit or timeout ends that child only.
local M = ...
local process = require "process"

local fmt = string.format
local encode, decode, now = process._encode, process._decode, process._now
local send, recv = M._send, M._recv
local TASK, CANCEL, STOP, RESULT = M._TASK, M._CANCEL, M._STOP, M._RESULT

local GRACE = 1.0 -- seconds between SIGTERM and SIGKILL of a task's child

local function traceback(msg)
  if type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if type(mt) == "table" and mt.__tostring then
      msg = tostring(msg)
    else
      msg = fmt("(error object is a %s value)", type(msg))
    end
  end
  local tb = debug.traceback(msg, 2)
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

----------------------------------------------------------------------------
-- The server's side (ranks 1..N-1)
----------------------------------------------------------------------------

-- In the task's child: decode the job, run it, return the outcome's bytes.
local function run_job(blob)
  local ok, job = pcall(decode, blob, true)
  if not ok or type(job) ~= "table" or type(job.items) ~= "table" then
    return encode({ok = false, index = 0, err = "cannot decode the task: " .. tostring(job)})
  end
  if job.init ~= nil then
    local a = job.initargs or {}
    local iok, err = xpcall(job.init, traceback, table.unpack(a, 1, a.n or #a))
    if not iok then return encode({ok = false, index = 0, err = tostring(err)}) end
  end
  local results = {}
  for i, a in ipairs(job.items) do
    local r = table.pack(xpcall(job.f, traceback, table.unpack(a, 1, a.n or #a)))
    if not r[1] then return encode({ok = false, index = i, err = tostring(r[2])}) end
    results[i] = table.pack(table.unpack(r, 2, r.n))
  end
  local eok, bytes = pcall(encode, {ok = true, results = results}, true)
  if eok then return bytes end
  local msg = tostring(bytes):gsub("^value%.results%[(%d+)%]%[(%d+)%]", "result of item %1, value %2")
  return encode({ok = false, index = 0, err = "the result cannot be sent: " .. msg})
end

local fork_ctx, warned

-- A server has MPI's helper threads, so the process module warns about
-- fork (once per process).  The task's child never calls MPI: it runs Lua
-- and libc only, whose malloc and stdio locks glibc resets across fork;
-- the warning would only alarm, so the first start is made without it.
local function start_quietly(p)
  if warned then return p:start() end
  warned = true
  local stderr = io.stderr
  io.stderr = {write = function(self) return self end, flush = function() end} -- luacheck: ignore 122
  local ok, a, b, c = pcall(p.start, p)
  io.stderr = stderr -- luacheck: ignore 122
  if not ok then error(a, 0) end
  return a, b, c
end

local function stop_child(p)
  if p.exitcode == nil then
    p:terminate()
    if not p:join(GRACE) then
      p:kill()
      p:join()
    end
  end
  p:close()
end

local function answer(msg) send(0, RESULT, encode(msg)) end

-- Run one task; returns true when STOP came while it ran.
local function serve_task(bytes)
  local ok, msg = pcall(decode, bytes)
  if not ok or type(msg) ~= "table" or math.type(msg.id) ~= "integer" or type(msg.blob) ~= "string" then
    answer({id = ok and type(msg) == "table" and math.tointeger(msg.id) or -1, status = "error",
      err = "malformed task message"})
    return false
  end
  local id, timeout = msg.id, tonumber(msg.timeout)
  local p = fork_ctx.Process{target = run_job, args = {msg.blob}, name = fmt("mpi-task-%d", id)}
  local started, err = start_quietly(p)
  if not started then
    answer({id = id, status = "error", err = err})
    return false
  end
  local deadline = timeout and now() + timeout
  while true do
    local slice = 0.01 -- how often MPI is looked at while the child runs
    if deadline then slice = math.max(0, math.min(slice, deadline - now())) end
    if p:join(slice) then break end
    local _, tag, b = recv(0)
    if tag == STOP then
      stop_child(p)
      return true
    elseif tag == CANCEL then
      local cok, cid = pcall(decode, b)
      if cok and cid == id then
        stop_child(p)
        answer({id = id, status = "cancelled"})
        return false
      end
    elseif tag == TASK then
      answer({id = -1, status = "error", err = "a task came to a busy rank"})
    end
    if deadline and now() >= deadline and p.exitcode == nil then
      stop_child(p)
      answer({id = id, status = "timeout", err = fmt("%g", timeout)})
      return false
    end
  end
  local code = p.exitcode
  local rok, res = pcall(p.result, p)
  p:close()
  if code == 0 and rok and type(res) == "string" then
    answer({id = id, status = "done", blob = res})
  else
    answer({id = id, status = "died", exitcode = code})
  end
  return false
end

function M._serve()
  fork_ctx = process.get_context("fork")
  while true do
    local _, tag, bytes = recv(nil, 2e-3)
    if tag == STOP then return end
    if tag == TASK and serve_task(bytes) then return end
    -- a CANCEL for a task that has already ended: nothing to do
  end
end

----------------------------------------------------------------------------
-- Rank 0: the scheduler (ranks are the workers) and the Pool
----------------------------------------------------------------------------

local sched = {
  idle = {},      -- list of idle ranks
  busy = {},      -- rank -> task it holds
  pools = {},     -- pools with queued tasks, in creation order (weak)
  next_id = 0,
  started = false,
}
setmetatable(sched.pools, {__mode = "k"})

local function start_sched()
  if sched.started then return end
  sched.started = true
  for r = M.size() - 1, 1, -1 do sched.idle[#sched.idle + 1] = r end
end

-- A task ends: record it on its pool and tell its owner.
local function settle(task, outcome)
  if task.settled then return end
  task.settled = true
  local pool = task.pool
  pool.unfinished = pool.unfinished - 1
  task.on_done(outcome)
end

local function dispatch()
  while #sched.idle > 0 do
    local picked
    for pool in pairs(sched.pools) do
      local q = pool.queue
      while q.head <= q.tail and q[q.head].settled do
        q[q.head] = nil
        q.head = q.head + 1
      end
      if q.head <= q.tail and pool.running < pool.limit then
        picked = q[q.head]
        q[q.head] = nil
        q.head = q.head + 1
        break
      end
    end
    if not picked then return end
    local rank = table.remove(sched.idle)
    sched.busy[rank] = picked
    picked.rank = rank
    picked.pool.running = picked.pool.running + 1
    send(rank, TASK, encode({id = picked.id, timeout = picked.timeout, blob = picked.blob}))
  end
end

local function failure(_, msg)
  return {ok = false, index = 0, err = msg}
end

local function on_message(src, tag, bytes)
  if tag ~= RESULT then return end
  local task = sched.busy[src]
  local ok, msg = pcall(decode, bytes)
  if not task or not ok or type(msg) ~= "table" or msg.id ~= task.id then
    io.stderr:write(fmt("process.mpi: unexpected message from rank %d ignored\n", src))
    return
  end
  sched.busy[src] = nil
  sched.idle[#sched.idle + 1] = src
  task.pool.running = task.pool.running - 1
  local status = msg.status
  if status == "done" then
    local dok, outcome = pcall(decode, msg.blob, true)
    if not dok or type(outcome) ~= "table" then
      outcome = failure(task, "the result cannot be received: " .. tostring(outcome))
    end
    settle(task, outcome)
  elseif status == "died" then
    settle(task, failure(task, fmt("worker exited with exitcode %s while running task %d (rank %d)",
      tostring(msg.exitcode), task.number, src)))
  elseif status == "timeout" then
    settle(task, failure(task, fmt("task %d: timeout after %s seconds (its worker on rank %d was terminated)",
      task.number, tostring(msg.err), src)))
  elseif status == "cancelled" then
    settle(task, failure(task, fmt("task %d cancelled", task.number)))
  else
    settle(task, failure(task, fmt("task %d failed on rank %d: %s", task.number, src, tostring(msg.err))))
  end
end

-- Make progress until done() is true or the deadline (nil: none) passes;
-- returns done().  Sleeps between probes (see lmpi.c), never spins.
local function pump(done, deadline)
  while true do
    dispatch()
    if done() then return true end
    local left
    if deadline then
      left = deadline - now()
      if left <= 0 then return done() end
    end
    local src, tag, bytes = recv(left)
    while src do
      on_message(src, tag, bytes)
      src, tag, bytes = recv(0)
    end
  end
end

local function deadline_of(timeout, fname, n)
  if timeout == nil then return nil end
  if type(timeout) ~= "number" then
    error(fmt("bad argument #%d to '%s' (number expected, got %s)", n, fname, type(timeout)), 3)
  end
  return now() + math.max(timeout, 0)
end

-- AsyncResult --------------------------------------------------------------

local AsyncResult = {}
AsyncResult.__index = AsyncResult

local function new_result(pool, on_value, on_error)
  return setmetatable({pool = pool, state = "pending", callback = on_value, error_callback = on_error, tasks = {}},
    AsyncResult)
end

local function resolve(r, ok, value)
  if r.state ~= "pending" then return end
  if ok then
    r.state, r.values = "done", value
    if r.callback then r.callback(table.unpack(value, 1, value.n)) end
  else
    r.state, r.err = "failed", value
    if r.error_callback then r.error_callback(value) end
  end
end

function AsyncResult:ready() return self.state ~= "pending" end

function AsyncResult:successful()
  if self.state == "pending" then error("result is not ready", 2) end
  return self.state == "done"
end

function AsyncResult:wait(timeout)
  local deadline = deadline_of(timeout, "wait", 1)
  return pump(function() return self.state ~= "pending" end, deadline)
end

function AsyncResult:get(timeout)
  local deadline = deadline_of(timeout, "get", 1)
  if not pump(function() return self.state ~= "pending" end, deadline) then return nil, "timeout" end
  if self.state == "failed" then error(self.err, 0) end
  return table.unpack(self.values, 1, self.values.n)
end

-- A queued task never runs; a running one's child is ended on its rank.
function AsyncResult:cancel()
  if self.state ~= "pending" then return false end
  for _, task in ipairs(self.tasks) do
    if not task.settled then
      task.on_done = function() end
      if task.rank and sched.busy[task.rank] == task then send(task.rank, CANCEL, encode(task.id)) end
      if not task.rank then settle(task, failure(task, "cancelled")) end
    end
  end
  resolve(self, false, "task cancelled")
  return true
end

AsyncResult.__name = "process.mpi.AsyncResult"
function AsyncResult:__tostring()
  return fmt("<process.mpi.AsyncResult %s>", self.state)
end

-- Pool ---------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
Pool.__name = "process.mpi.Pool"

local function argerror(n, fname, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), level + 1)
end

function M.Pool(opts)
  if M.rank() ~= 0 then error("process.mpi.Pool: only rank 0 can create a pool", 2) end
  local nservers = M.size() - 1
  if nservers < 1 then
    error("process.mpi.Pool: no serving ranks (start the job with mpiexec -n N, N >= 2, " ..
      "and load the module with -l process.mpi)", 2)
  end
  if opts == nil then opts = {} end
  if math.type(opts) == "integer" then opts = {processes = opts} end
  if type(opts) ~= "table" then argerror(1, "Pool", "table or integer expected, got " .. type(opts), 2) end
  local n = opts.processes or nservers
  if math.type(n) ~= "integer" or n < 1 or n > nservers then
    argerror(1, "Pool", fmt("processes must be an integer between 1 and %d (the serving ranks)", nservers), 2)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout < 0) then
    argerror(1, "Pool", "timeout must be a non-negative number", 2)
  end
  if opts.initializer ~= nil and type(opts.initializer) ~= "function" then
    argerror(1, "Pool", "initializer must be a function", 2)
  end
  if opts.initargs ~= nil and type(opts.initargs) ~= "table" then
    argerror(1, "Pool", "initargs must be a table", 2)
  end
  start_sched()
  local pool = setmetatable({
    limit = n, running = 0, unfinished = 0, state = "run", ntasks = 0,
    timeout = opts.timeout, init = opts.initializer, initargs = opts.initargs,
    queue = {head = 1, tail = 0},
  }, Pool)
  sched.pools[pool] = true
  return pool
end

local function check_running(pool, fname)
  if getmetatable(pool) ~= Pool then argerror(1, fname, "pool expected", 3) end
  if pool.state ~= "run" then error("pool not running", 4) end
end

-- The job's bytes; a value that cannot be sent raises at the caller's
-- line with its path as the user wrote it.
-- (items hold arg lists; single = each is {value, n = 1}: name the value)
local function job_blob(pool, f, items, name_item, single, level)
  local ok, blob = pcall(encode, {f = f, items = items, init = pool.init, initargs = pool.initargs}, true)
  if ok then return blob end
  local msg = tostring(blob)
  msg = msg:gsub("^value%.f", "f"):gsub("^value%.initargs", "initargs"):gsub("^value%.init", "initializer")
  msg = msg:gsub(single and "^value%.items%[(%d+)%]%[1%]" or "^value%.items%[(%d+)%]",
    function(i) return name_item(tonumber(i)) end)
  error(msg, level + 1)
end

-- A task of `items` (arg lists), encoded now, so a value that cannot be
-- sent raises before anything is queued; on_done gets the outcome.
local function prepare(pool, f, items, name_item, single, timeout, on_done, level)
  local blob = job_blob(pool, f, items, name_item, single, level + 1)
  sched.next_id = sched.next_id + 1
  pool.ntasks = pool.ntasks + 1
  return {id = sched.next_id, number = pool.ntasks, pool = pool, blob = blob,
    timeout = timeout or pool.timeout, on_done = on_done}
end

local function enqueue(task)
  local pool = task.pool
  local q = pool.queue
  q.tail = q.tail + 1
  q[q.tail] = task
  pool.unfinished = pool.unfinished + 1
  dispatch()
  return task
end

local function submit(pool, f, items, name_item, single, timeout, on_done, level)
  return enqueue(prepare(pool, f, items, name_item, single, timeout, on_done, level + 1))
end

local function check_f(f, fname)
  local t = type(f)
  if t ~= "function" then argerror(1, fname, "function expected, got " .. t, 4) end
end

local function pack_args(args, fname, n)
  if args == nil then return {n = 0} end
  if type(args) ~= "table" then argerror(n, fname, "table expected, got " .. type(args), 4) end
  return args
end

local function apply_async(self, f, args, opts, fname)
  check_running(self, fname)
  check_f(f, fname)
  args = pack_args(args, fname, 2)
  opts = opts or {}
  if type(opts) ~= "table" then argerror(3, fname, "table expected, got " .. type(opts), 3) end
  local r = new_result(self, opts.callback, opts.error_callback)
  local task
  task = submit(self, f, {args}, function() return "args" end, false, opts.timeout, function(outcome)
    if outcome.ok then
      resolve(r, true, outcome.results[1])
    else
      resolve(r, false, outcome.err)
    end
  end, 3)
  r.tasks[1] = task
  return r
end

-- (the methods keep a frame of their own: no tail calls, so error levels
-- point at the user's line)
function Pool:apply_async(f, args, opts)
  local r = apply_async(self, f, args, opts, "apply_async")
  return r
end

function Pool:apply(f, args)
  local r = apply_async(self, f, args, nil, "apply")
  return r:get()
end

local function chunk_size(self, n, chunksize, fname)
  if chunksize == nil then
    local c = n // (self.limit * 4)
    if n % (self.limit * 4) ~= 0 then c = c + 1 end
    return math.max(c, 1)
  end
  if math.type(chunksize) ~= "integer" or chunksize < 1 then
    argerror(3, fname, "chunksize must be a positive integer", 4)
  end
  return chunksize
end

-- map_async / starmap_async: one task per chunk; the list of first
-- results, or the error of the lowest failing index.
local function map_async(self, f, list, chunksize, star, fname, opts)
  check_running(self, fname)
  check_f(f, fname)
  if type(list) ~= "table" then argerror(2, fname, "table expected, got " .. type(list), 3) end
  local n = #list
  local size = chunk_size(self, n, chunksize, fname)
  opts = opts or {}
  local r = new_result(self, opts.callback, opts.error_callback)
  local out, pending, fail_at, fail_err = {}, 0, nil, nil
  local function finish()
    if pending > 0 then return end
    if fail_at then resolve(r, false, fail_err) else resolve(r, true, {out, n = 1}) end
  end
  for s = 1, n, size do
    local e = math.min(s + size - 1, n)
    local items = {}
    for i = s, e do
      local v = list[i]
      if star then
        if type(v) ~= "table" then argerror(2, fname, fmt("item %d is not a table of arguments", i), 3) end
        items[#items + 1] = v
      else
        items[#items + 1] = {v, n = 1}
      end
    end
    pending = pending + 1
    r.tasks[#r.tasks + 1] = prepare(self, f, items, function(j) return fmt("list[%d]", s + j - 1) end, not star, nil,
      function(outcome)
        pending = pending - 1
        if outcome.ok then
          for j, pack in ipairs(outcome.results) do out[s + j - 1] = pack[1] end
        else
          local at = outcome.index > 0 and s + outcome.index - 1 or s
          if not fail_at or at < fail_at then fail_at, fail_err = at, outcome.err end
        end
        finish()
      end, 2)
  end
  for _, task in ipairs(r.tasks) do enqueue(task) end
  finish()
  return r
end

function Pool:map_async(f, list, chunksize, opts)
  local r = map_async(self, f, list, chunksize, false, "map_async", opts)
  return r
end

function Pool:starmap_async(f, list, chunksize, opts)
  local r = map_async(self, f, list, chunksize, true, "starmap_async", opts)
  return r
end

function Pool:map(f, list, chunksize)
  local r = map_async(self, f, list, chunksize, false, "map")
  return (r:get())
end

function Pool:starmap(f, list, chunksize)
  local r = map_async(self, f, list, chunksize, true, "starmap")
  return (r:get())
end

-- imap / imap_unordered / istarmap: at most 2 chunks per rank in flight.
local function imap(self, f, iterable, chunksize, star, ordered, fname)
  check_running(self, fname)
  check_f(f, fname)
  local next_item
  if type(iterable) == "table" then
    local i = 0
    next_item = function()
      i = i + 1
      if i > #iterable then return nil end
      return iterable[i], true
    end
  elseif type(iterable) == "function" then
    next_item = function()
      local v = iterable()
      if v == nil then return nil end
      return v, true
    end
  else
    argerror(2, fname, "table or iterator function expected, got " .. type(iterable), 3)
  end
  if chunksize ~= nil and (math.type(chunksize) ~= "integer" or chunksize < 1) then
    argerror(3, fname, "chunksize must be a positive integer", 3)
  end
  local size = chunksize or 1
  -- taken from the iterable but not yet handed out: at most 2 chunks per rank
  local ahead = 2 * self.limit * size
  local exhausted, count, delivered = false, 0, 0
  local ready = {}            -- index -> {ok, value}
  local order = {}            -- completion order (unordered)
  local next_out = 1
  local pool = self
  local function fill()
    while not exhausted and count - delivered < ahead do
      local items, s = {}, count + 1
      for _ = 1, size do
        local v, more = next_item()
        if not more then exhausted = true; break end
        count = count + 1
        if star then
          if type(v) ~= "table" then
            error(fmt("bad argument #2 to '%s' (item %d is not a table of arguments)", fname, count), 0)
          end
          items[#items + 1] = v
        else
          items[#items + 1] = {v, n = 1}
        end
      end
      if #items == 0 then break end
      submit(pool, f, items, function(j) return fmt("item %d", s + j - 1) end, not star, nil, function(outcome)
        if outcome.ok then
          for j, pack in ipairs(outcome.results) do
            ready[s + j - 1] = {true, pack[1]}
            order[#order + 1] = s + j - 1
          end
        else
          local at = outcome.index > 0 and s + outcome.index - 1 or s
          for j = s, s + #items - 1 do
            ready[j] = j < at and {true, nil} or {false, outcome.err}
            order[#order + 1] = j
          end
        end
      end, 3)
    end
  end
  local pos = 1
  return function()
    fill()
    local idx
    if ordered then
      if next_out > count and exhausted then return nil end
      pump(function() fill(); return ready[next_out] ~= nil or (exhausted and next_out > count) end)
      if ready[next_out] == nil then return nil end
      idx = next_out
      next_out = next_out + 1
    else
      if pos > count and exhausted then return nil end
      pump(function() fill(); return order[pos] ~= nil or (exhausted and pos > count) end)
      idx = order[pos]
      if idx == nil then return nil end
      pos = pos + 1
    end
    local entry = ready[idx]
    ready[idx] = nil
    delivered = delivered + 1
    if not entry[1] then error(entry[2], 0) end
    return idx, entry[2]
  end
end

function Pool:imap(f, it, chunksize)
  local iter = imap(self, f, it, chunksize, false, true, "imap")
  return iter
end

function Pool:imap_unordered(f, it, chunksize)
  local iter = imap(self, f, it, chunksize, false, false, "imap_unordered")
  return iter
end

function Pool:istarmap(f, it, chunksize)
  local iter = imap(self, f, it, chunksize, true, true, "istarmap")
  return iter
end

function Pool:close()
  if self.state == "run" then self.state = "close" end
end

function Pool:join()
  if self.state == "run" then error("pool is still running", 2) end
  pump(function() return self.unfinished == 0 end)
end

-- Queued tasks never run; running ones have their child ended on their
-- rank; every unfinished result fails with "pool terminated".
function Pool:terminate()
  if self.state == "terminated" then return end
  self.state = "terminated"
  local q = self.queue
  for i = q.head, q.tail do
    local task = q[i]
    if task and not task.settled then settle(task, failure(task, "pool terminated")) end
    q[i] = nil
  end
  q.head, q.tail = 1, 0
  for rank, task in pairs(sched.busy) do
    if task.pool == self and not task.settled then
      send(rank, CANCEL, encode(task.id))
      settle(task, failure(task, "pool terminated"))
    end
  end
  sched.pools[self] = nil
end

function Pool:__close(err)
  if err ~= nil then
    self:terminate()
  elseif self.state ~= "terminated" then
    self:close()
    self:join()
  end
end

function Pool:__gc()
  if self.state ~= "terminated" then pcall(self.terminate, self) end
end

function Pool:__tostring()
  return fmt("<process.mpi.Pool state=%s ranks=%d>", self.state, self.limit)
end

M.AsyncResult = AsyncResult
return M
