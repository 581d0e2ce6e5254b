-- The binding's error convention at its edges (issue 14): OS refusals
-- come back as nil, "op: strerror", "ENAME" wherever they happen, and
-- leave no child, descriptor or mapping behind.
local H = require "spec.helper"
local process = require "process"
local internal = require "process.internal"

describe("binding", function()
  before_each(H.snapshot)
  after_each(function()
    internal.fault("dup", "EMFILE", 0)
    internal.fault("pidfd", "EMFILE", 0)
    H.check()
  end)

  H.each_method(function(ctx, method)
    describe(method, function()
      -- spawn and forkserver copy each Connection's descriptor into the
      -- payload; it raised a {msg, ename} table that init.lua unpacked
      it("a descriptor the payload cannot copy is an OS refusal of start", function()
        local a, b = process.Pipe()
        local p = ctx.Process{target = function(c) c:send("hi") end, args = {b}}
        internal.fault("dup", "EMFILE")
        local r, err, ename = p:start()
        if method == "fork" then -- the child inherits the Pipe: no copy made
          assert.equal(p, r)
        else
          assert.is_nil(r)
          assert.equal("start: Too many open files", err)
          assert.equal("EMFILE", ename)
          assert.is_nil(p.pid)
          internal.fault("dup", "EMFILE", 0)
          assert.equal(p, p:start())
        end
        assert.equal("hi", a:recv())
        assert.equal(0, p:join())
        p:close()
        a:close()
        b:close()
      end)

      -- parent_process():join raised the refusal (and would have indexed
      -- nil on a refused wait) where Process:join returns it
      it("parent_process():join returns an OS refusal as Process:join does", function()
        if not internal.have_pidfd() then return pending("pipe fallback: no pidfd to refuse") end
        local p = ctx.Process{target = function()
          local pr = require("process").parent_process()
          require("process.internal").fault("pidfd", "EMFILE")
          return pr:join(0)
        end}
        assert(p:start())
        assert.equal(0, p:join())
        local r = table.pack(p:result())
        p:close()
        if method == "forkserver" then -- the server hands its children a parent descriptor
          assert.same({n = 2, nil, "timeout"}, r)
        else
          assert.same({n = 3, nil, "parent_process: Too many open files", "EMFILE"}, r)
        end
      end)
    end)
  end)
end)
