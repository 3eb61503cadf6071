#!/usr/bin/env bash
# Which of the crate's top-level modules (src/<module>.rs or src/<module>/) refer to which,
# by the `crate::<module>` paths in their code (comments left out), one line a module; then
# whether the configuration is on a cycle. Configuration builds the components' ready
# settings, so it may refer to them, but nothing it refers to may lead back to it.
#
#   scripts/module-graph.sh          the working tree
#   scripts/module-graph.sh REV      the tree of a commit (main, HEAD~1, ...)
#
# Exits 1 when `config` is on a cycle, naming the modules on it.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-}

files() {
  if [ -n "$rev" ]; then git ls-tree -r --name-only "$rev" -- src | grep '\.rs$'
  else git ls-files --cached --others --exclude-standard -- 'src/*.rs'; fi
}
text() { if [ -n "$rev" ]; then git show "$rev:$1"; else cat "$1"; fi; }

edges=$(
  files | while read -r file; do
    from=${file#src/}; from=${from%%/*}; from=${from%.rs}
    text "$file" | grep -v '^[[:space:]]*//' | grep -oE '\bcrate::[a-z_]+' | sed 's/^crate:://' |
      sort -u | while read -r to; do [ "$to" = "$from" ] || echo "$from $to"; done
  done | sort -u
)
echo "$edges" | awk '{out[$1] = out[$1] " " $2} END {for (m in out) print m " ->" out[m]}' | sort

# The modules reachable from $1 along the edges (column $2 to $3: forward or backward).
reach() {
  local seen=" " frontier=$1 next n m
  while [ -n "$frontier" ]; do
    next=
    for n in $frontier; do
      for m in $(echo "$edges" | awk -v n="$n" -v a="$2" -v b="$3" '$a == n {print $b}'); do
        case $seen in *" $m "*) ;; *) seen="$seen$m "; next="$next $m" ;; esac
      done
    done
    frontier=$next
  done
  echo "$seen"
}
cycle=
for m in $(reach config 1 2); do
  case " $(reach config 2 1) " in *" $m "*) [ "$m" = config ] || cycle="$cycle $m" ;; esac
done
if [ -n "$cycle" ]; then
  echo "config is on a cycle with:$cycle"
  exit 1
fi
echo "config is on no cycle; referred to by: $(echo "$edges" | awk '$2 == "config" {print $1}' | paste -sd" ")"
