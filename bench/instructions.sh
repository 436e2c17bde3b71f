#!/usr/bin/env bash
# The hot path's instruction count (issue 24): `crates/keyward/examples/hot_path.rs` (500 ×
# /healthz and 500 × signed WhoAmI through the whole public router) under valgrind's callgrind,
# counting only the measured mix. Fails when the count is more than KEYWARD_INSTRUCTIONS_SLACK
# percent (default 3) above bench/instructions.baseline; says so when it is well below (a gain:
# write the new count into the baseline). Deterministic where wall-clock time on a shared
# 2-core machine is not. Used by .ci/run; `--update` writes the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
slack="${KEYWARD_INSTRUCTIONS_SLACK:-3}"
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 2; }
cargo build --release --quiet --example hot_path
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --toggle-collect='*measured_mix*' --callgrind-out-file="$out/callgrind.out" \
  target/release/examples/hot_path >"$out/log" 2>&1 || { cat "$out/log" >&2; exit 2; }
count=$(awk '/^summary:/ {print $2}' "$out/callgrind.out")
[ -n "$count" ] && [ "$count" -gt 0 ] || { echo "callgrind counted nothing: is measured_mix inlined?" >&2; exit 2; }
per_request=$((count / 1000))
if [ "${1:-}" = "--update" ]; then
  echo "$count" > bench/instructions.baseline
  echo "baseline written: $count instructions ($per_request per request)"
  exit 0
fi
baseline=$(cat bench/instructions.baseline)
change=$(python3 -c "print(f'{($count - $baseline) * 100 / $baseline:+.2f}')")
echo "hot path: $count instructions ($per_request per request); baseline $baseline; change $change%"
if python3 -c "import sys; sys.exit(0 if $count > $baseline * (1 + $slack / 100) else 1)"; then
  echo "the hot path costs more than $slack% over the baseline: find out why (bench/profile.sh), or, if the cost is meant, run bench/instructions.sh --update and say why in the commit" >&2
  exit 1
fi
if python3 -c "import sys; sys.exit(0 if $count < $baseline * (1 - 2 * $slack / 100) else 1)"; then
  echo "well below the baseline: a gain. Run bench/instructions.sh --update to keep it."
fi
