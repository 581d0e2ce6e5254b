#!/usr/bin/env bash
# mpi_test.sh BUILD SRC spec|runner - process.mpi's tests, 4 ranks on one box.
#
#   spec    rank 0 of `mpiexec -n 4 lua5.4 -l process.mpi busted` runs
#           spec/mpi_spec.lua (the stock lua5.4 path); prints busted's TAP.
#   runner  the luamp runner's path, as TAP: a script that never touches
#           process.mpi, rank 0's error and os.exit with a task running,
#           examples/pi.lua --mpi against examples/pi.lua, and after every
#           job: no process of the job is left.
#
# The Open MPI settings below are for running as root in a container on a
# small machine (oversubscribed, shared memory only); they are test
# settings, not requirements of process.mpi.
set -u
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
mode=$3
cd "$src" || exit 1

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Oversubscribed ranks must not busy-wait inside MPI either.
export OMPI_MCA_mpi_yield_when_idle=1
export LUA_CPATH="$build/?.so;$build/src/mpi/?.so;;"
export LUAMP="$build/luamp" LUAMP_SRCDIR="$src" LUA="${LUA:-lua5.4}"
# Every process of our jobs carries this mark in its environment, so the
# leak check counts ours only (other jobs may run on the machine).
export LUAMP_MPI_TEST_MARK="mpi-test-$$-$RANDOM"
unset OMPI_COMM_WORLD_SIZE PMIX_RANK

marked() {
  local n=0 p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qx "LUAMP_MPI_TEST_MARK=$LUAMP_MPI_TEST_MARK"; then
      n=$((n + 1))
    fi
  done 2>/dev/null
  echo "$n"
}

# A job's processes may take a moment to be reaped after mpiexec returns.
left_after() {
  local i n
  for i in $(seq 1 50); do
    n=$(marked)
    [ "$n" = 0 ] && break
    sleep 0.1
  done
  echo "$n"
}

if [ "$mode" = spec ]; then
  timeout 200 mpiexec -n 4 "$LUA" -l process.mpi "$(command -v busted)" -o TAP spec/mpi_spec.lua
  rc=$?
  n=$(left_after)
  if [ "$n" != 0 ]; then
    echo "# $n processes of the job left after it ended" >&2
    exit 1
  fi
  exit $rc
fi

t=0
fail=0
ok() {
  t=$((t + 1))
  if [ "$1" = 0 ]; then echo "ok $t - $2"; else echo "not ok $t - $2"; fail=1; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # run NRANKS SECONDS script args... -> $out, $rc
  timeout "$2" mpiexec -n "$1" "$build/luamp" -l process.mpi "${@:3}" > "$tmp/out" 2> "$tmp/err"
  rc=$?
  out=$(cat "$tmp/out")
}

cat > "$tmp/plain.lua" <<'EOF'
print("plain", arg[1], mpi ~= nil)
EOF
run 4 60 "$tmp/plain.lua" x
[ "$rc" = 0 ] && [ "$out" = "plain	x	true" ]
ok $? "a script that never uses process.mpi runs once, on rank 0 (rc=$rc)"
ok "$(left_after)" "no process left after it"

cat > "$tmp/fail.lua" <<'EOF'
local pool = mpi.Pool()
local r = pool:apply_async(function() require("process").wait({}, 60) end)
error("rank 0 fails")
EOF
start=$(date +%s)
run 4 60 "$tmp/fail.lua"
[ "$rc" = 1 ] && [ $(( $(date +%s) - start )) -le 30 ]
ok $? "rank 0's uncaught error ends the job with 1, a running task ended (rc=$rc)"
grep -q "rank 0 fails" "$tmp/err"
ok $? "its message is printed"
ok "$(left_after)" "no process left after it"

