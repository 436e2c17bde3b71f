#!/usr/bin/env bash
# The WhoAmI hot path under load: signed requests per second, latency, and the server's memory.
# Reproducible: a release build, a fresh data folder, one partner, wrk on loopback.
#   bench/run.sh                      # SQLite (the default)
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/run.sh
# Knobs: BENCH_SECONDS (10), BENCH_CONNECTIONS (32), BENCH_THREADS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench/run.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin keyward
binary=target/release/keyward
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
env=(KEYWARD_LISTEN="127.0.0.1:$port" KEYWARD_DATA_DIR="$data" KEYWARD_LOG=warn)
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  db="keyward_bench_$$"
  psql "$BENCH_DATABASE_URL" -qc "CREATE DATABASE $db"
  env+=(KEYWARD_DATABASE_URL="${BENCH_DATABASE_URL%/*}/$db")
fi
env "${env[@]}" "$binary" serve &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  [ -n "${db:-}" ] && psql "$BENCH_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.2; done

# One partner, through the real flow.
curl -sf "$url/api/v1/no-auth/PartnerP2P/OnboardPartner" -H 'Content-Type: application/json' \
  -d '{"partner_code":"BENCH","email":"bench@example.com"}' >/dev/null
for _ in $(seq 1 50); do ls "$data"/mailbox/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
link=$(grep -ho "$url/link/[A-Za-z0-9_-]*" "$data"/mailbox/*.eml | head -n 1)
"$binary" redeem "$link" --partner-code BENCH --out "$data/credentials.json" >/dev/null
public=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["public_key"])' "$data/credentials.json")
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$data/credentials.json" >"$data/sk"
body=$(echo '{"bench":true}' | "$binary" sign --secret-key-file "$data/sk")

rss() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$server/status"; }
echo "backend: ${BENCH_DATABASE_URL:+PostgreSQL}${BENCH_DATABASE_URL:-SQLite}; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "server RSS before: $(rss) KiB"
# Warm up, then measure.
KEYWARD_PUBLIC_KEY=$public KEYWARD_BODY=$body wrk -t1 -c8 -d2s -s bench/whoami.lua "$url/api/v1/PartnerP2P/WhoAmI" >/dev/null
KEYWARD_PUBLIC_KEY=$public KEYWARD_BODY=$body wrk -t"${BENCH_THREADS:-1}" -c"${BENCH_CONNECTIONS:-32}" \
  -d"${BENCH_SECONDS:-10}s" --latency -s bench/whoami.lua "$url/api/v1/PartnerP2P/WhoAmI"
echo "server RSS after: $(rss) KiB (peak $(hwm) KiB)"
