#!/bin/sh
# curl + openssl: sign a body and call WhoAmI.
set -eu
URL="${KEYWARD_URL:-http://127.0.0.1:8080}"
BODY="{\"timestamp\":$(date +%s)000}"
SIGNATURE=$(printf '%s' "$BODY" | openssl dgst -sha512 -hmac "$KEYWARD_SECRET_KEY" | sed 's/^.*= //')
curl -sS --fail-with-body "$URL/api/v1/PartnerP2P/WhoAmI" \
  -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $KEYWARD_PUBLIC_KEY" \
  -d "${BODY%\}},\"signature\":\"$SIGNATURE\"}"
echo
