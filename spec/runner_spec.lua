-- The luamp runner, driven from outside like the stock lua command.
local H = require "spec.helper"

local L = H.luamp

describe("runner", function()
  before_each(H.snapshot)
  after_each(H.check)

  it("runs a script with arg and ... set", function()
    local out, err, code = H.run(L .. " spec/fixtures/args.lua a 'b c'")
    assert.equal(0, code)
    assert.equal("", err)
    assert.equal("spec/fixtures/args.lua\t2\ta\tb c\n", out)
  end)

  it("runs -e statements and -l libraries in order", function()
    local out, _, code = H.run(L .. " -l string -e 'print(string.rep(\"x\", 3))' -l p=process -e 'print(type(p.Process))'")
    assert.equal(0, code)
    assert.equal("xxx\ntable\n", out)
  end)

  it("-l names the global after the module's last dotted part", function()
    local out, _, code = H.run(L .. " -l process.pi -e 'print(type(pi.leibniz), rawget(_G, \"process.pi\"))'")
    assert.equal(0, code)
    assert.equal("function\tnil\n", out)
  end)

  it("finds its build tree's process.mpi without LUA_CPATH, and only there", function()
    local dir = L:match("^(.*)/[^/]+$")
    local mod = dir .. "/src/mpi/process/mpi.so"
    local f = io.open(mod)
    if f then f:close() end
    local out, _, code = H.run("cd / && env -u LUA_CPATH " .. L ..
      " -e 'print(package.searchpath(\"process.mpi\", package.cpath)); print(package.cpath)'")
    assert.equal(0, code)
    local found, cpath = out:match("^([^\n]*)\n([^\n]*)\n$")
    if f then
      assert.equal(mod, found)
      assert.equal(dir .. "/src/mpi/?.so;", cpath:sub(1, #dir + 14))   -- first on package.cpath
    else
      assert.equal("nil", found)                  -- nothing of the kind when MPI is not built
      assert.is_nil(cpath:find("/src/mpi/", 1, true))
    end
  end)

  it("prints its version with -v", function()
    local out, _, code = H.run(L .. " -v")
    assert.equal(0, code)
    assert.matches("^luamp %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)\n$", out)
  end)

  it("runs stdin with -", function()
    local out, _, code = H.run(L .. " - x", "print('from stdin', ...)")
    assert.equal(0, code)
    assert.equal("from stdin\tx\n", out)
  end)

  it("runs stdin when it is not a terminal and there is no script", function()
    local out, _, code = H.run(L, "print(1 + 1)")
    assert.equal(0, code)
    assert.equal("2\n", out)
  end)

  it("reads, evaluates and prints with -i, continuing unfinished lines", function()
    local out, err, code = H.run(L .. " -i", "=1+1\nx = 5\nx\nfor i = 1,\n2 do io.write(i, ' ') end\nprint('done')\n")
    assert.equal(0, code)
    assert.equal("", err)
    assert.matches("^luamp %S+ %(Lua 5%.4%.%d+%)\n> 2\n> > 5\n> >> 1 2 > done\n> \n$", out)
  end)

  it("stops option handling at --", function()
    local out, _, code = H.run(L .. " -- spec/fixtures/args.lua -v")
    assert.equal(0, code)
    assert.equal("spec/fixtures/args.lua\t1\t-v\n", out)
  end)

  it("has the process module built in, from any directory, without LUA_CPATH", function()
    local out, _, code = H.run("cd / && env -u LUA_CPATH -u LUA_PATH " .. L ..
      " -e 'local p = require \"process\"; print(p.current_process().name)'")
    assert.equal(0, code)
    assert.equal("MainProcess\n", out)
  end)

  it("reports an uncaught error with a traceback and exits 1", function()
    local out, err, code = H.run(L .. " spec/fixtures/raise.lua")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^luamp: spec/fixtures/raise.lua:1: boom\nstack traceback:\n", err)
    assert.matches("in local 'deep'", err)
  end)

  it("reports a syntax error and exits 1", function()
    local _, err, code = H.run(L .. " -e 'x ='")
    assert.equal(1, code)
    assert.matches("^luamp: %(command line%):1: unexpected symbol near <eof>", err)
  end)

  it("reports a missing script and a bad option", function()
    local _, err, code = H.run(L .. " no/such/file.lua")
    assert.equal(1, code)
    assert.matches("^luamp: cannot open no/such/file.lua", err)
    _, err, code = H.run(L .. " -z")
    assert.equal(1, code)
    assert.matches("^luamp: unrecognized option '%-z'\nusage: luamp", err)
    _, err, code = H.run(L .. " -e")
    assert.equal(1, code)
    assert.matches("^luamp: '%-e' needs argument", err)
  end)

  it("exits with the code given to os.exit", function()
    local _, _, code = H.run(L .. " -e 'os.exit(7)'")
    assert.equal(7, code)
    _, _, code = H.run(L .. " -e 'os.exit(false)'")
    assert.equal(1, code)
  end)
end)
