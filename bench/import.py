#!/usr/bin/env python3
"""Moving partners in (SPEC §10.2), measured: `keyward partner import` of N partners (half with
keys of §1's format, half with legacy keys) into a fresh store, on SQLite and PostgreSQL; then
WhoAmI through a release `keyward serve` signed with an imported legacy key, an imported key of
§1's format and a key keyward issued itself, alternated over rounds (medians), to show that an
imported key authenticates at the same speed as a native one.

  bench/import.py                         # 100,000 rows, SQLite and PostgreSQL
  BENCH_ROWS=20000 BENCH_BACKENDS=sqlite bench/import.py
Knobs: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_POSTGRES_URL. Needs wrk (apt-get install wrk).
Prints a Markdown table for docs/benchmarks.md.
"""
import json, os, random, re, secrets, shutil, signal, statistics, string, subprocess, sys, tempfile, time, zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, wait_http  # noqa: E402  (the same helpers as the side-by-side run)

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target/release/keyward"
ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",")
PG = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def native_key(prefix):
    """A key of SPEC §1's format: prefix, 30 random base62 characters, CRC-32 checksum."""
    body = prefix + "".join(secrets.choice(BASE62) for _ in range(30))
    value, digits = zlib.crc32(body.encode()), ""
    for _ in range(6):
        digits = BASE62[value % 62] + digits
        value //= 62
    return body + digits


def legacy_key(prefix):
    return prefix + "".join(secrets.choice(BASE62) for _ in range(random.randint(24, 40)))


def sign(env, secret_file, body):
    """`keyward sign`: the body with its signature, as a partner would send it."""
    return subprocess.run([str(BINARY), "sign", "--secret-key-file", str(secret_file)], input=body, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def wrk(url, public, body):
    env = dict(os.environ, KEYWARD_PUBLIC_KEY=public, KEYWARD_BODY=body)
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{SECONDS}s", "--latency", "-s", str(ROOT / "bench/whoami.lua"), url],
                         env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = re.search(r"non-2xx or socket errors (\d+)", out)
    return rps, p99_ms, int(errors.group(1)) if errors else 0


def run(backend):
    work = Path(tempfile.mkdtemp(prefix="keyward-import-"))
    env = dict(os.environ, KEYWARD_DATA_DIR=str(work), KEYWARD_LOG="warn")
    db = None
    if backend == "postgres":
        db = f"keyward_import_{os.getpid()}"
        subprocess.run(["psql", PG, "-qc", f"CREATE DATABASE {db}"], check=True)
        env["KEYWARD_DATABASE_URL"] = PG.rsplit("/", 1)[0] + "/" + db
    try:
        rows, samples = [], {}
        for i in range(ROWS):
            legacy = i % 2 == 1
            public = legacy_key("pk_partner_") if legacy else native_key("pk_partner_")
            secret = legacy_key("sk_partner_") if legacy else native_key("sk_partner_")
            rows.append(json.dumps({"partner_code": f"IMP-{i:07d}", "email": f"p{i}@import.example",
                                    "public_key": public, "secret_key": secret,
                                    "created_at": "2024-01-31T09:00:00Z"}))
            if i == ROWS // 2:
                samples["native (imported)"] = (public, secret)
            if i == ROWS // 2 + 1:
                samples["legacy (imported)"] = (public, secret)
        file = work / "partners.jsonl"
        file.write_text("\n".join(rows) + "\n")
        subprocess.run([str(BINARY), "migrate"], env=env, check=True, capture_output=True)
        started = time.time()
        out = subprocess.run([str(BINARY), "partner", "import", str(file)], env=env, check=True,
                             capture_output=True, text=True).stdout
        seconds = time.time() - started
        assert f"{ROWS} imported" in out, out

        port = free_port()
        server = subprocess.Popen([str(BINARY), "serve"], env=dict(env, KEYWARD_LISTEN=f"127.0.0.1:{port}",
                                  KEYWARD_INTERNAL_LISTEN="off", KEYWARD_IP_RATE_LIMIT_PER_MINUTE="100000000"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/healthz")
            # A partner keyward onboarded itself, for the native side of the comparison.
            import urllib.request
            request = urllib.request.Request(url + "/api/v1/no-auth/PartnerP2P/OnboardPartner", method="POST",
                                             data=b'{"partner_code":"NATIVE","email":"native@import.example"}',
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request).read()
            for _ in range(100):
                mails = list((work / "mailbox").glob("*.eml")) if (work / "mailbox").exists() else []
                if mails:
                    break
                time.sleep(0.1)
            text = mails[0].read_text(errors="replace").replace("=\r\n", "").replace("=\n", "")
            link = re.search(re.escape(url) + r"/link/[A-Za-z0-9_-]{43}", text).group(0)
            subprocess.run([str(BINARY), "redeem", link, "--partner-code", "NATIVE", "--out", str(work / "native.json")],
                           env=env, check=True, capture_output=True)
            native = json.loads((work / "native.json").read_text())
            samples["native (onboarded)"] = (native["public_key"], native["secret_key"])
            bodies = {}
            for name, (public, secret) in samples.items():
                (work / "sk").write_text(secret)
                bodies[name] = (public, sign(env, work / "sk", '{"bench":true}'))
            whoami = url + "/api/v1/PartnerP2P/WhoAmI"
            for public, body in bodies.values():
                wrk(whoami, public, body)  # warm-up
            results = {name: [] for name in bodies}
            for r in range(ROUNDS):
                order = list(bodies) if r % 2 == 0 else list(reversed(bodies))
                for name in order:
                    results[name].append(wrk(whoami, *bodies[name]))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        return seconds, {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                                sum(r[2] for r in runs)) for name, runs in results.items()}
    finally:
        if db:
            subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)
        shutil.rmtree(work, ignore_errors=True)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "keyward"], cwd=ROOT, check=True)
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores: "
             f"{ROWS:,} rows (half legacy keys); WhoAmI with wrk -t1 -c64, {ROUNDS} rounds of {SECONDS} s, "
             "alternated, medians.", "",
             "| backend | import | rows/s | WhoAmI key | req/s | ratio to native | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for backend in BACKENDS:
        print(f"{backend} …", file=sys.stderr)
        seconds, whoami = run(backend)
        native = whoami["native (onboarded)"][0]
        for name, (rps, p99, errors) in whoami.items():
            lines.append(f"| {backend} | {seconds:.1f} s | {ROWS / seconds:,.0f} | {name} | {rps:,.0f} | "
                         f"{rps / native:.2f} | {p99:.2f} | {errors} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
