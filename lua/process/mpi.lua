-- process/mpi.lua - process.mpi: the Pool over MPI ranks (the MPI worker
-- backend of process.pool's scheduler) and the serving loop of ranks
-- 1..N-1.  Compiled into process/mpi.so (src/mpi/lmpi.c) and called with
-- the module's C table (rank, size, processor_name: the public surface)
-- and a private one (send, recv and the protocol tags); returns the module
-- (the C table with Pool added) and the serving loop, which lmpi.c runs
-- on ranks 1..N-1.  Nothing private is left on the module.
--
-- The scheduler (lua/process/pool.lua) is the local Pool's: same
-- AsyncResult, iterators, timeouts, failure semantics.  Its worker backend
-- here places each worker on a serving rank; the rank runs it as a child
-- it forks with the local backend (process.pool_local, fork method) and
-- relays between MPI and that child.  A worker that crashes, calls
-- os.exit or is terminated (timeout, cancel) is that child: the rank
-- survives, reports the exit, and hosts the replacement.
--
-- Protocol (rank 0 <-> server; a worker is named by `gen`, unique in the
-- job, so a late message of an old worker is never taken for its
-- replacement's):
--   0 -> r  CTRL    encode{op = "start", gen =, init =, initargs =}  (functions)
--                   encode{op = "terminate" | "kill" | "retire", gen =}
--           TASK    pack("<j", gen) .. (pack("<s8", msg))...   the messages
--                   b:send was given (process.pool's bytes), in order
--           STOP    ""     end every worker, answer BYE (lmpi.c), exit 0
--   r -> 0  RESULT  pack("<jB", gen, 1) .. reply     a worker's message
--                   pack("<jBj", gen, 2, exitcode)  the worker ended
--                   pack("<jBj", gen, 3, pid)       the worker started
--                   pack("<jB", gen, 4) .. text     it could not start
local M, C = ...
local process = require "process"
local P = require "process.pool"

local fmt = string.format
local spack, sunpack = string.pack, string.unpack
local internal = require "process.internal"
local encode, decode, now = internal.encode, internal.decode, internal.now
local send, recv = C.send, C.recv
local TASK, CTRL, STOP, RESULT = C.TASK, C.CTRL, C.STOP, C.RESULT
local EV_MSG, EV_EXIT, EV_STARTED, EV_FAILED = 1, 2, 3, 4

----------------------------------------------------------------------------
-- The server's side (ranks 1..N-1)
----------------------------------------------------------------------------

-- A server has MPI's helper threads, so the process module warns about
-- fork (once per process).  The worker never calls MPI: it runs Lua and
-- libc only, whose malloc and stdio locks glibc resets across fork; the
-- warning would only alarm, so the first start is made without it.
local warned
local function quietly(f, ...)
  if warned then return f(...) end
  warned = true
  local stderr = io.stderr
  io.stderr = {write = function(self) return self end, flush = function() end} -- luacheck: ignore 122
  local res = table.pack(pcall(f, ...))
  io.stderr = stderr -- luacheck: ignore 122
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function serve()
  local L = require "process.pool_local"
  local ctx = process.get_context("fork")
  local workers = {} -- gen -> {lb = local backend, h = its worker}
  local count = 0

  local function fdlist()
    if count == 0 then return nil end
    local list = {}
    for _, w in pairs(workers) do
      for _, fd in ipairs(w.lb:fds() or {}) do list[#list + 1] = fd end
    end
    return list
  end

  local function control(bytes)
    local ok, m = pcall(decode, bytes, true)
    if not ok or type(m) ~= "table" or math.type(m.gen) ~= "integer" then return end
    if m.op == "start" then
      local lb = L.backend(ctx, m.init, m.initargs)
      local h, err = quietly(lb.start, lb)
      if not h then
        send(0, RESULT, spack("<jB", m.gen, EV_FAILED) .. tostring(err))
        return
      end
      workers[m.gen] = {lb = lb, h = h}
      count = count + 1
      send(0, RESULT, spack("<jBj", m.gen, EV_STARTED, h.pid))
    else
      local w = workers[m.gen]
      if w and (m.op == "terminate" or m.op == "kill" or m.op == "retire") then w.lb[m.op](w.lb, w.h) end
    end
  end

  local function task(bytes)
    if #bytes < 8 then return end
    local gen, pos = sunpack("<j", bytes)
    local w = workers[gen]
    if not w then return end
    local msgs = {}
    while pos <= #bytes do
      local ok, m, nxt = pcall(sunpack, "<s8", bytes, pos)
      if not ok then return end -- truncated: not from rank 0
      msgs[#msgs + 1] = m
      pos = nxt
    end
    -- a refusal means the worker is ending: its exit is reported
    w.lb:send(w.h, msgs)
  end

  -- Forward what the workers did; reap the ended ones.
  local function collect()
    for gen, w in pairs(workers) do
      local ev, n = w.lb:wait(0)
      for i = 1, 3 * n, 3 do
        if ev[i + 1] == "msg" then
          send(0, RESULT, spack("<jB", gen, EV_MSG) .. ev[i + 2])
        elseif ev[i + 1] == "exit" then
          w.lb:release(w.h)
          w.lb:close()
          workers[gen] = nil
          count = count - 1
          send(0, RESULT, spack("<jBj", gen, EV_EXIT, ev[i + 2]))
        end
      end
    end
  end

  while true do
    -- idle: sleep between probes; with workers: on their descriptors too
    local src, tag, bytes = recv(nil, 2e-3, fdlist())
    while src do
      if tag == STOP then
        for _, w in pairs(workers) do w.lb:close() end
        return
      elseif tag == CTRL then
        control(bytes)
      elseif tag == TASK then
        task(bytes)
      end
      src, tag, bytes = recv(0)
    end
    if count > 0 then collect() end
  end
end

----------------------------------------------------------------------------
-- Rank 0: the MPI worker backend (interface: top of lua/process/pool.lua)
----------------------------------------------------------------------------

local ranks = {
  load = {},     -- rank -> how many workers it hosts that are not ending
  gens = {},     -- gen -> h, until released
  next_gen = 0,
}

-- h no longer counts against its rank (ending or ended); once only.
local function unload(h)
  if h.counted then
    h.counted = false
    ranks.load[h.rank] = ranks.load[h.rank] - 1
  end
end

-- Route one message from a server to the backend that owns its worker.
local function route(src, tag, bytes)
  if tag ~= RESULT or #bytes < 9 then return end
  local gen, kind, pos = sunpack("<jB", bytes)
  local h = ranks.gens[gen]
  if not h or h.rank ~= src then return end -- a released worker's: too late
  local events = h.backend.events
  if kind == EV_MSG then
    local k = #events
    events[k + 1], events[k + 2], events[k + 3] = h, "msg", bytes:sub(pos)
  elseif kind == EV_EXIT and #bytes >= pos + 7 then
    h.exited = true
    unload(h)
    local k = #events
    events[k + 1], events[k + 2], events[k + 3] = h, "exit", (sunpack("<j", bytes, pos))
  elseif kind == EV_STARTED and #bytes >= pos + 7 then
    h.pid = fmt("%d on rank %d", (sunpack("<j", bytes, pos)), src)
  elseif kind == EV_FAILED then
    io.stderr:write(fmt("process.mpi: rank %d could not start a worker: %s\n", src, bytes:sub(pos)))
    h.exited = true
    unload(h)
    local k = #events
    events[k + 1], events[k + 2], events[k + 3] = h, "exit", 1
  end
end

local Backend = {}
Backend.__index = Backend

local function new_backend(init, initargs)
  return setmetatable({init = init, initargs = initargs, events = {}, live = {}}, Backend)
end

-- On the rank hosting the fewest live workers (of every pool): one per
-- rank up to size() - 1 workers, then two... (a rank is typically one
-- node of a cluster, its workers that node's cores).  An ending worker no
-- longer counts: its replacement may start beside it.
function Backend:start()
  local rank, least
  for r = 1, M.size() - 1 do
    local l = ranks.load[r] or 0
    if not least or l < least then rank, least = r, l end
  end
  ranks.next_gen = ranks.next_gen + 1
  local h = {rank = rank, gen = ranks.next_gen, backend = self, pid = fmt("? on rank %d", rank)}
  local ok, err = pcall(send, rank, CTRL,
    encode({op = "start", gen = h.gen, init = self.init, initargs = self.initargs}, true))
  if not ok then return nil, tostring(err) end
  ranks.load[rank] = least + 1
  h.counted = true
  ranks.gens[h.gen] = h
  self.live[h] = true
  return h
end

function Backend:send(h, msgs) -- luacheck: ignore 212
  if h.exited or h.ending then return nil end
  local parts = {spack("<j", h.gen)}
  for i, m in ipairs(msgs) do parts[i + 1] = spack("<s8", m) end
  send(h.rank, TASK, table.concat(parts))
  return true
end

local function control(h, op)
  if h.exited then return end
  h.ending = true
  unload(h)
  send(h.rank, CTRL, encode({op = op, gen = h.gen}))
end

-- luacheck: push ignore 212
function Backend:terminate(h) control(h, "terminate") end
function Backend:kill(h) control(h, "kill") end
function Backend:retire(h) control(h, "retire") end
function Backend:fds() return nil end
-- luacheck: pop

function Backend:release(h)
  self.live[h] = nil
  ranks.gens[h.gen] = nil
  unload(h)
end

function Backend:wait(timeout)
  local deadline = timeout and now() + timeout
  while #self.events == 0 do
    local left = deadline and deadline - now()
    if left and left < 0 then left = 0 end
    local src, tag, bytes = recv(left)
    if not src then break end
    while src do
      route(src, tag, bytes)
      src, tag, bytes = recv(0)
    end
    if left == 0 then break end
  end
  local events = self.events
  self.events = {}
  return events, #events // 3
end

-- Everything released; workers still running are killed (their ranks
-- reap them and report to nobody).
function Backend:close()
  for h in pairs(self.live) do
    if not h.exited then pcall(control, h, "kill") end
    self:release(h)
  end
end

----------------------------------------------------------------------------
-- process.mpi.Pool([n | opts])
----------------------------------------------------------------------------

function M.Pool(opts)
  if M.rank() ~= 0 then error("process.mpi.Pool: only rank 0 can create a pool", 2) end
  local nservers = M.size() - 1
  if nservers < 1 then
    error("process.mpi.Pool: no serving ranks (start the job with mpiexec -n N, N >= 2, " ..
      "and load the module with -l process.mpi)", 2)
  end
  local n, initializer, initargs, maxtasks, timeout = P.options(opts, nservers, 2)
  -- what cannot be sent to the ranks is refused here, with its path
  local ok, err = pcall(encode, {initializer = initializer, initargs = initargs}, true)
  if not ok then error((tostring(err):gsub("^value%.", "")), 2) end
  return P.new(new_backend(initializer, initargs), {processes = n, maxtasksperchild = maxtasks, timeout = timeout})
end

return M, serve
