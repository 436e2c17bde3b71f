"""A real `keyward serve` for the tests (the repository's target/debug/keyward, or
KEYWARD_BIN), with its own data folder, a payment API behind its gateway, and the emails it
writes to its mailbox folder."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("KEYWARD_BIN", ROOT / "target" / "debug" / "keyward"))
VECTORS = ROOT / "testdata" / "signatures.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(BaseHTTPRequestHandler):
    """The payment API behind the gateway: says who keyward said the partner is."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"paid_to": self.headers.get("Keyward-Partner-Id"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Keyward:
    def __init__(self) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"no keyward binary at {BINARY}: run `cargo build` first, or set KEYWARD_BIN")
        self.upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        self.data_dir = tempfile.mkdtemp(prefix="keyward-python-")
        port, internal = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.internal_url = f"http://127.0.0.1:{internal}"
        self.env: Dict[str, str] = {
            **os.environ,
            "KEYWARD_DATA_DIR": self.data_dir,
            "KEYWARD_LISTEN": f"127.0.0.1:{port}",
            "KEYWARD_INTERNAL_LISTEN": f"127.0.0.1:{internal}",
            "KEYWARD_KEY_CACHE_MS": "100",
            "KEYWARD_UPSTREAM_URL": f"http://127.0.0.1:{self.upstream.server_address[1]}",
        }
        self.process = subprocess.Popen([str(BINARY), "serve"], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("keyward did not start")

    def operator(self, *args: str) -> str:
        out = subprocess.run([str(BINARY), *args], env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def link(self, to: str, count: int = 1) -> str:
        """The newest one-time link emailed to `to`, once `count` emails reached that address."""
        mailbox = Path(self.data_dir) / "mailbox"
        for _ in range(100):
            emails: List[Path] = sorted(
                (p for p in mailbox.glob("*.eml") if to in p.read_text(errors="replace")),
                key=lambda p: p.stat().st_mtime_ns,
            ) if mailbox.exists() else []
            if len(emails) >= count:
                text = emails[-1].read_text(errors="replace").replace("=\r\n", "").replace("=\n", "")
                found = re.search(re.escape(self.url) + r"/link/[A-Za-z0-9_-]{43}", text)
                if found:
                    return found.group(0)
            time.sleep(0.1)
        raise AssertionError(f"no email number {count} to {to}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.upstream.shutdown()


@pytest.fixture(scope="session")
def keyward():
    server = Keyward()
    yield server
    server.stop()