cat > "$tmp/exit.lua" <<'EOF'
local pool = mpi.Pool()
for i = 1, 3 do pool:apply_async(function() require("process").wait({}, 60) end) end
io.stdout:write("leaving\n")
os.exit(5)
EOF
start=$(date +%s)
run 4 60 "$tmp/exit.lua"
[ "$rc" = 5 ] && [ $(( $(date +%s) - start )) -le 30 ]
ok $? "os.exit(5) on rank 0 ends the job with 5, running tasks ended (rc=$rc)"
ok "$(left_after)" "no process left after it"

cat > "$tmp/rankdies.lua" <<'EOF'
local process = require "process"
local pool = mpi.Pool()
pool:apply(function() os.execute("kill -9 " .. process.parent_process().pid) process.wait({}, 60) end)
print("not reached")
EOF
start=$(date +%s)
run 3 60 "$tmp/rankdies.lua"
[ "$rc" != 0 ] && [ "$rc" != 124 ] && [ $(( $(date +%s) - start )) -le 30 ] && ! grep -q "not reached" "$tmp/out"
ok $? "a whole rank that dies aborts the job (rc=$rc)"
ok "$(left_after)" "no process left after it"

cat > "$tmp/work.lua" <<'EOF'
local pool <close> = mpi.Pool()
local r = pool:map(function(x) return x + 1 end, {1, 2, 3, 4, 5, 6})
print(table.concat(r, ","), mpi.rank(), mpi.size())
EOF
run 3 60 "$tmp/work.lua"
[ "$rc" = 0 ] && [ "$out" = "2,3,4,5,6,7	0	3" ]
ok $? "the luamp runner: a Pool over 2 serving ranks (rc=$rc)"
ok "$(left_after)" "no process left after it"

# the README's commands, from the source tree with no LUA_CPATH: the
# build tree's runner finds the tree's process.mpi by itself, and
# `meson devenv` gives a stock lua5.4 both modules
(unset LUA_CPATH; timeout 60 mpiexec -n 3 "$build/luamp" -l process.mpi "$tmp/work.lua" > "$tmp/out" 2> "$tmp/err")
rc=$?
[ "$rc" = 0 ] && [ "$(cat "$tmp/out")" = "2,3,4,5,6,7	0	3" ]
ok $? "the build tree's runner finds process.mpi without LUA_CPATH (rc=$rc)"
ok "$(left_after)" "no process left after it"
if command -v meson > /dev/null 2>&1; then
  (unset LUA_CPATH; timeout 60 meson devenv -C "$build" mpiexec -n 3 "$LUA" -l mpi=process.mpi "$tmp/work.lua" > "$tmp/out" 2> "$tmp/err")
  rc=$?
  [ "$rc" = 0 ] && [ "$(cat "$tmp/out")" = "2,3,4,5,6,7	0	3" ]
  ok $? "meson devenv: a stock lua5.4 -l mpi=process.mpi finds both modules (rc=$rc)"
  ok "$(left_after)" "no process left after it"
fi

# the same table as examples/pi.lua: same estimates to the last digit
run 3 120 examples/pi.lua --mpi --terms 20000000 --procs 1,2,3
mpi_rows=$(printf '%s\n' "$out" | awk 'NR > 2 { print $1, $2, $5, $6 }')
local_rows=$("$build/luamp" examples/pi.lua --terms 20000000 --procs 1,2,3 | awk 'NR > 2 { print $1, $2, $5, $6 }')
[ "$rc" = 0 ]
ok $? "examples/pi.lua --mpi runs (rc=$rc)"
[ -n "$mpi_rows" ] && [ "$mpi_rows" = "$local_rows" ]
ok $? "it prints the rows of the local run (terms, processes, estimate, error)"
[ "$(printf '%s\n' "$out" | sed -n 2p)" = "$("$build/luamp" examples/pi.lua --terms 1000 --procs 1 | sed -n 2p)" ]
ok $? "under the same header"
ok "$(left_after)" "no process left after it"

echo "1..$t"
exit $fail
