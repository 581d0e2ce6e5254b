-- Refusals from the OS: they come back as nil, message, errno name; they
-- leave no zombie and no descriptor behind.
local H = require "spec.helper"

describe("faults", function()
  before_each(H.snapshot)
  after_each(H.check)

  H.each_method(function(_, method)
    for _, how in ipairs{"luamp", "lua"} do
      it("start returns EMFILE at the descriptor limit and works again (" .. how .. ", " .. method .. ")", function()
        local interp = how == "lua" and H.lua or H.luamp
        local out, err, code = H.run("LUAMP_TEST_METHOD=" .. method .. " prlimit --nofile=32:32 " .. interp ..
          " spec/fixtures/emfile.lua")
        assert.equal("", err)
        assert.equal(0, code)
        assert.equal("nil\tstart: Too many open files\tEMFILE\n6\thi\n", out)
      end)
    end
  end)
end)
