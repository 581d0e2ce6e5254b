-- The public surface as a user meets it: what pairs(process) shows, the
-- version, where errors point, and what each start method accepts as a
-- target.  (Issue 10, items 14, 15, 18 and 20.)
local process = require "process"
local H = require "spec.helper"

describe("the process table", function()
  it("shows no internal hooks: no key starting with '_' but _VERSION", function()
    local hidden = {}
    for k in pairs(process) do
      if type(k) == "string" and k:sub(1, 1) == "_" and k ~= "_VERSION" then
        hidden[#hidden + 1] = k
      end
    end
    table.sort(hidden)
    assert.same({}, hidden)
  end)

  it("keeps the hooks in process.internal, for the runner, specs and benchmarks", function()
    local internal = require "process.internal"
    for _, k in ipairs{"fault", "now", "encode", "decode", "have_pidfd", "forkserver_pid",
                       "get_executable", "child_main"} do
      assert.is_function(internal[k], k)
    end
    assert.equal(3, internal.decode(internal.encode(3)))
  end)

  it("process.internal can be required first, from a stock lua5.4", function()
    local out, err, code = H.run(H.lua .. " -e " .. H.q([[
      local internal = require "process.internal"
      print(type(internal.now()), package.loaded.process ~= nil)]]))
    assert.equal(0, code, err)
    assert.equal("number\ttrue\n", out)
  end)
end)
