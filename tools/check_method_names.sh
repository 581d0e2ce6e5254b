#!/bin/sh
# check_method_names.sh - no code outside src/start/ asks which start
# method it is (issue 14): a start method is a whole strategy behind
# struct lmp_method (src/start/method.h), and everything else asks the
# table (copies_caller, become, the child's ops), never the name.
#
# Flags, in src/ (but src/start/) and lua/:
#  - a comparison with a method's name: strcmp(x, "fork"), x == "spawn",
#    "forkserver" ~= x, ... (C and Lua);
#  - a method's table named directly (&lmp_method_fork...): only the
#    registry (src/start/registry.c) and the methods' own files do that.
# Usage: check_method_names.sh [SOURCE_ROOT]; exit 1 with the lines found.
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
names='(fork|spawn|forkserver)'
q="[\"']"
files=$(find src lua -type f \( -name '*.c' -o -name '*.h' -o -name '*.lua' \) ! -path 'src/start/*' | sort)
[ -n "$files" ] || { echo "check_method_names: no sources under $root" >&2; exit 2; }
found=$(grep -nE \
  -e "strn?cmp\([^;]*\"$names\"" \
  -e "[=~!]=[[:space:]]*$q$names$q" \
  -e "$q$names$q[[:space:]]*[=~!]=" \
  -e "lmp_method_$names\b" \
  $files)
if [ -n "$found" ]; then
  echo "a start method tested by name outside src/start/ (ask struct lmp_method instead):"
  echo "$found"
  exit 1
fi
echo "ok: no start method named outside src/start/ ($(echo "$files" | wc -l) files)"
