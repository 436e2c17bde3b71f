#!/usr/bin/env python3
"""Does the lost-keys answer leak, by its timing, whether a code and email match a partner?

Starts a release `keyward serve` on a fresh store, onboards one partner through the real flow,
then sends N lost-keys requests (GenKeysForPartner without Authorization) for the matching
pair and N for a pair that matches nothing, interleaved one by one over one keep-alive
connection each, and prints both medians and their difference. The limits are raised so that
the matching requests really do their work (a link and an email each).

  bench/lost_keys_timing.py            # N = 500
  BENCH_N=2000 bench/lost_keys_timing.py
"""
import http.client, json, os, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target/release/keyward"
N = int(os.environ.get("BENCH_N", "500"))
PATH = "/api/v1/no-auth/PartnerP2P/GenKeysForPartner"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "keyward"], cwd=ROOT, check=True)
    data = Path(tempfile.mkdtemp(prefix="keyward-timing-"))
    port = free_port()
    env = dict(os.environ, KEYWARD_DATA_DIR=str(data), KEYWARD_LISTEN=f"127.0.0.1:{port}",
               KEYWARD_INTERNAL_LISTEN="off", KEYWARD_LOG="warn",
               KEYWARD_IP_RATE_LIMIT_PER_MINUTE="100000000", KEYWARD_PARTNER_LINKS_PER_HOUR="100000000",
               KEYWARD_RECIPIENT_EMAILS_PER_HOUR="100000000")
    server = subprocess.Popen([str(BINARY), "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        post(conn, "/api/v1/no-auth/PartnerP2P/OnboardPartner", {"partner_code": "TIMING", "email": "t@timing.example"})
        mailbox = data / "mailbox"
        for _ in range(100):
            if mailbox.exists() and any(mailbox.iterdir()):
                break
            time.sleep(0.1)
        text = next(mailbox.iterdir()).read_text()
        token = text.split("/link/")[1][:43]
        status, _ = post(conn, "/api/v1/no-auth/PartnerP2P/RedeemKeyLink", {"token": token, "partner_code": "TIMING"})
        assert status == 200, status

        matching = {"partner_code": "TIMING", "email": "t@timing.example"}
        other = {"partner_code": "TIMING", "email": "nobody@timing.example"}
        times = {"matching": [], "not matching": []}
        answers = {"matching": set(), "not matching": set()}
        a = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        b = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(N + 50):  # the first 50 of each warm up and are not counted
            for name, body, c in (("matching", matching, a), ("not matching", other, b)):
                started = time.perf_counter()
                status, payload = post(c, PATH, body)
                elapsed = time.perf_counter() - started
                assert status == 200, status
                answers[name].add(payload)
                if i >= 50:
                    times[name].append(elapsed * 1000)
        # Let the background work and the outbox settle.
        emails, stable = -1, 0
        while stable < 10:
            time.sleep(0.2)
            count = len(list(mailbox.iterdir()))
            stable, emails = (stable + 1, count) if count == emails else (0, count)
    finally:
        server.terminate()
        server.wait()
    m, o = statistics.median(times["matching"]), statistics.median(times["not matching"])
    print(f"{N} interleaved lost-keys requests each, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"  matching pair:      median {m:.3f} ms")
    print(f"  not matching:       median {o:.3f} ms")
    print(f"  difference:         {m - o:+.3f} ms ({(m - o) / o * 100:+.1f}%)")
    print(f"  identical bodies:   {answers['matching'] == answers['not matching']}")
    print(f"  emails written:     {emails - 1} regeneration links (done after answering; the"
          f" rest of the {N + 50} were dropped once 256 were in hand at once)")


if __name__ == "__main__":
    sys.exit(main())
