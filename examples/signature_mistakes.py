# The five commonest signing mistakes, each sent as it fails and then fixed, with the
# server's message_sha256 compared with the hash of what was signed (standard library only).
import hashlib, hmac, json, os, time, urllib.error, urllib.request

url = os.environ.get("KEYWARD_URL", "http://127.0.0.1:8080")
public_key = os.environ["KEYWARD_PUBLIC_KEY"]
secret_key = os.environ["KEYWARD_SECRET_KEY"]


def compact(body):  # what JSON.stringify writes: no spaces, non-ASCII raw
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def send(signed_message, sent_text, key=secret_key):
    """Signs `signed_message` with `key`, sends `sent_text` with the signature added."""
    signature = hmac.new(key.encode(), signed_message.encode(), hashlib.sha512).hexdigest()
    raw = sent_text[:-1] + f',"signature":"{signature}"}}'
    request = urllib.request.Request(
        f"{url}/api/v1/PartnerP2P/WhoAmI", data=raw.encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {public_key}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def diagnose(signed_message, answer):
    """What the hashes say: the message was right (so the key is wrong) or it was not."""
    mine = hashlib.sha256(signed_message.encode()).hexdigest()
    server = answer["data"]["message_sha256"]
    if mine in (server["as_sent"], server["canonical"]):
        return "message right, key or hex wrong"
    return "message differs from both of the server's"


now = int(time.time() * 1000)
body = {"timestamp": now, "note": "Zoë", "amount": "150.00"}
mistakes = [
    # (what, message signed, text sent, key) as it fails, then fixed.
    ("spaces from json.dumps defaults",
     (json.dumps(body, ensure_ascii=False), compact(body), secret_key),
     (compact(body), compact(body), secret_key)),
    ("non-ASCII escaped by json.dumps",
     (json.dumps(body, separators=(",", ":")), compact(body), secret_key),
     (compact(body), compact(body), secret_key)),
    ("signed one member order, sent another (neither sorted)",
     (compact({"note": "Zoë", "timestamp": now, "amount": "1"}), compact({"timestamp": now, "note": "Zoë", "amount": "1"}), secret_key),
     (compact({"timestamp": now, "note": "Zoë", "amount": "1"}), compact({"timestamp": now, "note": "Zoë", "amount": "1"}), secret_key)),
    ("number written as 1.50 (JSON.stringify writes 1.5)",
     (f'{{"timestamp":{now},"amount":1.50}}', f'{{"timestamp":{now},"amount":1.50}}', secret_key),
     (f'{{"timestamp":{now},"amount":"1.50"}}', f'{{"timestamp":{now},"amount":"1.50"}}', secret_key)),
    ("keyed without the sk_partner_ prefix",
     (compact(body), compact(body), secret_key[len("sk_partner_"):]),
     (compact(body), compact(body), secret_key)),
]
for what, failing, fixed in mistakes:
    status, answer = send(*failing)
    assert (status, answer["code"]) == (401, "invalid_signature"), (what, status, answer)
    hint = diagnose(failing[0], answer)
    fixed_status, _ = send(*fixed)
    assert fixed_status == 200, (what, fixed_status)
    print(f"{what}: {status} invalid_signature ({hint}); fixed: {fixed_status} signed correctly")
