# Python: sign a body with hmac + hashlib and call WhoAmI (standard library only).
import hashlib, hmac, json, os, time, urllib.request

url = os.environ.get("KEYWARD_URL", "http://127.0.0.1:8080")
public_key = os.environ["KEYWARD_PUBLIC_KEY"]
secret_key = os.environ["KEYWARD_SECRET_KEY"]

body = {"timestamp": int(time.time() * 1000), "note": "Zoë"}
# Like JSON.stringify: no spaces, non-ASCII raw. (sort_keys=True gives the RFC 8785 form for
# bodies of strings and integers up to 2^53; larger integers and floats are written differently
# by Python and JavaScript, so send such values as strings. Either form is accepted.)
message = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
body["signature"] = hmac.new(secret_key.encode(), message.encode(), hashlib.sha512).hexdigest()

request = urllib.request.Request(
    f"{url}/api/v1/PartnerP2P/WhoAmI",
    data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
    headers={"Content-Type": "application/json", "Authorization": f"Bearer {public_key}"},
)
with urllib.request.urlopen(request) as response:  # raises on 4xx/5xx
    print(response.status, response.read().decode())
