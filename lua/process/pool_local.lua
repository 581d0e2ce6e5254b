-- process/pool_local.lua - process.Pool over local child processes: the
-- worker backend of process.pool (its interface is documented at the top
-- of lua/process/pool.lua) and the front end that checks Pool's options.
--
-- Each worker is a Process (of the pool's start method) with its own
-- duplex Pipe: tasks go down it, replies come up.  The parent's end and
-- the worker's sentinel are what the pool waits on.  Workers are started
-- as daemons, which gives them what luamp already guarantees daemons
-- under every start method: PR_SET_PDEATHSIG (they die with the owner,
-- also when it is SIGKILLed) and SIGTERM-then-SIGKILL at the owner's
-- exit; once running, a worker clears its daemon flag, so its tasks may
-- start processes and pools of their own.  Workers ignore SIGINT.
local core = ...
local process = require "process"
local P = require "process.pool"

local type, error, fmt = type, error, string.format

local L = {}

-- Parent-side ends of every pool's channels in this process: a worker
-- started by fork closes them all, so that only the owner holds them.
local parent_ends = setmetatable({}, { __mode = "k" })

----------------------------------------------------------------------------
-- The worker
----------------------------------------------------------------------------

local function worker_main(conn, initializer, initargs)
  core.pool_ignore_sigint()
  rawset(process.current_process(), "_daemon", false)
  for c in pairs(parent_ends) do pcall(c.close, c) end
  local err = P.initialize(initializer, initargs)
  local ok = conn:send_bytes(P.ready_message(err))
  if err ~= nil or not ok then os.exit(1) end
  local st = { cache = {}, ncache = 0 }
  local recv, send, serve = conn.recv_bytes, conn.send_bytes, P.serve
  while true do
    local got, msg = pcall(recv, conn)
    if not got then break end -- the owner closed the channel (retired)
    if not send(conn, serve(msg, st)) then break end
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
  }, Backend)
end

function Backend:start()
  local a, b, ename = process.Pipe()
  if not a then return nil, b, ename end
  self.count = self.count + 1
  parent_ends[a] = true
  local p = self.ctx.Process{
    target = target, args = { b, self.initializer, self.initargs or {} },
    daemon = true, name = fmt("PoolWorker-%d", self.count),
  }
  local ok, err, en = p:start()
  b:close()
  if not ok then
    parent_ends[a] = nil
    a:close()
    return nil, err, en
  end
  local h = { p = p, conn = a, pid = p.pid, fd = a:fileno(), sentinel = p.sentinel, eof = false }
  self.live[h] = true
  self.fdlist = false
  return h
end

function Backend:send(h, bytes)
  if h.eof or h.retired then return nil end
  return h.conn:send_bytes(bytes)
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

-- Everything h has sent, in order, until none is waiting or EOF.
local function drain(self, h, events)
  local conn = h.conn
  while not h.eof and conn:poll(0) do
    local ok, msg = pcall(conn.recv_bytes, conn)
    if not ok then
      h.eof = true -- closed, or closed in the middle of a message
      self.fdlist = false
    else
      events[#events + 1] = { h, "msg", msg }
    end
  end
end

function Backend:wait(timeout)
  local list = self:fds()
  local events = {}
  if #list == 0 then
    if timeout and timeout > 0 then core.pool_wait({}, timeout) end
    return events
  end
  local ready, err = core.pool_wait(list, timeout)
  if not ready then error(err, 0) end
  local owners, seen = self.owners, {}
  for _, i in ipairs(ready) do
    local h = owners[i]
    if not seen[h] then
      seen[h] = true
      drain(self, h, events)
      local code = h.p.exitcode
      if code ~= nil then
        events[#events + 1] = { h, "exit", code }
        h.exited = true
        self.fdlist = false
      end
    end
  end
  return events
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
  self.fdlist = false
  h.p:join()
  h.p:close()
  parent_ends[h.conn] = nil
  h.conn:close()
end

function Backend:close()
  for h in pairs(self.live) do
    if not h.exited and h.p:is_alive() then h.p:kill() end
    self:release(h)
  end
end

----------------------------------------------------------------------------
-- process.Pool([n | opts]) and get_context(m).Pool
----------------------------------------------------------------------------

local function argerror(msg)
  error(fmt("bad argument #1 to 'Pool' (%s)", msg), 4)
end

-- method: nil (the current start method) or a context's.
function L.new(method, opts)
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
        argerror(fmt("unknown option '%s'", tostring(k)))
      end
    end
  else
    argerror("integer or table expected, got " .. (math.type(opts) or type(opts)))
  end
  if n == nil then n = process.cpu_count() end
  if math.type(n) ~= "integer" or n < 1 then argerror("processes must be at least 1") end
  if initializer ~= nil and type(initializer) ~= "function"
     and not (type(getmetatable(initializer)) == "table" and getmetatable(initializer).__call) then
    argerror("initializer must be a function")
  end
  if initargs ~= nil and type(initargs) ~= "table" then argerror("initargs must be a table") end
  if maxtasks ~= nil and (math.type(maxtasks) ~= "integer" or maxtasks < 1) then
    argerror("maxtasksperchild must be a positive integer")
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    argerror("timeout must be a positive number")
  end
  local ctx = process.get_context(method)
  local backend = L.backend(ctx, initializer, initargs)
  -- nil, "start: <strerror>", "EAGAIN" when the OS refuses a worker
  return P.new(backend, { processes = n, maxtasksperchild = maxtasks, timeout = timeout })
end

return L
