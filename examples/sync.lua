-- sync.lua: locks, events, barriers and shared values across processes,
-- and what happens when a process dies holding a lock.
local process = require "process"

local N, K = 4, 20000
local counter = process.Value("int64", 0) -- shared memory, atomic add
local racy = process.Value("int64", 0)    -- the same, updated by read + write
local go = process.Event()                -- starts every worker at once
local done = process.Barrier(N + 1)       -- the workers and this process
local lock = process.Lock()

local function worker(i)
  go:wait()
  for _ = 1, K do
    counter:add(1)
    racy.value = racy.value + 1 -- another process may write in between
  end
  lock:with(function()
    print(("worker %d done"):format(i))
    io.stdout:flush() -- before the barrier: the lines come first
  end)
  done:wait()
end

for i = 1, N do process.Process{target = worker, args = {i}}:start() end
go:set()
done:wait()
print(("atomic add: %d of %d"):format(counter.value, N * K))
print(("read then write: %d lost"):format(N * K - racy.value))
-- the same with the Value's lock around read + write loses nothing
local l = racy:get_lock()
racy.value = 0
local ps = {}
for i = 1, N do
  ps[i] = process.Process{target = function()
    for _ = 1, K do l:with(function() racy.value = racy.value + 1 end) end
  end}
  ps[i]:start()
end
for _, p in ipairs(ps) do p:join() end
print(("read then write under get_lock(): %d lost"):format(N * K - racy.value))

-- A process killed while holding the lock: the next acquire says so once
-- (it does not get the lock), and the lock works again afterwards.
local holding = process.Event()
local holder = process.Process{target = function()
  lock:acquire()
  holding:set()
  process.sleep(60)
end}
holder:start()
holding:wait()
holder:kill()
holder:join()
print("after the holder was killed:", lock:acquire(5))
print("and then:", lock:acquire(5))
lock:release()
