"""The client's own behaviour against a stand-in server: 429 and 503 retried after
Retry-After (a bounded number of times), errors carrying the spec's envelope, and malformed
keys refused before anything is sent."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keyward_partner import KeywardError, PartnerClient, Verifier

PUBLIC = "pk_partner_BSB8wIYc6sE7hIysyRYv9Z0oCJif3k38fgkq"
SECRET = "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK"
BUSY = {"success": False, "message": "Too many requests.", "data": None, "code": "rate_limited"}
OK = {"success": True, "message": "ok", "data": {"partner_id": "p"}}


def stand_in(answers):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            status, body, headers = answers[min(len(seen), len(answers)) - 1]
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", seen, server


def test_429_and_503_are_retried_after_retry_after_a_bounded_number_of_times():
    url, seen, server = stand_in([(429, BUSY, {"Retry-After": "1"}), (503, BUSY, {}), (200, OK, {})])
    started = time.monotonic()
    assert PartnerClient(url, PUBLIC, SECRET).who_am_i() == {"partner_id": "p"}
    assert len(seen) == 3 and time.monotonic() - started >= 1.0
    server.shutdown()
    url, seen, server = stand_in([(503, {**BUSY, "code": "unavailable"}, {"Retry-After": "0"})])
    with pytest.raises(KeywardError) as error:
        PartnerClient(url, PUBLIC, SECRET).who_am_i()
    assert (error.value.status, error.value.code, len(seen)) == (503, "unavailable", 4)
    server.shutdown()


def test_malformed_keys_and_tokens_are_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="public_key"):
        PartnerClient("http://x", PUBLIC[:-1], SECRET)
    with pytest.raises(ValueError, match="secret_key"):
        PartnerClient("http://x", PUBLIC, PUBLIC)
    with pytest.raises(ValueError, match="service token"):
        Verifier("http://x", "Bearer nope")
