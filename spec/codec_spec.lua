-- The codec, through the public API: every value kind and edge round-trips
-- exactly through a Pipe (in one process and across fork) and as a
-- result; unsendable values are refused with their path.
local process = require "process"
local H = require "spec.helper"

-- Structural equality that tells integer from float, -0.0 from 0.0 and
-- keeps NaN equal to NaN; shared references must map one to one.
local function same(a, b, seen)
  seen = seen or {}
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    if a ~= a then return b ~= b end
    if a == 0 and math.type(a) == "float" then return 1 / a == 1 / b end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  if seen[a] ~= nil then return seen[a] == b end
  seen[a] = b
  for k, v in pairs(a) do
    local bk = k
    if type(k) == "table" then
      bk = nil
      for k2 in pairs(b) do
        if type(k2) == "table" and (seen[k] == k2 or (seen[k] == nil and same(k, k2, seen))) then bk = k2 end
      end
      if bk == nil then return false end
    end
    if not same(v, b[bk], seen) then return false end
  end
  for k in pairs(b) do
    if type(k) ~= "table" and a[k] == nil then return false end
  end
  return true
end

local function deep(n)
  local t = {}
  local cur = t
  for _ = 1, n do cur.next = {}; cur = cur.next end
  return t
end

local cyclic = {name = "cycle"}
cyclic.self = cyclic
local shared = {1, 2, 3}
local with_shared = {a = shared, b = shared, list = {shared, shared}}
local key = {"key table"}

local cases = {
  {"nil", nil},
  {"true", true},
  {"false", false},
  {"zero", 0},
  {"small integer", 7},
  {"negative integer", -123456789},
  {"math.maxinteger", math.maxinteger},
  {"math.mininteger", math.mininteger},
  {"2^53 + 1 as an integer", (1 << 53) + 1},
  {"a float", 3.25},
  {"a float with an integer value", 2.0},
  {"-0.0", -0.0},
  {"inf", math.huge},
  {"-inf", -math.huge},
  {"nan", 0 / 0},
  {"the smallest subnormal", 4.9406564584124654e-324},
  {"empty string", ""},
  {"string with NUL", "a\0b\0"},
  {"all bytes", (function() local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end return table.concat(t) end)()},
  {"1 MB string", string.rep("0123456789abcdef", 65536)},
  {"empty table", {}},
  {"array", {1, 2.5, "three", true}},
  {"array with holes", {1, nil, 3, [10] = 10}},
  {"hash", {x = 1, y = {z = "deep"}, [1.5] = "float key", [true] = "bool key"}},
  {"mixed", {1, 2, n = 2, ["odd key"] = {}}},
  {"table as a key", {[key] = "value", other = key}},
  {"shared subtables", with_shared},
  {"a cycle", cyclic},
  {"deep nesting (150)", deep(150)},
  {"many integers", (function() local t = {} for i = 1, 10000 do t[i] = i * 7919 end return t end)()},
}

describe("codec", function()
  before_each(H.snapshot)
  after_each(H.check)

  describe("round trip through a Pipe", function()
    for _, c in ipairs(cases) do
      -- in one process, send blocks once the socket buffer is full and
      -- nobody reads: big cases go through a child below
      local small = type(c[2]) ~= "string" or #c[2] < 65536
      if small then it(c[1], function()
        local a, b = process.Pipe()
        assert.is_true(a:send(c[2]))
        local v = b:recv()
        assert.is_true(same(c[2], v), c[1])
        a:close()
        b:close()
      end) end
    end
  end)

  it("keeps shared references shared and cycles cyclic", function()
    local a, b = process.Pipe()
    a:send(with_shared)
    local v = b:recv()
    assert.equal(v.a, v.b)
    assert.equal(v.a, v.list[1])
    a:send(cyclic)
    local c = b:recv()
    assert.equal(c, c.self)
    a:close()
    b:close()
  end)

  it("round-trips every case across fork, both ways", function()
    local a, b = process.Pipe()
    local p = process.Process{target = function()
      a:close()
      for _ = 1, #cases do b:send(b:recv()) end -- echo
    end}
    p:start()
    b:close()
    for _, c in ipairs(cases) do
      a:send(c[2])
      assert.is_true(same(c[2], a:recv()), c[1])
    end
    assert.equal(0, p:join())
    a:close()
  end)

  it("round-trips every case as a result", function()
    local values = {n = #cases}
    for i, c in ipairs(cases) do values[i] = c[2] end
    local p = process.Process{target = function() return table.unpack(values, 1, values.n) end}
    p:start()
    p:join()
    local got = table.pack(p:result())
    assert.equal(#cases, got.n)
    for i, c in ipairs(cases) do assert.is_true(same(c[2], got[i]), c[1]) end
  end)

  describe("refuses what it cannot carry, naming the path", function()
    local co = coroutine.create(function() end)
    local refusals = {
      {io.stdout, "value: cannot send a userdata"},
      {{1, {handler = io.stdout}}, "value[2].handler: cannot send a userdata"},
      {{co}, "value[1]: cannot send a thread"},
      {{f = function() end}, "value.f: cannot send a function"},
      {{["odd key"] = print}, 'value["odd key"]: cannot send a function'},
      {deep(300), "value: nesting too deep"},
    }
    for _, r in ipairs(refusals) do
      it(r[2], function()
        local a, b = process.Pipe()
        local ok, err = pcall(a.send, a, r[1])
        assert.is_false(ok)
        assert.matches(r[2], err, 1, true)
        assert.is_false(b:poll(0)) -- nothing half-sent
        a:close()
        b:close()
      end)
    end

    it("in results, as the child's error", function()
      local p = process.Process{target = function() return 1, {io.stderr} end}
      local _, err = H.script([[
        local process = require "process"
        local p = process.Process{target = function() return 1, {io.stderr} end}
        p:start()
        print(p:join(), p.error)
      ]])
      assert.matches("^Process Process%-1:\nresult%[2%]%[1%]: cannot send a userdata\n", err)
      p:start()
      assert.equal(1, p:join())
      assert.equal("result[2][1]: cannot send a userdata", p.error)
      assert.has_error(function() p:result() end, "result[2][1]: cannot send a userdata")
    end)
  end)

  describe("decoding bad bytes", function()
    local bad = {
      {"", "connection closed"},
      {"\1\2\3", "codec:"},
      {"\xD1", "codec:"},
      {"\xD1\x05\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "codec:"},
      {"\xD1\x06\1\0\0\0\0\0\0\0", "codec:"},
      {"\xD1\x80\x80", "codec:"},
    }
    for _, c in ipairs(bad) do
      it(("gives a clear error for %q"):format(c[1]), function()
        local a, b = process.Pipe()
        if c[1] == "" then a:close() else a:send_bytes(c[1]) end
        local ok, err = pcall(b.recv, b)
        assert.is_false(ok)
        assert.matches(c[2], err, 1, true)
        a:close()
        b:close()
      end)
    end
  end)
end)
