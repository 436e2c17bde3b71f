#!/usr/bin/env bash
# The fault-injection suite in full: every fault of crates/keyward/tests/api/faults, longer
# than in CI (KEYWARD_FAULTS_SCALE, default 5: 50 kills, 15 SMTP stops, …), on SQLite and on
# two PostgreSQL nodes, one test at a time; prints the results table of docs/reliability.md.
#
#   bench/faults.sh                      # needs root (tmpfs, runuser), aiosmtpd, PostgreSQL
#   KEYWARD_FAULTS_SCALE=2 bench/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export KEYWARD_FAULTS_SCALE="${KEYWARD_FAULTS_SCALE:-5}"
export KEYWARD_STRICT_TESTS=1
postgres="${KEYWARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
log="$(mktemp)"
run() {
  cargo test --release -q -p keyward --test api -- faults:: --nocapture --test-threads=1 2>&1 | tee -a "$log" | grep -E '^(test |FAULT-RESULT)' || true
}
echo "scale ${KEYWARD_FAULTS_SCALE}: SQLite" >&2
run
echo "scale ${KEYWARD_FAULTS_SCALE}: PostgreSQL" >&2
KEYWARD_TEST_BACKEND=postgres KEYWARD_TEST_POSTGRES_URL="$postgres" run
echo
echo "| fault | store | answers | 200 | no answer (node down) | 503 unavailable | other 5xx | detail |"
echo "|---|---|---|---|---|---|---|---|"
grep '^FAULT-RESULT' "$log" | sort -u | while IFS='|' read -r _ fault store total ok none unavailable other detail; do
  echo "| $fault | $store | $total | $ok | $none | $unavailable | $other | $detail |"
done
if grep -q 'FAILED\|panicked' "$log"; then
  echo "some fault tests FAILED: see $log" >&2
  exit 1
fi
