#!/bin/sh
# Onboarding -> email -> link -> keys -> signed WhoAmI -> regeneration -> old key rejected.
# Run it against `keyward serve` on its defaults; run it again: each run onboards a partner
# of its own (a fresh code and address), so the same server serves any number of runs.
set -eu
URL="${KEYWARD_URL:-http://127.0.0.1:8080}"
MAILBOX="${KEYWARD_DATA_DIR:-./keyward-data}/mailbox"
API="$URL/api/v1/no-auth/PartnerP2P"
RUN="$(date +%s)-$$"
CODE="ACME-$RUN"
EMAIL="ops-$RUN@acme.example"

# The link in the newest email to $EMAIL, once $1 emails reached that address.
link_in_email() {
  tries=0
  while [ "$(grep -l -s "$EMAIL" "$MAILBOX"/*.eml | wc -l)" -lt "$1" ]; do
    tries=$((tries + 1)); [ "$tries" -lt 50 ] || { echo "no email arrived" >&2; exit 1; }
    sleep 0.2
  done
  grep -o "$URL/link/[A-Za-z0-9_-]*" $(ls -t $(grep -l "$EMAIL" "$MAILBOX"/*.eml) | head -n 1) | head -n 1
}

# HMAC-SHA512 of a body, keyed with the secret key, in lower-case hex.
sign() { printf '%s' "$1" | openssl dgst -sha512 -hmac "$SECRET_KEY" | sed 's/^.*= //'; }

# 1. Onboard. The keys travel by email, behind a one-time link.
curl -sS --fail-with-body "$API/OnboardPartner" -H 'Content-Type: application/json' \
  -d "{\"partner_code\":\"$CODE\",\"email\":\"$EMAIL\"}"
echo
LINK=$(link_in_email 1)
echo "onboarding link: $LINK  (open it in a browser, or redeem it as below)"

# 2. Redeem the link: the keys are shown once.
CREDENTIALS=$(curl -sS --fail-with-body "$API/RedeemKeyLink" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${LINK##*/}\",\"partner_code\":\"$CODE\"}")
PUBLIC_KEY=$(echo "$CREDENTIALS" | grep -o 'pk_partner_[0-9A-Za-z]*')
SECRET_KEY=$(echo "$CREDENTIALS" | grep -o 'sk_partner_[0-9A-Za-z]*')
OLD_PUBLIC_KEY=$PUBLIC_KEY

# 3. A signed request: the body without `signature`, signed, then sent with it.
curl -sS --fail-with-body "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}"
echo

# 4. Regenerate: a link is emailed; the current keys work until it is used.
BODY="{\"email\":\"$EMAIL\",\"partner_code\":\"$CODE\"}"
curl -sS --fail-with-body "$API/GenKeysForPartner" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" \
  -d "{\"email\":\"$EMAIL\",\"partner_code\":\"$CODE\",\"signature\":\"$(sign "$BODY")\"}"
echo
LINK=$(link_in_email 2)
CREDENTIALS=$(curl -sS --fail-with-body "$API/RedeemKeyLink" -H 'Content-Type: application/json' \
  -d "{\"token\":\"${LINK##*/}\",\"partner_code\":\"$CODE\"}")
PUBLIC_KEY=$(echo "$CREDENTIALS" | grep -o 'pk_partner_[0-9A-Za-z]*')
SECRET_KEY=$(echo "$CREDENTIALS" | grep -o 'sk_partner_[0-9A-Za-z]*')
PARTNER_ID=$(echo "$CREDENTIALS" | grep -o '"partner_id":"[0-9a-f-]*"' | cut -d'"' -f4)

# 5. The old key is refused; the new pair works; the partner ID is the same.
curl -sS "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $OLD_PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}" | grep '"revoked_key"'
curl -sS --fail-with-body "$URL/api/v1/PartnerP2P/WhoAmI" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $PUBLIC_KEY" -d "{\"signature\":\"$(sign '{}')\"}"
echo

# 6. What you have now, and what to try next.
cat <<EOF

Partner $CODE ($EMAIL) is onboarded and its keys were regenerated once.
  partner ID  $PARTNER_ID
  public key  $PUBLIC_KEY
  secret key  $SECRET_KEY
Next:
  export KEYWARD_URL=$URL KEYWARD_PUBLIC_KEY=$PUBLIC_KEY KEYWARD_SECRET_KEY=$SECRET_KEY
  python3 examples/whoami.py    # or: node examples/whoami.mjs, sh examples/whoami.sh
  keyward whoami                # the partner commands read the same variables
  docs/partners.md tells partners how to sign; docs/integration.md puts keyward in front of
  your payment API.
EOF
