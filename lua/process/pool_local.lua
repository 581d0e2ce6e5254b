-- process/pool_local.lua - process.Pool over local child processes: the
-- worker backend of process.pool (its interface is documented at the top
-- of lua/process/pool.lua) and the front end that checks Pool's options.
--
-- Each worker is a Process (of the pool's start method) with its own
-- channel (core.pool_channel: a stream socketpair carrying length-framed
-- messages, so one recv takes every reply waiting): tasks go down it,
-- replies come up, and its claims (a shared int64 Array: which of the
-- tasks handed to it the worker has started, or the parent took back;
-- b:skip and b:started).  The parent's end and
-- the worker's sentinel are what the pool waits on.  Workers are started
-- as daemons, which gives them what luamp already guarantees daemons
-- under every start method: PR_SET_PDEATHSIG (they die with the owner,
-- also when it is SIGKILLed) and SIGTERM-then-SIGKILL at the owner's
-- exit; once running, a worker clears its daemon flag, so its tasks may
-- start processes and pools of their own.  Workers ignore SIGINT.
local core = ...
local process = require "process"
local P = require "process.pool"

local error, fmt = error, string.format
local sendframe = core.pool_sendframe

local L = {}

-- Parent-side ends of every pool's channels in this process: a worker
-- started by fork closes them all, so that only the owner holds them.
local parent_ends = setmetatable({}, { __mode = "k" })

----------------------------------------------------------------------------
-- The worker
----------------------------------------------------------------------------

-- A worker's claims (core.pool_claim): a shared int64 Array of RING
-- slots; slot (seq - 1) % RING + 1 holds seq once the worker has started
-- its seq-th task, -seq when the parent took that task back first.
local RING = 16 -- > the tasks a worker holds at once (process.pool's PREFETCH)
local claim = core.pool_claim

local function worker_main(conn, claims, initializer, initargs)
  core.pool_ignore_sigint()
  rawset(process.current_process(), "_daemon", false)
  for c in pairs(parent_ends) do pcall(c.close, c) end
  local err = P.initialize(initializer, initargs)
  local fd = conn:fileno()
  local ok = sendframe(fd, P.ready_message(err))
  if err ~= nil or not ok then os.exit(1) end
  local st = P.worker_state()
  local reader = core.pool_reader(fd)
  local inbox, ih, it = {}, 1, 0
  local frames, eof = {}, false
  local note, handle, skipped = P.note, P.handle, P.skipped
  local seq = 0
  -- Takes what has arrived: cancel notes are applied at once, tasks
  -- queue in order.
  local function take(block)
    local n, at_eof = reader:read(frames, block)
    for i = 1, n do
      local m = frames[i]
      frames[i] = nil
      if not note(m, st) then
        it = it + 1
        inbox[it] = m
      end
    end
    if at_eof then eof = true end
  end
  while true do
    if ih > it then
      if eof then break end -- the owner retired this worker
      take(true)
    else
      -- a cancel note for the next task may be on its way: read first
      -- (notes come only through a relay without claims: process.mpi)
      if st.noted then take() end
      local msg = inbox[ih]
      inbox[ih] = nil
      ih = ih + 1
      seq = seq + 1
      local reply
      if claim(claims, seq) then
        reply = handle(msg, st)
      else
        reply = skipped(msg) -- the parent took it back
      end
      if not sendframe(fd, reply) then break end
    end
  end
  conn:close()
end
L._worker_main = worker_main

-- The target each worker runs: it reaches worker_main by name, so it
-- travels to spawn and forkserver children as a few bytes.
local function target(...)
  return require("process.pool_local")._worker_main(...)
end

----------------------------------------------------------------------------
-- The backend
----------------------------------------------------------------------------

local Backend = {}
Backend.__index = Backend

function L.backend(ctx, initializer, initargs)
  return setmetatable({
    ctx = ctx, initializer = initializer, initargs = initargs,
    live = {},      -- h -> true until released
    count = 0,      -- names PoolWorker-N
    fdlist = false, -- cached descriptor list (false: rebuild)
    events = {}, nev = 0, -- what wait returns (one list, reused), its length
  }, Backend)
end

function Backend:start()
  local a, b, ename = core.pool_channel()
  if not a then return nil, b, ename end
  local claims = process.Array("int64", RING, { lock = false })
  self.count = self.count + 1
  parent_ends[a] = true
  local p = self.ctx.Process{
    target = target, args = { b, claims, self.initializer, self.initargs or {} },
    daemon = true, name = fmt("PoolWorker-%d", self.count),
  }
  local ok, err, en = p:start()
  b:close()
  if not ok then
    parent_ends[a] = nil
    a:close()
    return nil, err, en
  end
  local fd = a:fileno()
  local h = { p = p, conn = a, pid = p.pid, fd = fd, sentinel = p.sentinel, eof = false,
              reader = core.pool_reader(fd), claims = claims }
  self.live[h] = true
  self.fdlist = false
  return h
end

local sendframes = core.pool_sendframes

function Backend:send(h, msgs)
  if h.eof or h.retired then return nil end
  if msgs[2] == nil then return sendframe(h.fd, msgs[1]) end
  return sendframes(h.fd, msgs) -- one write for the batch
end

-- Take back the seq-th task sent to h unless the worker has started it.
function Backend:skip(h, seq) -- luacheck: ignore 212
  return core.pool_takeback(h.claims, seq)
end

function Backend:started(h, seq) -- luacheck: ignore 212
  return core.pool_started(h.claims, seq)
end

function Backend:fds()
  local list = self.fdlist
  if list then return list end
  list = {}
  local owners = {}
  for h in pairs(self.live) do
    if not h.eof then
      list[#list + 1] = h.fd
      owners[#list] = h
    end
    list[#list + 1] = h.sentinel
    owners[#list] = h
  end
  self.fdlist, self.owners = list, owners
  return list
end

-- Everything h has sent, in order (one recv for all that is waiting),
-- appended to events after its k-th slot; -> the new k.
local frames = {}
local function drain(self, h, events, k)
  if h.eof then return k end
  local n, eof = h.reader:read(frames)
  for i = 1, n do
    events[k + 1], events[k + 2], events[k + 3] = h, "msg", frames[i]
    k = k + 3
    frames[i] = nil
  end
  if eof then
    h.eof = true -- closed, or closed in the middle of a message
    self.fdlist = false
  end
  return k
end

-- (The list of events is reused by the next wait: one list instead of
-- one per wait, grown three slots at a time.  Not when a worker ended:
-- then the list is a new one, and the reused one is left empty, so that
-- nothing keeps a released worker, its claims' memfd, alive.)
function Backend:wait(timeout)
  local list = self:fds()
  local events, k = self.events, 0
  for i = 1, self.nev do events[i] = nil end -- (what the last wait returned)
  self.nev = 0
  if #list == 0 then
    if timeout and timeout > 0 then core.pool_wait({}, timeout) end
    return events, 0
  end
  local ready, err = core.pool_wait(list, timeout)
  if not ready then error(err, 0) end
  local owners, sentinels = self.owners, nil
  for _, i in ipairs(ready) do
    local h = owners[i]
    if list[i] == h.sentinel then
      sentinels = sentinels or {}
      sentinels[#sentinels + 1] = h
    else
      k = drain(self, h, events, k)
    end
  end
  if sentinels then
    local fresh = table.move(events, 1, k, 1, {})
    for i = 1, k do events[i] = nil end
    events = fresh
    for _, h in ipairs(sentinels) do
      k = drain(self, h, events, k) -- what it sent before it ended comes first
      local code = h.p.exitcode
      if code ~= nil then
        events[k + 1], events[k + 2], events[k + 3] = h, "exit", code
        k = k + 3
        h.exited = true
        self.fdlist = false
      end
    end
  end
  self.nev = sentinels and 0 or k
  return events, k // 3
end

function Backend:terminate(h)
  if not h.exited then h.p:terminate() end
end

function Backend:kill(h)
  if not h.exited then h.p:kill() end
end

function Backend:retire(h)
  h.retired = true
  -- EOF tells the worker to end once it has read what it was sent
  parent_ends[h.conn] = nil
  h.conn:close()
  h.eof = true
  self.fdlist = false
end

function Backend:release(h)
  if not self.live[h] then return end
  self.live[h] = nil
  self.fdlist, self.owners = false, nil -- (nothing keeps h: its claims' memfd is freed when collected)
  h.p:join()
  h.p:close()
  parent_ends[h.conn] = nil
  h.conn:close()
end

function Backend:close()
  for i = 1, self.nev do self.events[i] = nil end -- (nothing keeps a worker)
  self.nev = 0
  for h in pairs(self.live) do
    if not h.exited and h.p:is_alive() then h.p:kill() end
    self:release(h)
  end
end

----------------------------------------------------------------------------
-- process.Pool([n | opts]) and get_context(m).Pool
----------------------------------------------------------------------------

-- method: nil (the current start method) or a context's.
function L.new(method, opts)
  -- the user's call is level 3 (1 here, 2 process.Pool or a context's Pool)
  local n, initializer, initargs, maxtasks, timeout = P.options(opts, process.cpu_count(), 3)
  local ctx = process.get_context(method)
  local backend = L.backend(ctx, initializer, initargs)
  -- nil, "start: <strerror>", "EAGAIN" when the OS refuses a worker
  return P.new(backend, { processes = n, maxtasksperchild = maxtasks, timeout = timeout })
end

return L
