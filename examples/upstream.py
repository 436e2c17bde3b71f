# A tiny payout API behind keyward's gateway (Python standard library only). It trusts the
# Keyward-Partner-Id header keyward sets, so it must listen only where keyward can reach it:
# here, loopback. A request that did not come through keyward has no such header.
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PayoutApi(BaseHTTPRequestHandler):
    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        partner_id = self.headers.get("Keyward-Partner-Id")
        if partner_id is None:
            self.answer(403, {"success": False, "message": "Call through keyward."})
            return
        self.answer(200, {
            "success": True,
            "message": "payout accepted",
            "data": {
                "partner_id": partner_id,
                "partner_code": self.headers.get("Keyward-Partner-Code"),
                "path": self.path,
                "body_bytes": len(body),
                "client_ip": self.headers.get("X-Forwarded-For"),
            },
        })

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), PayoutApi)
print(f"payout API listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
