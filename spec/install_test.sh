#!/bin/sh
# install_test.sh BUILD SRC: `meson install` into a temporary destdir, then
# use what was installed the way users do: a host built with pkg-config,
# require "process" from a stock lua5.4, and the runner.  Prints TAP.
set -u
build=$1 src=$2
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
n=0 failed=0
check() { # check DESCRIPTION COMMAND...
  n=$((n + 1)); desc=$1; shift
  if out=$("$@" 2>&1); then echo "ok $n - $desc"
  else echo "not ok $n - $desc"; echo "$out" | sed 's/^/# /'; failed=1; fi
}
check "meson install --destdir" meson install -C "$build" --destdir "$d" --quiet --no-rebuild
pc=$(find "$d" -name luamp.pc | head -n 1)
lib=$(dirname "$(find "$d" -name 'libluamp.so' | head -n 1)")
mod=$(dirname "$(find "$d" -name process.so | head -n 1)")
check "luamp.pc, luamp.h, libluamp.so, process.so and the runner installed" \
  test -n "$pc" -a -n "$(find "$d" -name luamp.h)" -a -f "$lib/libluamp.so" -a -f "$mod/process.so" \
       -a -n "$(find "$d" -path '*/bin/luamp')"
docdir=$(dirname "$(find "$d" -path '*/share/doc/luamp/API.md' | head -n 1)")
check "the API reference, README, CHANGELOG and LICENSE in PREFIX/share/doc/luamp" \
  test -f "$docdir/API.md" -a -f "$docdir/README.md" -a -f "$docdir/CHANGELOG.md" -a -f "$docdir/LICENSE"
man=$(find "$d" -path '*/share/man/man1/luamp.1' | head -n 1)
check "the luamp(1) man page, with the version filled in" \
  sh -c "test -n '$man' && grep -q '^\.TH LUAMP 1 .*\"luamp [0-9][0-9.]*\"' '$man'"
check "process.so lands in PREFIX/lib/lua/5.4" sh -c "echo '$mod' | grep -q '/lib/lua/5.4\$'"
# the .pc file is relocatable (meson's pkgconfig.relocatable): used where it
# was staged, it names the staged include and lib directories.  (Not with
# pkg-config --define-prefix: that guesses PREFIX as two levels above the
# .pc file, wrong for Debian's lib/x86_64-linux-gnu.)
pcdir=$(dirname "$pc")
inc=$(dirname "$(find "$d" -name luamp.h | head -n 1)")
flags="$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs luamp)"
dirs_of() { # the -I and -L directories of the flags, resolved
  for f in $1; do
    case $f in -I*|-L*) realpath -m -- "${f#-?}" ;; esac
  done
}
staged_flags() {
  dirs=$(dirs_of "$flags")
  echo "$flags"
  echo "$dirs" | grep -qxF "$inc" && echo "$dirs" | grep -qxF "$lib" &&
    ! echo "$dirs" | grep -qx '/usr/local/.*'
}
check "the staged luamp.pc gives the staged -I and -L directories" staged_flags
check "a host builds with pkg-config" sh -c "cc '$src/examples/host.c' $flags -o '$d/host'"
check "the host runs" sh -c "LD_LIBRARY_PATH='$lib' '$d/host' 100000 | grep -q exact"
# the Lua half (lua/process/*.lua: init, errors, state, payload, child,
# proc, contexts, internal, the Pool's files, pi) is compiled into
# process.so and the runner: nothing .lua is installed, and no LUA_PATH
# may reach a source file (nolua), so a file left out of the embedding fails
nolua="LUA_PATH='$d/no-lua-path/?.lua'"
check "no Lua source installed: the module's Lua files are compiled in" \
  sh -c "test -z \"\$(find '$d' -name '*.lua')\""
check "a stock lua5.4 requires the installed module" \
  sh -c "$nolua LUA_CPATH='$mod/?.so' lua5.4 -e 'local p = require \"process\"; local pi = require \"process.pi\"; assert(pi.leibniz(1, 1) == 1)'"
check "a stock lua5.4 requires process.internal first, and gets the module's table" \
  sh -c "$nolua LUA_CPATH='$mod/?.so' lua5.4 -e 'local i = require \"process.internal\"; assert(type(i.child_main) == \"function\" and package.loaded.process and package.loaded[\"process.internal\"] == i)'"
check "the installed runner runs a script" \
  sh -c "$nolua LD_LIBRARY_PATH='$lib' \"\$(find '$d' -path '*/bin/luamp')\" -e 'print(require(\"process\").cpu_count())' | grep -q '^[0-9]'"
check "spawn from the installed module runs the installed runner" \
  sh -c "$nolua LD_LIBRARY_PATH='$lib' LUA_CPATH='$mod/?.so' lua5.4 -e '
    local process = require \"process\"
    local exe = require(\"process.internal\").get_executable()
    assert(exe:find(\"$d\", 1, true) == 1 and exe:match(\"/bin/luamp\$\"), exe)
    local p = process.get_context(\"spawn\").Process{target = function(a) return a + 1 end, args = {41}}
    assert(p:start()):join()
    assert(p:result() == 42, p.error)'"
# process.mpi, when this build has it: installed beside process.so (in
# process/ below the same directory, -Dlua_cmoddir or not), and found by a
# stock lua5.4 with that directory on LUA_CPATH (MPI initialises as a
# singleton: one rank, no mpiexec)
if [ -f "$build/src/mpi/process/mpi.so" ]; then
  check "process/mpi.so installed beside process.so" test -f "$mod/process/mpi.so"
  check "a stock lua5.4 requires the installed process.mpi" \
    sh -c "$nolua LD_LIBRARY_PATH='$lib' LUA_CPATH='$mod/?.so' lua5.4 -e '
      local m = require \"process.mpi\"
      assert(package.searchpath(\"process.mpi\", package.cpath) == \"$mod/process/mpi.so\")
      assert(m.rank() == 0 and m.size() == 1)'"
fi
echo "1..$n"
exit $failed
