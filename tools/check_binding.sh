#!/bin/sh
# check_binding.sh [SRC]: the Lua binding (src/lua) is cut by object, so
#  1. each header X.h declares only functions and data its own X.c
#     defines (a header without an X.c, lembed.h, declares what is
#     generated at build time: no src/lua/*.c may define it); and
#  2. no cycle among its files: X depends on Y when X.c or X.h includes
#     Y.h, or X.c uses a name that Y.c defines and some header declares; the
#     graph must sort (tsort reports a loop otherwise).
# Prints TAP, one line per header and one for the graph; exit 1 on a
# foreign declaration or a cycle.
set -u
src=${1:-.}
dir="$src/src/lua"
n=0 failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_binding.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# the names a header declares at file scope: a name followed by "(" or
# "[" on a line that starts with a type (or extern)
declared() {
  grep -E '^(extern[[:space:]]+)?(const[[:space:]]+)?[A-Za-z_][A-Za-z0-9_]*[[:space:]*]+[A-Za-z_][A-Za-z0-9_]*[[:space:]]*(\(|\[)' "$1" |
    grep -Ev '^(typedef|static|#|return)' |
    sed -E 's/^[^(\[]*[[:space:]*]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*[(\[].*/\1/' | sort -u
}
# whether file $2 defines name $1 (a function: its line does not end with
# ";"; data: "name[] =" or "name =")
defines() {
  grep -E "^[A-Za-z_].*[[:space:]*]$1[[:space:]]*(\(|\[\][[:space:]]*=|[[:space:]]=)" "$2" | grep -Eqv ';[[:space:]]*$|^static' && return 0
  grep -Eq "^[A-Za-z_].*[[:space:]*]$1[[:space:]]*(\[\][[:space:]]*=|=)" "$2"
}

# 1. each header's names, defined by its own file
: >"$tmp/edges"
for h in "$dir"/*.h; do
  x=$(basename "$h" .h)
  c="$dir/$x.c"
  n=$((n + 1))
  names=$(declared "$h")
  bad=""
  for name in $names; do
    if [ -f "$c" ]; then
      defines "$name" "$c" || bad="$bad $name"
    else
      for o in "$dir"/*.c; do
        defines "$name" "$o" && bad="$bad $name(in $(basename "$o"))"
      done
    fi
  done
  if [ -z "$bad" ]; then
    echo "ok $n - src/lua/$x.h declares only what $([ -f "$c" ] && echo "$x.c defines" || echo "the build generates") ($(echo $names | wc -w) names)"
  else
    echo "not ok $n - src/lua/$x.h declares what $x.c does not define:$bad"
    failed=1
  fi
done

# 2. the dependency graph: includes, and uses of names defined elsewhere
# (the owner of a declared name is the file that defines it)
: >"$tmp/owners"
for h in "$dir"/*.h; do
  x=$(basename "$h" .h)
  for name in $(declared "$h"); do
    if [ -f "$dir/$x.c" ] && defines "$name" "$dir/$x.c"; then
      echo "$name $x" >>"$tmp/owners"
      continue
    fi
    for o in "$dir"/*.c; do
      defines "$name" "$o" && echo "$name $(basename "$o" .c)" >>"$tmp/owners"
    done
  done
done
cut -d' ' -f1 "$tmp/owners" >"$tmp/names"
for f in "$dir"/*.[ch]; do
  x=$(basename "$f"); x=${x%.*}
  echo "$x $x" >>"$tmp/edges"
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([A-Za-z0-9_]*\)\.h".*/\1/p' "$f" |
  while read -r y; do
    [ "$y" != "$x" ] && [ -f "$dir/$y.h" ] && echo "$x $y" >>"$tmp/edges"
  done
done
for f in "$dir"/*.c; do
  x=$(basename "$f" .c)
  grep -owF -f "$tmp/names" "$f" | sort -u | while read -r name; do
    awk -v n="$name" -v x="$x" '$1 == n && $2 != x { print x, $2 }' "$tmp/owners"
  done >>"$tmp/edges"
done
n=$((n + 1))
if tsort "$tmp/edges" >/dev/null 2>"$tmp/loop" && [ ! -s "$tmp/loop" ]; then
  echo "ok $n - no cycle among src/lua files ($(sort -u "$tmp/edges" | awk '$1 != $2' | wc -l) dependencies)"
else
  echo "not ok $n - a cycle among src/lua files"
  sed 's/^/# /' "$tmp/loop"
  failed=1
fi
echo "1..$n"
exit $failed
