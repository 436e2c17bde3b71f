#!/usr/bin/env bash
# Where a request's time goes: `perf record` (software cpu-clock sampling, which works where
# the machine exposes no hardware counters) on a release `keyward serve` while wrk drives
# /healthz, then a signed WhoAmI. Prints the top functions by self time and the share of the
# samples in broad groups (the route's own work, the HTTP stack, tracing, metrics, the
# allocator, the kernel). Issue 24's first step: measure before changing. Last, where WhoAmI's
# tail comes from: wrk's latency percentiles beside `perf sched`'s view of the same seconds (how
# long keyward's threads and wrk waited, runnable, for a core).
#   bench/profile.sh            # BENCH_SECONDS (10), BENCH_CONNECTIONS (64)
# Needs wrk and perf (apt-get install wrk linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin keyward
binary=target/release/keyward
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# The gateway's upstream: nginx answering a constant.
upstream_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$data/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $data/nginx.pid; error_log $data/nginx.err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $data; proxy_temp_path $data; fastcgi_temp_path $data;
  uwsgi_temp_path $data; scgi_temp_path $data;
  server { listen 127.0.0.1:$upstream_port; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NGINX
nginx -c "$data/nginx.conf" &
upstream=$!
KEYWARD_LISTEN="127.0.0.1:$port" KEYWARD_INTERNAL_LISTEN=off KEYWARD_DATA_DIR="$data" KEYWARD_LOG=warn \
  KEYWARD_UPSTREAM_URL="http://127.0.0.1:$upstream_port" KEYWARD_IP_RATE_LIMIT_PER_MINUTE=100000000 \
  "$binary" serve &
server=$!
trap 'kill $server $upstream 2>/dev/null; wait $server $upstream 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "$url/api/v1/no-auth/PartnerP2P/OnboardPartner" -H 'Content-Type: application/json' \
  -d '{"partner_code":"PROFILE","email":"profile@example.com"}' >/dev/null
for _ in $(seq 1 50); do ls "$data"/mailbox/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
link=$(grep -ho "$url/link/[A-Za-z0-9_-]*" "$data"/mailbox/*.eml | head -n 1)
"$binary" redeem "$link" --partner-code PROFILE --out "$data/credentials.json" >/dev/null
public=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["public_key"])' "$data/credentials.json")
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$data/credentials.json" >"$data/sk"
body=$(echo '{"bench":true}' | "$binary" sign --secret-key-file "$data/sk")
seconds=${BENCH_SECONDS:-10}
connections=${BENCH_CONNECTIONS:-64}

profile() { # $1: name; the rest: the wrk command
  local name=$1; shift
  "$@" >/dev/null 2>&1 & local load=$!
  sleep 1
  perf record -q -e cpu-clock -F 2000 -g -p "$server" -o "$data/$name.data" -- sleep $((seconds - 2)) >/dev/null 2>&1
  wait $load || true
  perf report -q -i "$data/$name.data" --no-children --sort symbol --stdio -g none \
    >"$data/$name.report" 2>/dev/null || true
  grep -E '^ +[0-9]' "$data/$name.report" | head -n 400 >"$data/$name.txt" || true
  echo "### $name: top functions by self time"
  head -n 12 "$data/$name.txt" | sed -E "s/^ +/  /; s/ +-? +-? *$//"
  python3 - "$data/$name.txt" <<'PY'
import re, sys
groups = [
    ("kernel (sockets, syscalls, scheduling)", r"\[k\]"),
    ("allocator (mimalloc)", r"mi_|malloc|free|realloc"),
    ("tracing (spans, fields, subscriber)", r"tracing"),
    ("metrics (prometheus-client)", r"prometheus|Family|RawTable|hashbrown"),
    ("HTTP (hyper, tower, axum, http)", r"hyper|tower|axum|http::|h1::"),
    ("crypto (HMAC-SHA512, AES-GCM, SHA-256)", r"sha2|hmac|aes|gcm|Sha512|sha512|sha256"),
    ("JSON (keyward's parser, serde_json)", r"serde|json"),
    ("async runtime (tokio)", r"tokio"),
]
totals = {name: 0.0 for name, _ in groups}
other = 0.0
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9.]+)%\s+(.*)", line)
    if not m:
        continue
    share, symbol = float(m.group(1)), m.group(2)
    for name, pattern in groups:
        if re.search(pattern, symbol):
            totals[name] += share
            break
    else:
        other += share
print("  by group:", "; ".join(f"{name} {share:.0f}%" for name, share in totals.items()), f"; other {other:.0f}%")
PY
}
profile healthz wrk -t1 -c"$connections" -d"${seconds}s" "$url/healthz"
profile whoami env KEYWARD_PUBLIC_KEY="$public" KEYWARD_BODY="$body" \
  wrk -t1 -c"$connections" -d"${seconds}s" -s bench/whoami.lua "$url/api/v1/PartnerP2P/WhoAmI"
profile gateway env KEYWARD_PUBLIC_KEY="$public" KEYWARD_BODY="$body" KEYWARD_METHOD=GET \
  wrk -t1 -c"$connections" -d"${seconds}s" -s bench/whoami.lua "$url/api/v1/PartnerP2P/Bench"

# The tail: wrk's percentiles (p99.9 and the worst too), and for the same seconds how long each
# thread waited for a core once runnable. A worker that waits milliseconds while its requests
# are in its queue, or holds the I/O driver, is a request that waits as long.
cat >"$data/tail.lua" <<'LUA'
dofile("bench/whoami.lua")
done = function(summary, latency, requests)
  local line = ""
  for _, p in ipairs({50, 90, 99, 99.9}) do
    line = line .. string.format(" p%s %.2f ms;", p, latency:percentile(p) / 1000)
  end
  io.write(string.format("  wrk:%s max %.2f ms\n", line, latency.max / 1000))
end
LUA
echo "### whoami: the tail, and the scheduler's delays over the same seconds"
KEYWARD_PUBLIC_KEY="$public" KEYWARD_BODY="$body" \
  wrk -t1 -c"$connections" -d"${seconds}s" -s "$data/tail.lua" "$url/api/v1/PartnerP2P/WhoAmI" \
  >"$data/tail.out" 2>&1 & load=$!
sleep 1
perf sched record -q -o "$data/sched.data" -- sleep $((seconds - 2)) >/dev/null 2>&1 || true
wait $load || true
grep '^  wrk:' "$data/tail.out" || true
# By thread name: every process's tokio workers on the machine count under one line.
perf sched latency -i "$data/sched.data" --sort max 2>/dev/null \
  | grep -E '^ +(tokio-rt-worker|wrk)' \
  | sed -E 's/ +\| +/ | /g; s/^ +/  /; s/ \| max start.*//' || true
