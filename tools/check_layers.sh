#!/bin/sh
# check_layers.sh [SRC]: the pure-C layers (src/core, src/start,
# src/kernels) must never include a Lua header, directly or through another
# header: each file is preprocessed without Lua's include directory and its
# dependency list searched for Lua's headers.  Prints TAP, one line per
# file; exit 1 when one includes Lua.
set -u
src=${1:-.}
cc=${CC:-cc}
n=0 failed=0
for f in "$src"/src/core/*.[ch] "$src"/src/start/*.[ch] "$src"/src/kernels/*.[ch]; do
  n=$((n + 1))
  rel=${f#"$src"/}
  # ${BUILD_INC}: where generated headers (errnames.h) are, if any
  if deps=$("$cc" -std=c11 -D_GNU_SOURCE -I"$src/src" ${BUILD_INC:+-I"$BUILD_INC"} -M -x c "$f" 2>&1) &&
     ! printf '%s\n' "$deps" | tr ' ' '\n' | grep -Eq '(^|/)(lua|lauxlib|lualib|luaconf|luamp)\.h$|(^|/)src/(lua|codec)/'; then
    echo "ok $n - $rel includes no Lua header"
  else
    echo "not ok $n - $rel includes a Lua header (or does not preprocess alone)"
    printf '%s\n' "$deps" | tr ' ' '\n' | grep -E 'lua|error' | sed 's/^/# /'
    failed=1
  fi
done
echo "1..$n"
exit $failed
