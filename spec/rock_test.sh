#!/bin/sh
# rock_test.sh SRC: `luarocks --lua-version=5.4 make` of luamp-scm-1.rockspec
# into a temporary tree, from a copy of the source tree, then use the rock
# the way a Lua user does: require "process" from a stock lua5.4 with the
# tree's paths, and a spawn start whose child must be the rock's runner.
# Prints TAP; skips when luarocks is not installed.
set -u
src=$1
if ! command -v luarocks >/dev/null 2>&1; then
  echo "1..0 # SKIP luarocks is not installed"
  exit 0
fi
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
n=0 failed=0
check() { # check DESCRIPTION COMMAND...
  n=$((n + 1)); desc=$1; shift
  if out=$("$@" 2>&1); then echo "ok $n - $desc"
  else echo "not ok $n - $desc"; echo "$out" | tail -n 30 | sed 's/^/# /'; failed=1; fi
}
mkdir "$d/src"
# a copy without build directories, so the rock builds from scratch
(cd "$src" && tar --exclude='./build*' --exclude='./.git' -cf - .) | tar -C "$d/src" -xf -
rocks() { luarocks --lua-version=5.4 --tree="$d/tree" "$@"; }
# source.url is a placeholder (no public repository): make must not need
# it, so where a network namespace can be had it runs without a network
offline="" how="without a network"
if unshare -rn true 2>/dev/null; then offline="unshare -rn"; else how="(network not cut: no unshare)"; fi
check "luarocks make builds and installs the rock into a temporary tree, $how" \
  sh -c "cd '$d/src' && HOME='$d' $offline luarocks --lua-version=5.4 --tree='$d/tree' make luamp-scm-1.rockspec"
check "luarocks lint accepts the rockspec" sh -c "cd '$d/src' && HOME='$d' luarocks --lua-version=5.4 lint luamp-scm-1.rockspec"
check "the rock is listed" sh -c "HOME='$d' luarocks --lua-version=5.4 --tree='$d/tree' list --porcelain | grep -q '^luamp	scm-1	installed'"
check "process.so in the tree's lib/lua/5.4, the runner in its bin" \
  test -f "$d/tree/lib/lua/5.4/process.so" -a -x "$d/tree/bin/luamp"
paths=$(HOME="$d" rocks path)
# the Lua half (lua/process/*.lua) is compiled into process.so and the
# runner: the rock holds no .lua file, so none can stand in for a file
# left out of the embedding
check "no Lua source in the tree: the module's Lua files are compiled in" \
  sh -c "test -z \"\$(find '$d/tree' -name '*.lua')\""
check "a stock lua5.4 with the tree's paths requires process and process.pi" \
  sh -c "$paths
    cd / && lua5.4 -e '
      local process = require \"process\"
      assert(package.searchpath(\"process\", package.cpath):find(\"$d/tree/\", 1, true) == 1)
      assert(require(\"process.pi\").leibniz(1, 1) == 1)
      assert(process._VERSION:match(\"^luamp \"))'"
check "a spawn start runs the rock's runner" \
  sh -c "$paths
    cd / && lua5.4 -e '
      local process = require \"process\"
      local exe = require(\"process.internal\").get_executable()
      assert(exe == \"$d/tree/bin/luamp\", exe)
      local p = process.get_context(\"spawn\").Process{target = function(a) return a + 1 end, args = {41}}
      assert(p:start()):join()
      assert(p:result() == 42, p.error)'"
# process.mpi, when the rock's build found an MPI: in the tree beside
# process.so (-Dlua_cmoddir), so require finds it with the tree's paths
# (MPI initialises as a singleton: one rank, no mpiexec)
if [ -f "$d/src/build-rock/src/mpi/process/mpi.so" ]; then
  check "process/mpi.so in the tree's lib/lua/5.4, beside process.so" \
    test -f "$d/tree/lib/lua/5.4/process/mpi.so"
  check "a stock lua5.4 with the tree's paths requires process.mpi" \
    sh -c "$paths
      cd / && lua5.4 -e '
        local m = require \"process.mpi\"
        assert(package.searchpath(\"process.mpi\", package.cpath) == \"$d/tree/lib/lua/5.4/process/mpi.so\")
        assert(m.rank() == 0 and m.size() == 1)'"
fi
check "the rock's runner runs a script" sh -c "'$d/tree/bin/luamp' -e 'print(require(\"process\").cpu_count())' | grep -q '^[0-9]'"
check "luarocks remove takes it all away" \
  sh -c "HOME='$d' luarocks --lua-version=5.4 --tree='$d/tree' remove luamp && test ! -e '$d/tree/lib/lua/5.4/process.so' -a ! -e '$d/tree/lib/lua/5.4/process/mpi.so' -a ! -e '$d/tree/bin/luamp'"
echo "1..$n"
exit $failed
