-- luacheck (Debian lua-check) over lua/, spec/, examples/, bench/, tools/:
--   luacheck lua spec examples bench tools
-- CI runs it (.ci/run) and so does `meson test --suite lint`.
std = "lua54"
max_line_length = 120
-- `self` is often unused in methods; unused loop variables are named _
unused_args = false

files["spec/"] = { std = "+busted" }
-- examples/pi.lua and bench/run.lua read the runner's arg table
files["examples/"] = { read_globals = { "arg" } }
files["bench/"] = { read_globals = { "arg" }, max_line_length = 130 }
files["tools/"] = { read_globals = { "arg" } }
-- specs quote long messages and commands; a target often takes as
-- arguments the values it also sees as upvalues (fork sees the upvalue,
-- spawn gets the argument), so shadowing an upvalue is the idiom there
files["spec/"].max_line_length = false
files["spec/"].ignore = { "43." }
-- the fixture keeps a finalizer alive only to see it never runs in the child
files["spec/fixtures/no_rerun.lua"] = { ignore = { "231/guard" } }
-- the example shows what a child sees of its parent's globals
files["examples/start_methods.lua"] = { globals = { "GREETING" } }
