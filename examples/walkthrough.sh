#!/bin/sh
# Onboarding -> email -> link -> keys -> signed WhoAmI -> regeneration -> old key rejected.
# Run it against `keyward serve` on its defaults, with a fresh ./keyward-data.
set -eu
URL="${KEYWARD_URL:-http://127.0.0.1:8080}"
MAILBOX="${KEYWARD_DATA_DIR:-./keyward-data}/mailbox"
API="$URL/api/v1/no-auth/PartnerP2P"

# The link in the newest email, once the mailbox holds $1 emails.
link_in_email() {
  tries=0
  while [ "$(ls "$MAILBOX" | wc -l)" -lt "$1" ]; do
    tries=$((tries + 1)); [ "$tries" -lt 50 ] || { echo "no email arrived" >&2; exit 1; }
    sleep 0.2
  done
  grep -o "$URL/link/[A-Za-z0-9_-]*" "$(ls -t "$MAILBOX"/*.eml | head -n 1)" | head -n 1
}

# HMAC-SHA512 of a body, keyed with the secret key, in lower-case hex.
sign() { printf '%s' "$1" | openssl dgst -sha512 -hmac "$SECRET_KEY" | sed 's/^.*= //'; }

# 1. Onboard. The keys travel by email, behind a one-time link.
curl -sS --fail-with-body "$API/OnboardPartner" -H 'Content-Type: application/json' \
  -d '{"partner_code":"ACME","email":"ops@acme.example"}'
echo
LINK=$(link_in_email 1)
echo "onboarding link: $LINK  (open it in a browser, or redeem it as below)"

# 2. Redeem the link: the keys are shown once.
CREDENTIALS=$(curl -sS --fail-with-body "$API/RedeemKeyLink" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${LINK##*/}\",\"partner_code\":\"ACME\"}")
PUBLIC_KEY=$(echo "$CREDENTIALS" | grep -o 'pk_partner_[0-9A-Za-z]*')
SECRET_KEY=$(echo "$CREDENTIALS" | grep -o 'sk_partner_[0-9A-Za-z]*')
OLD_PUBLIC_KEY=$PUBLIC_KEY

# 3. A signed request: the body without `signature`, signed, then sent with it.
curl -sS --fail-with-body "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}"
echo

# 4. Regenerate: a link is emailed; the current keys work until it is used.
BODY='{"email":"ops@acme.example","partner_code":"ACME"}'
curl -sS --fail-with-body "$API/GenKeysForPartner" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" \
  -d "{\"email\":\"ops@acme.example\",\"partner_code\":\"ACME\",\"signature\":\"$(sign "$BODY")\"}"
echo
LINK=$(link_in_email 2)
CREDENTIALS=$(curl -sS --fail-with-body "$API/RedeemKeyLink" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${LINK##*/}\",\"partner_code\":\"ACME\"}")
PUBLIC_KEY=$(echo "$CREDENTIALS" | grep -o 'pk_partner_[0-9A-Za-z]*')
SECRET_KEY=$(echo "$CREDENTIALS" | grep -o 'sk_partner_[0-9A-Za-z]*')

# 5. The old key is refused; the new pair works; the partner ID is the same.
curl -sS "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $OLD_PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}" | grep '"revoked_key"'
curl -sS --fail-with-body "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}"
echo
