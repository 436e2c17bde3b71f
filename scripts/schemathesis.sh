#!/usr/bin/env bash
# Runs schemathesis against a fresh `keyward serve`: no 5xx, and every response (status,
# content type, headers, body) matches the OpenAPI documents: /openapi.json on the public
# listener, /internal/openapi.json on the internal one (with a service token). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${KEYWARD_BIN:-target/debug/keyward}"
data=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
internal=$(free_port)
export KEYWARD_DATA_DIR="$data"
# A high per-IP limit, so that the fuzzer reaches the logic behind the rate limit.
KEYWARD_LISTEN="127.0.0.1:$port" KEYWARD_INTERNAL_LISTEN="127.0.0.1:$internal" \
  KEYWARD_IP_RATE_LIMIT_PER_MINUTE=1000000 \
  KEYWARD_GITHUB_SECRET_SCANNING=on KEYWARD_GITHUB_KEYS_URL="http://127.0.0.1:9/keys" "$binary" serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
schemathesis run "http://127.0.0.1:$port/openapi.json" --checks "$checks" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" --seed 1 --no-color

token=$("$binary" service-token create schemathesis)
schemathesis run "http://127.0.0.1:$internal/internal/openapi.json" --checks "$checks" \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" --seed 1 --no-color
