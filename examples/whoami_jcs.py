# Python, RFC 8785 (JCS) form: sign the members sorted; send them in any order.
import hashlib, hmac, json, os, time, urllib.request

url = os.environ.get("KEYWARD_URL", "http://127.0.0.1:8080")
public_key = os.environ["KEYWARD_PUBLIC_KEY"]
secret_key = os.environ["KEYWARD_SECRET_KEY"]

body = {"timestamp": int(time.time() * 1000), "order": {"id": "A-1", "amount": "150.00"}, "note": "Zoë"}
# sort_keys + no spaces + raw UTF-8 is RFC 8785 for strings, integers and ASCII member names.
message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
body["signature"] = hmac.new(secret_key.encode(), message.encode(), hashlib.sha512).hexdigest()

request = urllib.request.Request(
    f"{url}/api/v1/PartnerP2P/WhoAmI",
    data=json.dumps(body, ensure_ascii=False).encode(),  # any order, any spacing
    headers={"Content-Type": "application/json", "Authorization": f"Bearer {public_key}"},
)
with urllib.request.urlopen(request) as response:
    print(response.status, response.read().decode())
