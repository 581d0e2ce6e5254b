-- The docs that ship: README.md and doc/API.md (installed as the API
-- reference) name every public function and method; LICENSE matches
-- meson.build's license; CHANGELOG.md has this version.  (Issue 10, item 21.)
local process = require "process"
local H = require "spec.helper"

local function read(path)
  local f = assert(io.open(H.srcdir .. "/" .. path, "rb"), path .. " is missing")
  local s = f:read("a")
  f:close()
  return s
end

local docs = { ["README.md"] = read("README.md"), ["doc/API.md"] = read("doc/API.md") }

-- every way a name may be written in the docs: `process.x`, `p:x(`, `q:x(`...
local function documented(text, forms)
  for _, form in ipairs(forms) do
    if text:find(form, 1, true) then return true end
  end
  return false
end

local function check_names(names, forms_of)
  for file, text in pairs(docs) do
    local missing = {}
    for _, name in ipairs(names) do
      if not documented(text, forms_of(name)) then missing[#missing + 1] = name end
    end
    table.sort(missing)
    assert.same({}, missing, file .. " does not document these (keep it in step with the other)")
  end
end

local function keys(t, filter)
  local list = {}
  for k, v in pairs(t) do
    if type(k) == "string" and (not filter or filter(k, v)) then list[#list + 1] = k end
  end
  return list
end

describe("README.md and doc/API.md", function()
  it("document every public member of the process module", function()
    -- internal names (process.internal's business) are the surface spec's
    local public = keys(process, function(k) return k:sub(1, 1) ~= "_" or k == "_VERSION" end)
    check_names(public, function(k)
      return { "process." .. k .. "(", "process." .. k .. "{", "process." .. k .. "`",
               "process." .. k .. " ", "`" .. k .. "(", "`" .. k .. "`" }
    end)
  end)

  it("document every method of Process objects", function()
    check_names(keys(process.Process, function(k, v) return type(v) == "function" and k:sub(1, 1) ~= "_" end),
      function(k) return { "p:" .. k .. "(", "Process:" .. k .. "(" } end)
  end)

  it("document every method of Connections and Queues", function()
    local a, b = process.Pipe()
    local q = process.Queue()
    local names = {}
    for _, o in ipairs{a, q} do
      local index = getmetatable(o).__index
      for _, k in ipairs(keys(index, function(k2, v) return type(v) == "function" and k2:sub(1, 1) ~= "_" end)) do
        names[#names + 1] = k
      end
    end
    check_names(names, function(k) return { "`" .. k .. "(", " " .. k .. "(" } end)
    a:close(); b:close(); q:close()
  end)

  it("document every member of process.pi", function()
    check_names(keys((require "process.pi"), function(k) return k:sub(1, 1) ~= "_" end),
      function(k) return { "pi." .. k } end)
  end)
end)

describe("LICENSE and CHANGELOG.md", function()
  local meson = read("meson.build")

  it("LICENSE is the license meson.build declares", function()
    local license = assert(meson:match("license:%s*'([^']+)'"))
    assert.equal("MIT", license)
    local text = read("LICENSE")
    assert.matches("^MIT License\n\nCopyright %(c%) %d+ the luamp authors\n", text)
  end)

  it("CHANGELOG.md has an Unreleased section and this version's", function()
    local version = assert(meson:match("version:%s*'([^']+)'"))
    local text = read("CHANGELOG.md")
    assert.truthy(text:find("\n## [Unreleased]\n", 1, true))
    assert.truthy(text:find("\n## [" .. version .. "] - ", 1, true))
  end)
end)

describe("the README's Quick start", function()
  -- the install line: the first line of the Quick start's code block
  local readme = docs["README.md"]
  local block = assert(readme:match("\n## Quick start\n.-\n```sh\n(.-)\n```"), "no Quick start block")
  local line = assert(block:match("^[^\n]*apt%-get install[^\n]*"), "no apt-get install line")
  local packages = {}
  for p in line:match("install(.*)$"):gmatch("%S+") do
    if p:sub(1, 1) ~= "-" then packages[#packages + 1] = p end
  end

  -- Run the line with only fake id, apt-get and (when given) sudo on PATH;
  -- returns the exit code and what the fakes were called with.
  local function run_as(uid, with_sudo)
    local dir = os.tmpname()
    os.remove(dir)
    assert(require("lfs").mkdir(dir))
    local function fake(name, body)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write("#!/bin/sh\n", body, "\n")
      f:close()
      os.execute("chmod +x " .. H.q(dir .. "/" .. name))
    end
    fake("id", "echo " .. uid)
    fake("apt-get", "echo \"apt-get $*\" >> " .. H.q(dir .. "/log"))
    if with_sudo then fake("sudo", "echo \"sudo\" >> " .. H.q(dir .. "/log") .. "; exec \"$@\"") end
    local _, _, code = H.run("PATH=" .. H.q(dir) .. " /bin/sh -c " .. H.q(line))
    local f = io.open(dir .. "/log")
    local log = f and f:read("a") or ""
    if f then f:close() end
    os.execute("rm -rf " .. H.q(dir))
    return code, log
  end

  it("works for root on a box without sudo", function()
    local code, log = run_as(0, false)
    assert.equal(0, code, line)
    assert.matches("^apt%-get install", log)
  end)

  it("goes through sudo for a user", function()
    local code, log = run_as(1000, true)
    assert.equal(0, code, line)
    assert.matches("^sudo\napt%-get install", log)
  end)

  it("installs what building and testing need", function()
    local have = {}
    for _, p in ipairs(packages) do have[p] = true end
    for _, need in ipairs{"gcc", "pkg-config", "meson", "ninja-build", "lua5.4", "liblua5.4-dev",
                          "lua-busted", "lua-cjson"} do
      assert.truthy(have[need], need .. " missing from: " .. line)
    end
  end)
end)
