-- What differs between the start methods: which descriptors a child gets,
-- what a fresh runtime receives (upvalues, modules, paths, the working
-- directory), exec failures, and the forkserver's own life.
local process = require "process"
local internal = require "process.internal"
local H = require "spec.helper"

-- A file of ours, open in this process: the file, its path and inode.
local function open_marker()
  local path = os.tmpname()
  local f = assert(io.open(path, "w+"))
  return f, path, require("lfs").attributes(path, "ino")
end

-- In a child: the descriptors it has besides 0, 1 and 2, each with the
-- inode it refers to (stat, which never blocks as reading a pipe would).
local function child_fds()
  local lfs = require "lfs"
  local list = {}
  for name in lfs.dir("/proc/self/fd") do
    local fd = tonumber(name)
    if fd and fd > 2 then list[#list + 1] = fd end
  end
  local out = {}
  for _, fd in ipairs(list) do
    out[fd] = lfs.attributes("/proc/self/fd/" .. fd, "ino") or false
  end
  return out
end

describe("start methods", function()
  before_each(H.snapshot)
  after_each(H.check)

  describe("descriptors", function()
    H.each_method(function(ctx, m)
      local inherits = m == "fork"
      it((inherits and "a fork child inherits" or "a " .. m .. " child does not inherit") ..
         " an unrelated descriptor of its parent's", function()
        local f, path, ino = open_marker()
        local p = ctx.Process{target = child_fds}
        assert.equal(0, p:start():join())
        local fds = p:result()
        f:close()
        os.remove(path)
        local seen = false
        for _, i in pairs(fds) do seen = seen or i == ino end
        assert.equal(inherits, seen)
        if not inherits then
          -- only luamp's own and the listing's: the result channel, lfs's
          -- directory handle, the descriptor reserve (core/sys.h); under
          -- spawn without pidfds the death pipe and the parent sentinel;
          -- under forkserver the parent sentinel
          local want = m == "forkserver" and 4 or internal.have_pidfd() and 3 or 5
          local n = 0
          for _ in pairs(fds) do n = n + 1 end
          assert.equal(want, n)
        end
      end)
    end)
  end)

  H.each_method({"spawn", "forkserver"}, function(ctx, m)
    describe(m .. " sends the target", function()
      it("with data upvalues intact: shared tables, cycles, integers, floats", function()
        local shared = {1, 2}
        local t = {a = shared, b = shared, int = math.maxinteger, f = -0.0, nan = 0 / 0}
        t.self = t
        local p = ctx.Process{target = function(extra)
          local ok = t.self == t and t.a == t.b and t.a == shared and math.type(t.int) == "integer"
            and t.int == math.maxinteger and 1 / t.f == -math.huge and t.nan ~= t.nan
            and extra == shared
          return ok, shared[2]
        end, args = {shared}}
        assert.equal(0, p:start():join())
        assert.same({true, 2}, {p:result()})
      end)

      it("refusing an unsendable upvalue with its path, before any process exists", function()
        local handle = io.stdout
        local box = {inner = {f = handle}}
        local server = internal.forkserver_pid()
        local kids, skids = #H.children(), server and #H.children(server)
        local p = ctx.Process{target = function() return box end}
        assert.has_error(function() p:start() end, "target<upvalue 'box'>.inner.f: cannot send a userdata")
        assert.is_nil(p.pid)
        assert.equal(kids, #H.children())
        if server then assert.equal(skids, #H.children(server)) end
        local q = ctx.Process{target = print, args = {1, coroutine.create(print)}}
        assert.has_error(function() q:start() end, "args[2]: cannot send a thread")
        local r = ctx.Process{target = print, job = {io.stderr}}
        assert.has_error(function() r:start() end, "job[1]: cannot send a userdata")
      end)

      it("with C functions and modules by name", function()
        local pi = require "process.pi"
        local p = ctx.Process{target = pi.leibniz, args = {1, 1000}}
        assert.equal(0, p:start():join())
        assert.equal(pi.leibniz(1, 1000), p:result())
        local q = ctx.Process{target = function() return string.format("%05d", 42), pi == require("process.pi") end}
        assert.equal(0, q:start():join())
        assert.same({"00042", true}, {q:result()})
      end)

      it("with package.path and the working directory, so the child requires what we could", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(require("lfs").mkdir(dir))
        local f = assert(io.open(dir .. "/luamp_spec_mod.lua", "w"))
        f:write("return { answer = function() return 42 end }\n")
        f:close()
        local old_path, old_cwd = package.path, require("lfs").currentdir()
        package.path = dir .. "/?.lua;" .. package.path
        local mod = require "luamp_spec_mod"
        require("lfs").chdir(dir)
        local p = ctx.Process{target = function()
          return mod.answer(), require("lfs").currentdir(), package.loaded.luamp_spec_mod == mod
        end}
        local ok, started = pcall(p.start, p)
        require("lfs").chdir(old_cwd)
        package.path = old_path
        package.loaded.luamp_spec_mod = nil
        assert(ok, started)
        assert.equal(0, started:join())
        local answer, cwd, same = p:result()
        os.remove(dir .. "/luamp_spec_mod.lua")
        os.remove(dir)
        assert.equal(42, answer)
        assert.equal(dir, cwd)
        assert.is_true(same)
      end)

      it("reporting a module the child cannot load as the child's error", function()
        package.loaded.luamp_spec_ghost = {}
        local ghost = package.loaded.luamp_spec_ghost
        local p = ctx.Process{target = function() return ghost end}
        p:start()
        package.loaded.luamp_spec_ghost = nil
        assert.equal(1, p:join())
        assert.matches("cannot load module 'luamp_spec_ghost'", p.error)
      end)

      it("with the Process class and contexts as upvalues, by name", function()
        local P, fs = process.Process, process.get_context("forkserver")
        local p = ctx.Process{target = function()
          local c = P{target = function() return 5 end}
          c:start()
          c:join()
          return c:result(), fs.get_start_method(), fs.wait == process.wait
        end}
        assert.equal(0, p:start():join())
        assert.same({5, "forkserver", true}, {p:result()})
      end)

      it("and hands over Connections and Queues", function()
        local a, b = process.Pipe()
        local q = process.Queue()
        local p = ctx.Process{target = function(conn)
          q:put(conn:recv() * 2)
          conn:send("done")
        end, args = {b}}
        assert.equal(p, p:start())
        b:close()
        a:send(21)
        assert.equal(42, q:get(30))
        assert.equal("done", a:recv())
        assert.equal(0, p:join())
        a:close()
      end)
    end)
  end)

  describe("spawn", function()
    local ctx = process.get_context("spawn")
    after_each(function() process.set_executable(nil) end)

    it("finds the runner without configuration", function()
      local exe = internal.get_executable()
      assert.matches("/luamp$", exe)
      assert.is_truthy(require("lfs").attributes(exe))
    end)

    it("reports an exec failure with its errno, and stays startable", function()
      local p = ctx.Process{target = function() return 1 end}
      process.set_executable("/nonexistent/luamp")
      local r, err, ename = p:start()
      assert.is_nil(r)
      assert.equal("start: No such file or directory", err)
      assert.equal("ENOENT", ename)
      assert.is_nil(p.pid)
      process.set_executable(os.tmpname()) -- a file, but not executable
      local r2, err2, ename2 = p:start()
      os.remove(internal.get_executable())
      assert.is_nil(r2)
      assert.equal("start: Permission denied", err2)
      assert.equal("EACCES", ename2)
      process.set_executable(nil)
      assert.equal(0, p:start():join())
      assert.equal(1, p:result())
      assert.has_error(function() process.set_executable(1) end,
        "bad argument #1 to 'set_executable' (string expected, got number)")
    end)
  end)

  describe("forkserver", function()
    local ctx = process.get_context("forkserver")

    it("is restarted after it was killed; children in flight die with it and report 255", function()
      local p = ctx.Process{target = H.block}
      p:start()
      local server = assert(internal.forkserver_pid())
      os.execute("kill -KILL " .. server)
      assert.equal(255, p:join(30)) -- the exit status went with the server
      -- and p's process went with it too (gone, or a zombie of init's;
      -- without pidfds, join cannot wait for that: give it a deadline)
      local st
      for _ = 1, 500 do
        local f = io.open("/proc/" .. p.pid .. "/stat")
        st = f and f:read("a"):match("^%d+ %b() (%a)")
        if f then f:close() end
        if st == nil or st == "Z" then break end
        process.wait({}, 0.01)
      end
      assert.is_true(st == nil or st == "Z", "child still running: " .. tostring(st))
      local q = ctx.Process{target = function() return "again" end}
      assert.equal(0, q:start():join())
      assert.equal("again", q:result())
      local new = assert(internal.forkserver_pid())
      assert.are_not.equal(server, new)
    end)

    it("passes terminate, kill and exit codes through", function()
      local p = ctx.Process{target = H.block}
      p:start()
      p:terminate()
      assert.equal(-15, p:join())
      local q = ctx.Process{target = function() os.exit(7) end}
      assert.equal(7, q:start():join())
    end)

    it("ends with its owner, leaving no process and no socket behind", function()
      local tmp = os.tmpname()
      os.remove(tmp)
      assert(require("lfs").mkdir(tmp))
      for _, how in ipairs{"end", "kill"} do
        local out, err = H.run("TMPDIR=" .. tmp .. " " .. H.luamp .. " -e " .. H.q([[
          local process = require "process"
          local ctx = process.get_context("forkserver")
          assert(ctx.Process{target = function() end}:start()):join()
          print(require("process.internal").forkserver_pid())
          io.stdout:flush()
          if arg[1] == "kill" then os.execute("kill -KILL " .. process.current_process().pid) end
        ]]) .. " " .. how)
        local pid = assert(tonumber(out:match("%d+")), err)
        local gone = false
        for _ = 1, 500 do
          local f = io.open("/proc/" .. pid .. "/stat")
          local st = f and f:read("a"):match("^%d+ %b() (%a)")
          if f then f:close() end
          if not st or st == "Z" then gone = true break end
          process.wait({}, 0.02)
        end
        assert.is_true(gone, how .. ": forkserver " .. pid .. " outlived its owner")
      end
      local left = {}
      for name in require("lfs").dir(tmp) do
        if name ~= "." and name ~= ".." then left[#left + 1] = name end
      end
      os.remove(tmp)
      assert.same({}, left)
    end)
  end)
end)
