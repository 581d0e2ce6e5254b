-- check_lua_requires.lua [SOURCE_ROOT] - the files of lua/process/
-- require one another one way (issue 14): no cycle among the requires a
-- file makes when it is loaded (those at its top level; a require inside
-- a function, made on first use, is not one), and every file the process
-- module loads with it begins with a comment saying what it owns and what
-- it must never do.  Prints TAP; exits 1 when a check fails.
local root = arg[1] or "."
local dir = root .. "/lua/process/"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The module names of lua/process/*.lua ("process" for init.lua).
local files = {}
local ls = assert(io.popen("ls " .. dir .. " 2>/dev/null"))
for name in ls:lines() do
  local base = name:match("^([%w_]+)%.lua$")
  if base then
    files[base == "init" and "process" or "process." .. base] = dir .. name
  end
end
ls:close()

local n, failed = 0, false
local function check(ok, desc, why)
  n = n + 1
  print((ok and "ok " or "not ok ") .. n .. " - " .. desc)
  if not ok then
    failed = true
    for line in tostring(why):gmatch("[^\n]+") do print("# " .. line) end
  end
end

check(files.process ~= nil, "lua/process/init.lua is there", "no " .. dir .. "init.lua")

-- Load-time requires: a line at column 0 (local x = require "m",
-- require("m").f(...)) naming a module that is a file here.
local requires, names = {}, {}
for mod, path in pairs(files) do
  names[#names + 1] = mod
  local deps = {}
  for line in read(path):gmatch("[^\n]*") do
    if not line:match("^%s") and not line:match("^%-%-") then
      for dep in line:gmatch("require%s*%(?%s*[\"']([%w_.]+)[\"']") do
        if files[dep] then deps[#deps + 1] = dep end
      end
    end
  end
  requires[mod] = deps
end
table.sort(names)

-- A cycle: depth-first, a module met again while on the path.
local cycle
do
  local state, path = {}, {}
  local function visit(mod)
    if state[mod] == "done" or cycle then return end
    if state[mod] == "open" then
      local from = #path
      while path[from] ~= mod do from = from - 1 end
      cycle = table.concat(path, " -> ", from) .. " -> " .. mod
      return
    end
    state[mod] = "open"
    path[#path + 1] = mod
    for _, dep in ipairs(requires[mod]) do visit(dep) end
    path[#path] = nil
    state[mod] = "done"
  end
  for _, mod in ipairs(names) do visit(mod) end
end
check(cycle == nil, "no cycle among the load-time requires of lua/process/*.lua (" .. #names .. " files)",
  cycle and "cycle: " .. cycle)

-- What the process module loads with it: init.lua and, transitively, its
-- load-time requires.  Each file's opening comment says what it must never do.
local loaded, order = {}, {}
local function gather(mod)
  if loaded[mod] then return end
  loaded[mod] = true
  order[#order + 1] = mod
  for _, dep in ipairs(requires[mod] or {}) do gather(dep) end
end
if files.process then gather("process") end
for _, mod in ipairs(order) do
  local head = {}
  for line in read(files[mod]):gmatch("[^\n]*") do
    if not line:match("^%-%-") then break end
    head[#head + 1] = line
  end
  head = table.concat(head, "\n")
  local short = files[mod]:sub(#root + 2)
  check(head:find("never", 1, true) ~= nil,
    short .. " opens with what it owns and what it must never do",
    short .. "'s opening comment says nothing it must never do")
end

print("1.." .. n)
os.exit(failed and 1 or 0)
