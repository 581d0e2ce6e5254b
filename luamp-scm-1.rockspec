-- luamp-scm-1.rockspec: `luarocks --lua-version=5.4 make` builds the
-- process module (process.so, with process.pi) and the luamp runner with
-- meson, into the rock's own directories.  Needs meson, ninja, a C
-- compiler and the Lua 5.4 headers (Debian: liblua5.4-dev).  The Lua
-- files (lua/process/*.lua, listed in meson.build) are compiled into both,
-- so the rock installs no .lua file (spec/rock_test.sh checks it).
rockspec_format = "3.0"
package = "luamp"
version = "scm-1"
source = {
  -- luamp has no public repository yet, so there is no honest URL to give.
  -- `luarocks make` (README "Install", spec/rock_test.sh) builds the working
  -- tree it runs in and never reads this.  `luarocks build`, `install`,
  -- `pack` and `upload` do fetch it: the name is under .invalid (RFC 2606),
  -- which never resolves, so they fail at the fetch rather than build
  -- something else.  Publishing the project means setting this to its git
  -- URL ("git+https://HOST/OWNER/luamp.git"; a release rockspec,
  -- luamp-X.Y.Z-1, adds tag = "vX.Y.Z").
  url = "git+https://example.invalid/luamp.git",
}
description = {
  summary = "Process parallelism for Lua 5.4 in the shape of Python's multiprocessing",
  detailed = [[
    A `process` module (Process, start methods fork/spawn/forkserver, Pipe,
    Queue, results decoded exactly, native pi kernels) written in C, and
    `luamp`, a runner shaped like `lua` with the module built in.
  ]],
  license = "MIT",
  labels = { "process", "multiprocessing", "parallel" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "command",
  -- process.so goes to the rock's $(LIBDIR) (deployed to the tree's
  -- lib/lua/5.4), the runner, with libluamp linked in, to $(BINDIR) (the
  -- tree's bin), where process.so finds it for spawn and the forkserver.
  build_command = [[
    rm -rf build-rock &&
    meson setup build-rock --buildtype=release --prefix="$(PREFIX)" \
      --bindir="$(BINDIR)" --libdir="$(LIBDIR)" -Dlua_cmoddir="$(LIBDIR)" \
      -Dluarocks=true &&
    meson compile -C build-rock
  ]],
  install_command = [[meson install -C build-rock --no-rebuild --tags runtime]],
  copy_directories = { "doc" },
}
