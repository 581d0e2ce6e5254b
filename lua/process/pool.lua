-- process/pool.lua - the Pool scheduler, independent of how workers are
-- reached (README "Pool", API.md "Pool").
--
-- No helper threads: all bookkeeping runs inside the blocking calls of
-- the Lua state that owns the pool (get, wait, map, join, the iterators,
-- process.wait).  The parent hands each task to one idle worker over
-- that worker's own channel, so it always knows which task each worker
-- holds; nothing is shared between workers.
--
-- Worker backends
-- ===============
-- A backend moves tasks to workers and reports what happens to them.
-- process.pool_local runs workers as child processes over a Pipe each;
-- process.mpi.Pool runs them on MPI ranks.  A backend is an object with:
--
--   b:start() -> h | nil, err       start one worker.  h is a table the
--                                   backend owns; the scheduler reads only
--                                   h.pid (for messages, may be nil).
--   b:send(h, msgs) -> true | nil, err
--                                   deliver a list of messages (strings)
--                                   to worker h, in order.  A refusal
--                                   means h is dead or dying: its "exit"
--                                   event follows.
--   b:wait(timeout) -> events, n    wait at most timeout seconds (nil:
--                                   forever) for something to happen to
--                                   any worker not released yet, and
--                                   return a flat list of n triples (none
--                                   on timeout, or when a signal cut the
--                                   wait short; no table per event):
--                                     h, "msg", bytes     a reply (from
--                                                         P.handle/P.ready_message)
--                                     h, "exit", code     the worker ended
--                                   A worker's messages come before its exit.
--                                   The list may be reused by the next
--                                   b:wait (the caller consumes it first).
--   b:terminate(h) / b:kill(h)      SIGTERM / SIGKILL (or the equivalent)
--   b:retire(h)                     no more tasks: the worker ends when it
--                                   has read what it was sent (EOF)
--   b:release(h)                    after h's "exit" event: reap, free
--   b:fds() -> list | nil           descriptors that become readable when
--                                   b:wait has something (process.wait
--                                   sleeps on them beside other objects);
--                                   nil when there are none
--   b:close()                       everything released (after all exits)
--
-- Optional (process.pool_local has them; without them a task handed
-- ahead is cancelled with a note the worker reads between tasks, and a
-- dead worker's first task counts as the one it ran):
--   b:skip(h, seq) -> true | false  the seq-th task sent to h (counted
--                                   from 1) will be skipped by the worker
--                                   (true), or it has started it (false);
--                                   decided atomically with the worker
--   b:started(h, seq) -> bool       after h's exit: had it started its
--                                   seq-th task?
-- At most PREFETCH tasks sent to a worker are unanswered at any time.
--
-- The worker's side is shared too.  A worker runs
--   err = P.initialize(initializer, initargs); send P.ready_message(err)
-- (and ends if err), then, with st = P.worker_state(), for each message
-- received in order: P.note(msg, st) is true for a cancel note (nothing
-- to answer); otherwise it sends back the reply P.handle(msg, st)
-- returns, one reply per task, in the order the tasks came, each sent
-- before the next task starts (the parent's view of which task runs
-- depends on it).  Several tasks may be sent before the first is
-- answered (short tasks); once a note has come (st.noted), a worker
-- takes the notes that have arrived before it starts each task.  A
-- backend with b:skip claims each task before running it, and answers
-- P.skipped(msg) for one the parent took back.  It ends at EOF.
local core = ...
local R = require "process.asyncresult"
local AsyncResult = R.AsyncResult

local error, type, pairs, ipairs, tostring = error, type, pairs, ipairs, tostring
local setmetatable, getmetatable = setmetatable, getmetatable
local spack, sunpack = string.pack, string.unpack
local fmt = string.format
local now = core.now
local getpid = core.pool_getpid
local encode, decode, decode_at = core.encode, core.decode, core.pool_decode
local pack_numbers, unpack_numbers = core.pool_pack_numbers, core.pool_unpack_numbers
local new_list = core.pool_list
local task_message_of = core.pool_task_message
local reply_head = core.pool_reply_head -- string.unpack("<jBBf", reply)
local tpack, tunpack = table.pack, table.unpack

local P = {}

local GRACE = 1.0          -- SIGTERM, then SIGKILL after this long
local DEATH_WINDOW = 10.0  -- this many seconds ...
local FNCACHE = 256        -- functions a worker keeps decoded

local PREFETCH = 8         -- tasks a worker may hold while short ones queue
local SHORT_TASK = 0.002   -- ... when tasks take less than this on average
local AHEAD_BYTES = 8192   -- ... and are this small (8 fit any socket buffer)

local MODE_APPLY, MODE_MAP, MODE_STAR = 1, 2, 3
local KIND_TASK, KIND_CANCEL = 1, 2
local ST_ERR, ST_OK, ST_READY, ST_INIT, ST_SKIPPED = 0, 1, 2, 3, 4

----------------------------------------------------------------------------
-- The worker's side (shared by every backend)
----------------------------------------------------------------------------

-- Message handler: the message and the traceback of the task's frames.
local error_text = require("process.internal").error_text
local function handler(msg)
  msg = error_text(msg)
  local tb = debug.traceback(msg, 2)
  local cut = tb:find("\n\t%[C%]: in [%w ]*'call'")
  return cut and tb:sub(1, cut - 1) or tb
end
P.handler = handler

local call = core.call

-- The first message a worker sends: ready, or its initializer's error.
function P.ready_message(init_error)
  if init_error == nil then return spack("<jBBf", 0, ST_READY, 0, 0) end
  return spack("<jBBf", 0, ST_INIT, 0, 0) .. encode(tostring(init_error):sub(1, 65536))
end

-- Runs the initializer; returns nil or its error (with traceback).
function P.initialize(initializer, initargs)
  if initializer == nil then return nil end
  initargs = initargs or {}
  local ok, err = call(handler, initializer, tunpack(initargs, 1, initargs.n or #initargs))
  if not ok then return err end
  return nil
end

-- Every reply starts with the task's id, its status, the format of what
-- follows (1: a list of numbers, 0: the codec) and the seconds the task
-- ran in the worker (which tells the parent whether tasks are short).
local started = 0

local function err_reply(id, msg, index)
  return spack("<jBBf", id, ST_ERR, 0, now() - started)
    .. encode({ tostring(msg):sub(1, 65536), index or 1 })
end

-- One protected call for the whole chunk; on an error, i is the item
-- that raised it.
local function run_map(f, items, star)
  local n = #items
  local out = new_list(n)
  out.n = n
  local i = 0
  local ok, err = call(handler, function()
    if star then
      for k = 1, n do
        i = k
        local a = items[k]
        out[k] = f(tunpack(a, 1, a.n or #a))
      end
    else
      for k = 1, n do
        i = k
        out[k] = f(items[k])
      end
    end
  end)
  if not ok then return nil, err, i end
  return out
end

local function packed(ok, ...)
  return ok, tpack(...)
end

local function get_fn(fnid, cacheit, fnpart, st)
  local fn
  if #fnpart > 0 then
    fn = decode(fnpart, true)
    if cacheit == 1 then
      if st.ncache >= FNCACHE then st.cache, st.ncache = {}, 0 end
      st.cache[fnid] = fn
      st.ncache = st.ncache + 1
    end
  else
    fn = st.cache[fnid]
    if fn == nil then error("function of the task is not known to the worker") end
  end
  return fn
end

-- The state P.handle keeps in a worker.
function P.worker_state()
  return { cache = {}, ncache = 0, skip = {} }
end

-- A cancel note (for a task handed to the worker, not started yet):
-- returns true, and the task is skipped when its turn comes.
function P.note(msg, st)
  if msg:byte(1) ~= KIND_CANCEL then return false end
  local id = sunpack("<j", msg, 2)
  st.skip[id] = true
  st.noted = true -- (from now on the worker reads notes before each task)
  return true
end

-- The answer to a task message the worker skips (cancelled before it
-- started: see b:skip).
function P.skipped(msg)
  return spack("<jBBf", (sunpack("<j", msg, 2)), ST_SKIPPED, 0, 0)
end

-- Runs one task message; returns the reply.  st: P.worker_state().
function P.handle(msg, st)
  local kind, id, fnid, mode, cacheit, afmt, fnpart, _, pos = sunpack("<BjjBBBs4I4", msg)
  if kind ~= KIND_TASK then error("unknown message kind " .. kind) end
  started = now()
  if st.skip[id] then
    st.skip[id] = nil
    return spack("<jBBf", id, ST_SKIPPED, 0, 0)
  end
  local ok, f = true, #fnpart == 0 and st.cache[fnid]
  if not f then ok, f = pcall(get_fn, fnid, cacheit, fnpart, st) end
  local args
  if ok then
    if afmt == 1 then
      local err
      args, err = unpack_numbers(msg, pos) -- (nil, err: corrupt)
      ok = args ~= nil
      if not ok then args = err end
    else
      ok, args = pcall(decode_at, msg, pos, true)
    end
    if not ok then f = args end
  end
  if not ok then
    return err_reply(id, fmt("task %d: cannot receive its arguments: %s", id, tostring(f)))
  end
  local reply
  if mode == MODE_APPLY then
    local res
    ok, res = packed(call(handler, f, tunpack(args, 1, args.n or #args)))
    if not ok then return err_reply(id, res[1]) end
    local nums = pack_numbers(res, 1, res.n) -- numbers only: no codec
    if nums then return spack("<jBBf", id, ST_OK, 1, now() - started) .. nums end
    ok, reply = pcall(encode, res)
  else
    local out, err, index = run_map(f, args, mode == MODE_STAR)
    if not out then return err_reply(id, err, index) end
    local nums = pack_numbers(out, 1, out.n)
    if nums then return spack("<jBBf", id, ST_OK, 1, now() - started) .. nums end
    ok, reply = pcall(encode, out)
  end
  if not ok then
    return err_reply(id, fmt("task %d: cannot send its result: %s",
      id, (tostring(reply):gsub("^value", "result"))))
  end
  return spack("<jBBf", id, ST_OK, 0, now() - started) .. reply
end

----------------------------------------------------------------------------
-- Submitting: a task is encoded when it is submitted
----------------------------------------------------------------------------

local fns = setmetatable({}, { __mode = "k" }) -- function -> its record (cacheable ones)
local next_fnid = 0

-- A function can be cached by the worker when nothing but _ENV is an
-- upvalue: then its bytes never change.
local function cacheable(f)
  for i = 1, math.huge do
    local name = debug.getupvalue(f, i)
    if name == nil then return true end
    if name ~= "_ENV" then return false end
  end
end

-- -> the function's record { fnid, bytes, cacheit } (one per cacheable
-- function, which its tasks share); raises with the path of an
-- unsendable value.
local function encode_fn(f, level)
  local fn = fns[f]
  if fn then return fn end
  local ok, bytes = pcall(encode, f, true)
  if not ok then error((tostring(bytes):gsub("^value", "function")), level + 1) end
  next_fnid = next_fnid + 1
  if cacheable(f) then
    fn = { next_fnid, bytes, 1 }
    fns[f] = fn
    return fn
  end
  return { next_fnid, bytes, 0 }
end

-- Without functions first: the codec then needs no map of the loaded
-- modules (3x cheaper for small arguments); functions, and modules sent
-- by name, take the second try.
local function encode_args(v, root, base, level)
  local ok, bytes = pcall(encode, v)
  if ok then return bytes end
  ok, bytes = pcall(encode, v, true)
  if ok then return bytes end
  local msg = tostring(bytes)
  if base then
    msg = msg:gsub("^value%[(%d+)%]", function(k) return fmt("%s[%d]", root, base + tonumber(k) - 1) end)
  else
    msg = msg:gsub("^value", root)
  end
  error(msg, level and level + 1 or 0)
end

----------------------------------------------------------------------------
-- The pool
----------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
Pool.__name = "process.Pool"
P.Pool = Pool

-- Every pool P.new made: apply_async's check of self without a call.
local pools = setmetatable({}, { __mode = "k" })

local function argerror(n, fname, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), level + 1)
end

local function is_callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- P.new(backend, opts, fname) -> pool; opts already checked by the
-- front end: processes, maxtasksperchild, timeout.  Starts the workers.
function P.new(backend, opts)
  local self = setmetatable({
    _backend = backend,
    _n = opts.processes,
    _maxtasks = opts.maxtasksperchild,
    _timeout = opts.timeout,
    _owner = getpid(),
    _state = "RUN",            -- RUN, CLOSE, TERMINATE, BROKEN
    _reason = nil,             -- why BROKEN
    _workers = {},             -- h -> worker record
    _nworkers = 0,             -- live, not retiring
    _dying = {},               -- h -> kill_at (terminated or retired)
    _queue = {}, _qhead = 1, _qtail = 0,
    _unfinished = {},          -- map's AsyncResult -> true while not done
                               -- (a task knows its worker: task.worker)
    _nextid = 0,
    _deaths = {},              -- times of recent unexpected deaths
    _death_limit = opts.death_limit or math.max(8, 3 * opts.processes),
    _cbq = {},
  }, Pool)
  pools[self] = true
  for _ = 1, self._n do
    local ok, err, ename = self:_spawn()
    if not ok then
      self:terminate()
      return nil, err, ename
    end
  end
  return self
end

-- Start one worker; false, err when the backend refuses.
function Pool:_spawn()
  local h, err, ename = self._backend:start()
  if not h then return false, err, ename end
  self._workers[h] = { h = h, tasks = {}, nsent = 0, ntasks = 0, ready = false,
                       known = {}, nknown = 0 }
  self._nworkers = self._nworkers + 1
  return true
end

local function task_error(self, task, msg, index)
  task.on_done(task, false, msg, index)
end

-- Put tasks a worker held but never started back at the queue's front,
-- in their order (ghosts, cancelled already, are dropped).
local function requeue(self, tasks, from)
  for i = #tasks, from, -1 do
    local task = tasks[i]
    tasks[i] = nil
    task.worker = nil
    if not task.cancelled then
      self._qhead = self._qhead - 1
      self._queue[self._qhead] = task
    end
  end
end

-- A task's message (core.pool_task_message, in one call): its id,
-- function (its bytes, or "" when the worker has it cached), mode, the
-- format of its arguments (1: a list of numbers, 0: the codec) and the
-- arguments, as string.pack("<BjjBBBs4s4", KIND_TASK, id, fnid, mode,
-- cacheit, afmt, fnpart, args) makes it.  FN_AT: where fnpart's length is.
local FN_AT = 21

-- The message is made when the task is submitted, for a worker that has
-- the function (or, not cacheable, with it); a worker that does not know
-- a cacheable one gets it once (spliced in where "" was).
local function task_message(w, task)
  local fn = task.fn
  if fn[3] == 1 and not w.known[fn[1]] then
    if w.nknown >= FNCACHE then w.known, w.nknown = {}, 0 end
    w.known[fn[1]] = true
    w.nknown = w.nknown + 1
    local msg = task.msg
    return msg:sub(1, FN_AT - 1) .. spack("<s4", fn[2]) .. msg:sub(FN_AT + 4)
  end
  return task.msg
end

-- The head of a worker's list is the task it runs: its clock starts.
local function start_head(w)
  local task = w.tasks[1]
  if task and task.timeout then task.deadline = now() + task.timeout end
end

-- Hand queued tasks to ready workers.  One task each, or, while many
-- short tasks are queued, up to PREFETCH each (sent in one write), so a
-- worker never waits for the parent between short tasks.
function Pool:_dispatch()
  if self._qhead > self._qtail then return end
  local queued = self._qtail - self._qhead + 1
  local depth = 1
  if self._avg and self._avg < SHORT_TASK and queued > self._n then depth = PREFETCH end
  for h, w in pairs(self._workers) do
    if self._qhead > self._qtail then break end
    if w.ready and not w.retiring then
      local tasks, queue, maxtasks = w.tasks, self._queue, self._maxtasks
      local nt = #tasks
      local msgs, first, k = nil, nt + 1, 0
      while nt < depth and (not maxtasks or w.nsent < maxtasks) do
        -- the next queued task (cancelled ones are dropped)
        local qh = self._qhead
        if qh > self._qtail then break end
        local task = queue[qh]
        queue[qh] = nil
        self._qhead = qh + 1
        if not task.cancelled then
          -- a worker that is busy may be blocked writing a large reply: what
          -- goes to it ahead of time must fit in the socket's buffer, or
          -- the two would wait for each other
          if nt > 0 and #task.msg + #task.fn[2] > AHEAD_BYTES then
            self._qhead = qh
            queue[qh] = task
            break
          end
          nt = nt + 1
          tasks[nt] = task
          task.worker = w
          local seq = w.nsent + 1
          w.nsent = seq
          task.seq = seq
          local fn = task.fn
          k = k + 1
          msgs = msgs or {}
          msgs[k] = (fn[3] == 1 and not w.known[fn[1]]) and task_message(w, task) or task.msg
        end
      end
      if msgs then
        if first == 1 then start_head(w) end
        if not self._backend:send(h, msgs) then
          -- the worker is gone (its exit event follows); these never
          -- reached it
          w.retiring = true
          w.nsent = w.nsent - #msgs
          requeue(self, tasks, first)
        end
      end
    end
  end
end

-- Fail everything pending with reason, and end the workers.
function Pool:_break(reason)
  if self._state == "BROKEN" or self._state == "TERMINATE" then return end
  self._state = "BROKEN"
  self._reason = reason
  self:_fail_all("pool is broken: " .. reason)
  self:_stop_workers()
end

function Pool:_fail_all(msg)
  for i = self._qhead, self._qtail do
    local task = self._queue[i]
    self._queue[i] = nil
    if task and not task.cancelled then task_error(self, task, msg) end
  end
  self._qhead, self._qtail = 1, 0
  for _, w in pairs(self._workers) do
    local tasks = w.tasks
    w.tasks = {}
    for _, task in ipairs(tasks) do
      task.worker = nil
      if not task.cancelled then task_error(self, task, msg) end
    end
  end
  for r in pairs(self._unfinished) do
    R._complete(r, false, msg)
    self._unfinished[r] = nil
  end
end

-- SIGTERM every worker; the exits are collected later (SIGKILL after GRACE).
function Pool:_stop_workers()
  local t = now()
  for h, w in pairs(self._workers) do
    w.tasks = {}
    self._backend:terminate(h)
    self._dying[h] = t + GRACE
    self._workers[h] = nil
  end
  self._nworkers = 0
end

local function exit_text(code)
  return fmt("worker exited with exitcode %s", tostring(code))
end

-- One worker ended: was it expected?
function Pool:_on_exit(h, code)
  self._backend:release(h)
  if self._dying[h] ~= nil then
    self._dying[h] = nil
    return
  end
  local w = self._workers[h]
  if not w then return end
  self._workers[h] = nil
  self._nworkers = self._nworkers - 1
  local head = w.tasks[1]
  if w.retiring and not head then -- its send failed
    if self._state == "RUN" or self._state == "CLOSE" then self:_replace() end
    return
  end
  local what = exit_text(code)
  if head and self._backend.started and not self._backend:started(h, head.seq) then
    -- it ended after answering a task and before starting the next: the
    -- tasks it held never ran, and go to other workers
    requeue(self, w.tasks, 1)
    head = nil
  end
  if head then
    requeue(self, w.tasks, 2)
    w.tasks[1] = nil
    head.worker = nil
    if head.cancelled then
      what = fmt("%s (pid %s)", what, tostring(h.pid))
    else
      what = fmt("%s while running task %d (pid %s)", what, head._id, tostring(h.pid))
      task_error(self, head, what)
    end
  else
    what = fmt("%s (pid %s)", what, tostring(h.pid))
  end
  if self._state ~= "RUN" and self._state ~= "CLOSE" then return end
  if not w.ready then
    return self:_break(what .. " before it was ready (initializer or start-up failed)")
  end
  local t = now()
  local deaths = self._deaths
  deaths[#deaths + 1] = t
  while deaths[1] and deaths[1] < t - DEATH_WINDOW do table.remove(deaths, 1) end
  if #deaths >= self._death_limit then
    return self:_break(fmt("%d workers died within %g seconds (last: %s)", #deaths, DEATH_WINDOW, what))
  end
  self:_replace()
end

function Pool:_replace()
  if self._nworkers >= self._n then return end
  local ok, err = self:_spawn()
  if not ok and self._nworkers == 0 then
    self:_break("cannot start a worker: " .. tostring(err))
  end
end

-- Stop worker w (its running task timed out or is being cancelled):
-- terminate and replace it; the tasks it held but had not started go
-- back to the queue.  With b:skip, every task it holds beyond its head
-- is first taken back, in order, so that it starts none of them while
-- the signal is on its way; if it has already started one, its head has
-- finished (the answer comes before the next task starts) and it is not
-- stopped: false (the tasks taken back meanwhile go back to the queue;
-- their "skipped" answers no longer match and are ignored).
function Pool:_abandon(w)
  local h = w.h
  local b, tasks = self._backend, w.tasks
  if b.skip then
    for i = 2, #tasks do
      if not b:skip(h, tasks[i].seq) then
        local back = {}
        for j = 2, i - 1 do back[#back + 1] = tasks[j] end
        for j = i - 1, 2, -1 do table.remove(tasks, j) end
        requeue(self, back, 1)
        return false
      end
    end
  end
  b:terminate(h)
  self._dying[h] = now() + GRACE
  self._workers[h] = nil
  self._nworkers = self._nworkers - 1
  local head = tasks[1]
  requeue(self, tasks, 2)
  if head then
    tasks[1] = nil
    head.worker = nil
  end
  if self._state == "RUN" or self._state == "CLOSE" then self:_replace() end
  return true
end

function Pool:_on_msg(h, bytes)
  local w = self._workers[h]
  if not w then return end -- a worker being terminated: too late
  local id, st, rfmt, ran, pos = reply_head(bytes)
  if st == ST_READY then
    w.ready = true
    return
  elseif st == ST_INIT then
    local ok, err = pcall(decode_at, bytes, pos)
    return self:_break("initializer failed: " .. tostring(ok and err or "?"))
  end
  local tasks = w.tasks
  local task = tasks[1]
  if not task or task._id ~= id then return end -- not ours: ignored
  local nt = #tasks -- (a few: table.remove's call costs more)
  for i = 2, nt do tasks[i - 1] = tasks[i] end
  tasks[nt] = nil
  task.worker = nil
  w.ntasks = w.ntasks + 1
  -- how long tasks run in the worker (not counting the trip: on a
  -- loaded machine that would hide how short they are)
  if st ~= ST_SKIPPED then self._avg = self._avg and (0.8 * self._avg + 0.2 * ran) or ran end
  start_head(w)
  if not task.cancelled then
    local ok, v
    if rfmt == 1 and task.into and st == ST_OK then
      -- a map's chunk of numbers: straight into the map's list
      local err
      v, err = unpack_numbers(bytes, pos, task.into, task.first) -- (nil, err: corrupt)
      ok = v ~= nil
      v = ok and true or err
    elseif rfmt == 1 then
      local err
      v, err = unpack_numbers(bytes, pos)
      ok = v ~= nil
      if not ok then v = err end
    else
      ok, v = pcall(decode_at, bytes, pos)
    end
    if not ok then
      task_error(self, task, fmt("task %d: corrupt reply: %s", id, tostring(v)))
    elseif st == ST_OK then
      task.on_done(task, true, v)
    elseif st == ST_ERR and type(v) == "table" then
      task_error(self, task, tostring(v[1]), math.tointeger(v[2]))
    else
      task_error(self, task, fmt("task %d: corrupt reply", id))
    end
  end
  if self._maxtasks and w.ntasks >= self._maxtasks then
    w.retiring = true
    self._backend:retire(h)
    self._workers[h] = nil
    self._nworkers = self._nworkers - 1
    self._dying[h] = now() + 5 + GRACE -- it ends at EOF; a stuck one is killed
    if self._state == "RUN" or self._state == "CLOSE" then self:_replace() end
  end
end

-- Deadlines: running tasks' timeouts, dying workers overdue for SIGKILL.
function Pool:_timers()
  if not self._timed and next(self._dying) == nil then return end -- nothing has a deadline
  local t = now()
  local late
  for _, w in pairs(self._workers) do
    local task = w.tasks[1]
    if task and task.deadline and t >= task.deadline then
      late = late or {}
      late[#late + 1] = w
    end
  end
  for _, w in ipairs(late or {}) do -- (replacing adds workers: not while iterating)
    local task = w.tasks[1]
    if not self:_abandon(w) then
      task.deadline = nil -- it finished in time after all: its answer is on its way
    elseif not task.cancelled then
      task_error(self, task, fmt("task %d: timeout after %g seconds (worker pid %s terminated)",
        task._id, task.timeout, tostring(w.h.pid)))
    end
  end
  for h, kill_at in pairs(self._dying) do
    if kill_at and t >= kill_at then
      self._backend:kill(h)
      self._dying[h] = false
    end
  end
end

function Pool:_next_wake()
  if not self._timed and next(self._dying) == nil then return nil end
  local wake
  for _, w in pairs(self._workers) do
    local task = w.tasks[1]
    local d = task and task.deadline
    if d and (not wake or d < wake) then wake = d end
  end
  for _, kill_at in pairs(self._dying) do
    if kill_at and (not wake or kill_at < wake) then wake = kill_at end
  end
  return wake
end

function Pool:_fds()
  return self._backend:fds()
end

function Pool:_queue_callback(f, values)
  local q = self._cbq
  q[#q + 1] = { f, values }
end

local function run_callbacks(self)
  local q = self._cbq
  if #q == 0 then return end
  self._cbq = {}
  for i, c in ipairs(q) do
    local ok, err = pcall(c[1], tunpack(c[2], 1, c[2].n))
    if not ok then
      -- keep the rest for the next call, then raise in the caller
      for j = i + 1, #q do self._cbq[#self._cbq + 1] = q[j] end
      error(err, 0)
    end
  end
end

-- One round of bookkeeping: wait at most until deadline (nil: forever;
-- a pool's own deadlines cut it shorter), handle what happened.
function Pool:_pump(deadline)
  self:_dispatch()
  local wake = self:_next_wake()
  if deadline and (not wake or deadline < wake) then wake = deadline end
  local timeout = wake and math.max(0, wake - now()) or nil
  local ev, n = self._backend:wait(timeout)
  for i = 1, 3 * n, 3 do
    if ev[i + 1] == "msg" then
      self:_on_msg(ev[i], ev[i + 2])
    else
      self:_on_exit(ev[i], ev[i + 2])
    end
  end
  self:_timers()
  self:_dispatch()
end

-- The bookkeeping without blocking (ready(), process.wait).
function Pool:_step()
  if getpid() ~= self._owner then return end
  self:_guarded(now())
  run_callbacks(self)
end

-- One round of bookkeeping; an error that escapes it (Ctrl-C, out of
-- memory) terminates the workers before it is raised again.
function Pool:_guarded(deadline)
  local ok, err = pcall(self._pump, self, deadline)
  if not ok then
    pcall(self.terminate, self)
    error(err, 0)
  end
end

-- Run the bookkeeping until cond(arg) or the deadline (nil: none).
function Pool:_wait_for(cond, deadline, arg)
  if getpid() ~= self._owner then error("pool not running", 3) end
  while true do
    if self._cbq[1] then run_callbacks(self) end
    if cond(arg) then return true end
    if deadline and now() >= deadline then return false end
    if not next(self._workers) and not next(self._dying) and self._qhead > self._qtail then
      -- nothing can make progress any more
      if cond(arg) then return true end
      return false
    end
    self:_guarded(deadline)
  end
end

----------------------------------------------------------------------------
-- Public methods
----------------------------------------------------------------------------

local function check_pool(self, fname, level)
  if getmetatable(self) ~= Pool then
    argerror(1, fname, "Pool expected, got " .. type(self), level + 1)
  end
end

local function check_running(self, fname, level)
  level = level or 2
  check_pool(self, fname, level + 1)
  if self._state == "BROKEN" then error("pool is broken: " .. self._reason, level + 1) end
  if self._state ~= "RUN" or getpid() ~= self._owner then error("pool not running", level + 1) end
end

local function check_fn(f, fname, level)
  if not is_callable(f) then argerror(1, fname, "function expected, got " .. type(f), level + 1) end
end

local function opt_timeout(t, fname, n, level)
  if t ~= nil and (type(t) ~= "number" or t <= 0) then
    argerror(n, fname, "timeout must be a positive number", level + 1)
  end
  return t
end

-- A task: _id, fn (encode_fn's record), msg (task_message_of's, made
-- with the id the task gets: self._nextid + 1), timeout, on_done, and
-- while a worker holds it, worker and seq; _done once it has finished,
-- cancelled once cancelled.  Fields set later get their slots here (no
-- rehash).  A task of apply_async is its AsyncResult too (apply_async).
local function new_task(self, fn, msg, timeout, on_done)
  local id = self._nextid + 1
  self._nextid = id
  if timeout then self._timed = true end -- from now on _timers and _next_wake look
  return { _id = id, fn = fn, msg = msg, timeout = timeout, on_done = on_done,
           seq = false, worker = false, _done = false }
end

local function enqueue(self, task)
  self._qtail = self._qtail + 1
  self._queue[self._qtail] = task
end

-- Cancel helper: a queued task never runs; a running one's worker is
-- terminated and replaced; false when the task had finished.
local function cancel_task(self, task)
  if task._done or task.cancelled then return false end
  local w = task.worker
  local b = self._backend
  if w and w.tasks[1] ~= task and b.skip then
    -- handed ahead: the worker skips it, unless it has just started it
    if b:skip(w.h, task.seq) then
      task.cancelled = true -- (it leaves the worker's list with the worker's answer)
      return true
    end
    -- it started: the answers to the tasks before it were sent first,
    -- so they are here; take them, then it is the worker's running task
    local deadline = now() + GRACE
    while not task._done and task.worker == w and w.tasks[1] ~= task and now() < deadline do
      self:_guarded(deadline)
    end
    if task._done then return false end
    w = task.worker
  end
  if w and w.tasks[1] == task then
    if self:_abandon(w) then -- running: its worker is terminated and replaced
      task.cancelled = true
      return true
    end
    -- its worker has moved on to the next task: it has finished, and its
    -- answer is on its way (or already read while the others were taken back)
    local deadline = now() + GRACE
    while not task._done and task.worker == w and now() < deadline do
      self:_guarded(deadline)
    end
    return false
  end
  task.cancelled = true
  if w then
    -- handed to the worker, not started (a backend without b:skip): it
    -- skips it when told so (it stays in the worker's list until the
    -- worker says so)
    b:send(w.h, { spack("<Bj", KIND_CANCEL, task._id) })
  end
  return true
end

local function apply_cancel(task)
  if not cancel_task(task._pool, task) then return false end
  task.on_done(task, false, fmt("task %d was cancelled", task._id))
  return true
end

local function apply_async(self, f, args, opts, fname, L)
  -- the common case is checked here; the checks proper raise otherwise
  if not pools[self] or self._state ~= "RUN" or getpid() ~= self._owner then
    check_running(self, fname, L + 1)
  end
  if type(f) ~= "function" then check_fn(f, fname, L + 1) end
  if args ~= nil and type(args) ~= "table" then
    argerror(2, fname, "table expected, got " .. type(args), L + 1)
  end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(3, fname, "table expected, got " .. type(opts), L + 1)
  end
  local timeout = self._timeout
  if opts then
    if opts.callback ~= nil and not is_callable(opts.callback) then
      argerror(3, fname, "callback must be a function", L + 1)
    end
    if opts.error_callback ~= nil and not is_callable(opts.error_callback) then
      argerror(3, fname, "error_callback must be a function", L + 1)
    end
    if opts.timeout ~= nil then timeout = opt_timeout(opts.timeout, fname, 3, L + 1) end
  end
  local fn = fns[f] or encode_fn(f, L + 1)
  local fnid, cacheit = fn[1], fn[3]
  local fnpart = cacheit == 1 and "" or fn[2]
  local id = self._nextid + 1
  local msg
  if args then
    -- a plain list of numbers (the common case) travels without the codec
    local n = rawget(args, "n") or rawlen(args)
    if math.type(n) == "integer" and getmetatable(args) == nil then
      msg = task_message_of(id, fnid, MODE_APPLY, cacheit, fnpart, args, 1, n)
    end
  end
  if not msg then
    msg = task_message_of(id, fnid, MODE_APPLY, cacheit, fnpart, encode_args(args or {}, "args", nil, L + 1))
  end
  -- the task is its AsyncResult (one table instead of two: R.new's
  -- fields beside the task's; not in _unfinished: failing the task
  -- completes it)
  self._nextid = id
  if timeout then self._timed = true end -- from now on _timers and _next_wake look
  -- (on_done is R._complete, which sets _done; every field it reads is
  -- here, false when unset: a missing one would be looked up in
  -- AsyncResult too; with _ok and _values, 16 slots)
  local task = setmetatable({ _id = id, fn = fn, msg = msg, timeout = timeout or false,
                              on_done = R._complete, seq = false, worker = false, _done = false,
                              cancelled = false, _pool = self, _cancel = apply_cancel, _seq = false,
                              _callback = false, _error_callback = false }, AsyncResult)
  if opts then
    task._callback, task._error_callback = opts.callback, opts.error_callback
  end
  local qt = self._qtail + 1 -- (enqueue)
  self._qtail = qt
  self._queue[qt] = task
  -- start it now if a worker has room (while many queue, they are full)
  if qt - self._qhead < self._n * PREFETCH then self:_dispatch() end
  return task
end

function Pool:apply_async(f, args, opts)
  local r = apply_async(self, f, args, opts, "apply_async", 2)
  return r
end

function Pool:apply(f, args)
  return apply_async(self, f, args, nil, "apply", 2):get()
end

local function default_chunksize(self, n)
  if self._timeout then return 1 end
  local c, extra = n // (self._n * 4), n % (self._n * 4)
  if extra > 0 then c = c + 1 end
  return math.max(c, 1)
end

local function check_chunksize(c, fname, level)
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    argerror(3, fname, "chunksize must be a positive integer", level + 1)
  end
  return c
end

-- Submit items[first..last] as one task; done(ok, values_or_err, index).
local function chunk_done(task, ok, v, index)
  task._done = true
  task.mapdone(task, ok, v, index)
end

local function submit_chunk(self, fn, mode, items, first, last, root, done, L)
  local id, fnpart = self._nextid + 1, fn[3] == 1 and "" or fn[2]
  local msg
  if mode == MODE_MAP then -- a list of numbers: the fast path
    msg = task_message_of(id, fn[1], mode, fn[3], fnpart, items, first, last)
  end
  if not msg then
    local chunk = table.move(items, first, last, 1, {})
    chunk.n = last - first + 1
    if mode == MODE_STAR then
      for i = 1, chunk.n do
        if type(chunk[i]) ~= "table" then
          error(fmt("%s[%d]: argument list expected, got %s", root, first + i - 1, type(chunk[i])), L + 1)
        end
      end
    end
    msg = task_message_of(id, fn[1], mode, fn[3], fnpart, encode_args(chunk, root, first, L + 1))
  end
  local task = new_task(self, fn, msg, self._timeout, chunk_done)
  task.mapdone = done
  task.first = first
  enqueue(self, task)
  return task
end

local function map_async(self, fname, f, list, chunksize, mode, opts)
  check_running(self, fname, 3)
  check_fn(f, fname, 3)
  if type(list) ~= "table" then argerror(2, fname, "table expected, got " .. type(list), 3) end
  check_chunksize(chunksize, fname, 3)
  local fn = encode_fn(f, 3)
  local n = #list
  chunksize = chunksize or default_chunksize(self, n)
  local out = new_list(n)
  out.n = n
  local r = R.new(self, self._nextid + 1, opts)
  local tasks, left = {}, 0
  local failed -- lowest failing index, its error
  local function finish()
    self._unfinished[r] = nil
    if failed then
      R._complete(r, false, failed.err)
    else
      R._complete(r, true, { n = 1, out })
    end
  end
  local function done(task, ok, v, index)
    left = left - 1
    if ok then
      if v ~= true then table.move(v, 1, v.n, task.first, out) end -- (true: already there)
    else
      local at = task.first + (index or 1) - 1
      if not failed or at < failed.at then
        failed = { at = at, err = v }
        -- chunks after the failure are not needed any more
        for _, t in ipairs(tasks) do
          if not t._done and t.first > at and not t.worker then t.cancelled = true; t._done = true; left = left - 1 end
        end
      end
    end
    if left == 0 and not r._done then finish() end
  end
  local ok, err = pcall(function()
    for first = 1, n, chunksize do
      local last = math.min(n, first + chunksize - 1)
      local task = submit_chunk(self, fn, mode, list, first, last, "list", done, -1)
      task.into = out
      tasks[#tasks + 1] = task
      left = left + 1
      if #tasks <= self._n then self:_dispatch() end -- workers start while the rest is encoded
    end
  end)
  if not ok then
    for _, t in ipairs(tasks) do t.cancelled = true end
    error(err, 3)
  end
  r._cancel = function()
    for _, t in ipairs(tasks) do
      if not t._done then cancel_task(self, t); t._done = true end
    end
    if r._done then return false end -- its last chunks finished meanwhile
    self._unfinished[r] = nil
    R._complete(r, false, "map was cancelled")
    return true
  end
  if n == 0 then
    R._complete(r, true, { n = 1, out })
  else
    self._unfinished[r] = true
  end
  self:_dispatch()
  return r
end

function Pool:map_async(f, list, chunksize, opts)
  local r = map_async(self, "map_async", f, list, chunksize, MODE_MAP, opts)
  return r
end

function Pool:starmap_async(f, list, chunksize, opts)
  local r = map_async(self, "starmap_async", f, list, chunksize, MODE_STAR, opts)
  return r
end

function Pool:map(f, list, chunksize)
  return (map_async(self, "map", f, list, chunksize, MODE_MAP):get())
end

function Pool:starmap(f, list, chunksize)
  return (map_async(self, "starmap", f, list, chunksize, MODE_STAR):get())
end

-- imap family: a bounded number of chunks in flight.
local function imap(self, fname, f, iterable, chunksize, mode, ordered)
  check_running(self, fname, 3)
  check_fn(f, fname, 3)
  local fn = encode_fn(f, 3)
  local ty = type(iterable)
  if ty ~= "table" and ty ~= "function" then
    argerror(2, fname, "table or iterator function expected, got " .. ty, 3)
  end
  check_chunksize(chunksize, fname, 3)
  chunksize = chunksize or 1
  local nextitem
  if ty == "table" then
    local i = 0
    nextitem = function()
      i = i + 1
      return iterable[i]
    end
  else
    nextitem = iterable
  end
  -- items submitted but not yet given to the loop (in flight, or done
  -- and waiting for an earlier one) stay under this bound
  local limit = (2 * self._n + 1) * chunksize
  local inflight, exhausted, count, yielded = 0, false, 0, 0
  local results = {}   -- index -> {ok, value}
  local order = {}     -- completion order (unordered)
  local ohead = 1
  local nexti = 1      -- next index to yield (ordered)
  local buffer = {}
  local function done(task, ok, v, index)
    inflight = inflight - 1
    if ok then
      for i = 1, v.n do
        local at = task.first + i - 1
        results[at] = { true, v[i] }
        order[#order + 1] = at
      end
    else
      local at = task.first + (index or 1) - 1
      -- items before the failing one in the chunk completed: the worker
      -- stopped at the failure, so they are lost; report them failed too
      for k = task.first, task.first + task.count - 1 do
        results[k] = { false, v }
        order[#order + 1] = k
      end
      results[at] = { false, v }
    end
  end
  local function refill()
    while not exhausted and count - yielded < limit and self._state == "RUN" do
      local n = 0
      for _ = 1, chunksize do
        local v = nextitem()
        if v == nil then exhausted = true; break end
        n = n + 1
        buffer[n] = v
      end
      for k = n + 1, #buffer do buffer[k] = nil end
      if n == 0 then break end
      local first = count + 1
      local items = {}
      for k = 1, n do items[first + k - 1] = buffer[k] end
      local task = submit_chunk(self, fn, mode, items, first, first + n - 1, "iterable", done, -1)
      task.count = n
      count = count + n
      inflight = inflight + 1
    end
  end
  local failed_state
  return function()
    if failed_state then error(failed_state, 2) end
    while true do
      local at
      if ordered then
        if results[nexti] then at = nexti end
      else
        while ohead <= #order and not results[order[ohead]] do ohead = ohead + 1 end
        if ohead <= #order then at = order[ohead]; ohead = ohead + 1 end
      end
      if at then
        local res = results[at]
        results[at] = nil
        if ordered then nexti = nexti + 1 end
        yielded = yielded + 1
        refill()
        if not res[1] then error(res[2], 2) end
        return at, res[2]
      end
      if ordered and nexti > count and exhausted then return nil end
      if not ordered and exhausted and inflight == 0 and ohead > #order then return nil end
      local ok, err = pcall(refill)
      if not ok then failed_state = err; error(err, 2) end
      if inflight == 0 and not (ordered and results[nexti]) and ohead > #order then
        if exhausted then return nil end
        if self._state ~= "RUN" then
          error(self._state == "BROKEN" and "pool is broken: " .. self._reason or "pool not running", 2)
        end
      end
      self:_wait_for(function()
        if ordered then return results[nexti] ~= nil end
        return ohead <= #order
      end, nil)
    end
  end
end

function Pool:imap(f, iterable, chunksize)
  return imap(self, "imap", f, iterable, chunksize, MODE_MAP, true)
end

function Pool:imap_unordered(f, iterable, chunksize)
  return imap(self, "imap_unordered", f, iterable, chunksize, MODE_MAP, false)
end

function Pool:istarmap(f, iterable, chunksize)
  return imap(self, "istarmap", f, iterable, chunksize, MODE_STAR, true)
end

function Pool:close()
  check_pool(self, "close", 2)
  if self._state == "RUN" then self._state = "CLOSE" end
end

-- Retire idle workers once nothing is queued (after close).
function Pool:_drain_idle()
  if self._qhead <= self._qtail then return end
  for h, w in pairs(self._workers) do
    if #w.tasks == 0 then
      w.retiring = true
      self._backend:retire(h)
      self._workers[h] = nil
      self._nworkers = self._nworkers - 1
      self._dying[h] = now() + 5 + GRACE
    end
  end
end

function Pool:join(timeout)
  check_pool(self, "join", 2)
  if self._state == "RUN" then error("pool is still running", 2) end
  if getpid() ~= self._owner then error("pool not running", 2) end
  local deadline = timeout and now() + math.max(timeout, 0) or nil
  local ok = self:_wait_for(function()
    if self._state == "CLOSE" and self._qhead > self._qtail then
      self._n = 0 -- no replacements from here on
      self:_drain_idle()
    end
    return not next(self._workers) and not next(self._dying)
  end, deadline)
  if not ok then return nil, "timeout" end
  self._backend:close()
  return true
end

function Pool:terminate()
  check_pool(self, "terminate", 2)
  if self._state == "TERMINATE" then return end
  if getpid() ~= self._owner then return end
  local was_broken = self._state == "BROKEN"
  self._state = "TERMINATE"
  if not was_broken then self:_fail_all("pool terminated") end
  self:_stop_workers()
  -- collect the exits now: SIGKILL after the grace period
  while next(self._dying) do
    local wake = self:_next_wake()
    local ev, n = self._backend:wait(wake and math.max(0, wake - now()) or 1)
    for i = 1, 3 * n, 3 do
      if ev[i + 1] == "exit" then self:_on_exit(ev[i], ev[i + 2]) end
    end
    self:_timers()
  end
  self._backend:close()
end

Pool.__close = function(self, err)
  if getpid() ~= self._owner then return end
  if err ~= nil or self._state == "BROKEN" then
    self:terminate()
  elseif self._state ~= "TERMINATE" then
    self:close()
    self:join()
  end
end

-- Collected (or the Lua state closes): nobody can wait for a result any
-- more; the workers are killed and reaped.  The channels may have been
-- finalized already, so only the backend's close runs.
Pool.__gc = function(self)
  if getpid() ~= self._owner or self._state == "TERMINATE" then return end
  self._state = "TERMINATE"
  pcall(self._backend.close, self._backend)
end

function Pool:__tostring()
  return fmt("<Pool processes=%d state=%s>", self._n, self._state)
end

-- Pool's options, checked alike by every backend's front end (process.Pool,
-- process.mpi.Pool): n | {processes, initializer, initargs,
-- maxtasksperchild, timeout}; default_n when no processes are given.
-- level: the user's call, counted as error() counts from the function
-- calling this (1 is that function).
-- Returns n, initializer, initargs, maxtasksperchild, timeout.
function P.options(opts, default_n, level)
  local function bad(msg) error(fmt("bad argument #1 to 'Pool' (%s)", msg), level + 2) end
  local n, initializer, initargs, maxtasks, timeout
  if opts == nil or math.type(opts) == "integer" then
    n = opts
  elseif type(opts) == "table" then
    n = opts.processes
    initializer, initargs = opts.initializer, opts.initargs
    maxtasks, timeout = opts.maxtasksperchild, opts.timeout
    for k in pairs(opts) do
      if k ~= "processes" and k ~= "initializer" and k ~= "initargs" and k ~= "maxtasksperchild"
         and k ~= "timeout" then
        bad(fmt("unknown option '%s'", tostring(k)))
      end
    end
  else
    bad("integer or table expected, got " .. (math.type(opts) or type(opts)))
  end
  if n == nil then n = default_n end
  if math.type(n) ~= "integer" or n < 1 then bad("processes must be at least 1") end
  if initializer ~= nil and type(initializer) ~= "function"
     and not (type(getmetatable(initializer)) == "table" and getmetatable(initializer).__call) then
    bad("initializer must be a function")
  end
  if initargs ~= nil and type(initargs) ~= "table" then bad("initargs must be a table") end
  if maxtasks ~= nil and (math.type(maxtasks) ~= "integer" or maxtasks < 1) then
    bad("maxtasksperchild must be a positive integer")
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    bad("timeout must be a positive number")
  end
  return n, initializer, initargs, maxtasks, timeout
end

return P
