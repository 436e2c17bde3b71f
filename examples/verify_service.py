# A payout API that authenticates partners itself, through keyward's verify API (Python
# standard library only). Each partner request is relayed to keyward as it arrived; an
# invalid one is answered with exactly the status and envelope keyward says.
import json, os, sys, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYWARD = os.environ.get("KEYWARD_INTERNAL_URL", "http://127.0.0.1:8081")
TOKEN = os.environ.get("KEYWARD_SERVICE_TOKEN", "")  # `keyward service-token create payouts`
if not TOKEN.startswith("kw_service_"):
    sys.exit("KEYWARD_SERVICE_TOKEN must hold this service's token (kw_service_…): "
             "create one with `keyward service-token create payouts`")


def verify(authorization, body, client_ip, single_use):
    request = urllib.request.Request(
        f"{KEYWARD}/internal/v1/verify",
        data=json.dumps({"authorization": authorization, "body": body,
                         "client_ip": client_ip, "single_use": single_use}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # 401: a bad service token
        return json.load(response)["data"]


class PayoutApi(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        try:
            # A payout must not be paid twice: single_use.
            result = verify(self.headers.get("Authorization"), body, self.client_address[0], True)
        except urllib.error.HTTPError as e:
            # Not the partner's fault: our own token is refused. Say so where operators look.
            what = "our service token is refused (check KEYWARD_SERVICE_TOKEN)" if e.code == 401 else f"status {e.code}"
            print(f"configuration error: the verify API answered {e.code}: {what}", file=sys.stderr, flush=True)
            return self.unavailable()
        except (urllib.error.URLError, OSError) as e:
            print(f"keyward's verify API cannot be reached: {e}", file=sys.stderr, flush=True)
            return self.unavailable()
        if not result["valid"]:
            error = result["error"]
            envelope = {"success": False, "message": error["message"], "data": error["data"],
                        "code": error["code"]}
            if "errors" in error:
                envelope["errors"] = error["errors"]
            return self.answer(error["status"], envelope)
        self.answer(200, {"success": True, "message": "payout accepted",
                          "data": {"partner_id": result["partner_id"]}})

    def unavailable(self):
        self.answer(503, {"success": False, "message": "Try again shortly.", "data": None,
                          "code": "unavailable"})

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9001"))), PayoutApi)
print(f"payout API listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
