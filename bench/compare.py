#!/usr/bin/env python3
"""keyward's authentication path, side by side in one run (issue: the hot path at the machine's
ceiling). For each backend and each store size it fills a fresh store with N active partners
(`keyward bench-fill`, bulk SQL through the store's own code), starts a release `keyward serve`
with the gateway in front of a trivial nginx upstream, and measures with wrk, alternating the
targets over several rounds and taking medians (the machine is shared and noisy; ratios to
/healthz of the same server are what hold):

  healthz        GET /healthz                          (the server's own ceiling)
  whoami         signed WhoAmI, cycling through 256 partners spread over the store
  verify         POST /internal/v1/verify with a service token, same partners
  gateway        GET through the gateway to nginx, signed (reads are not single-use)
  upstream       nginx hit directly                    (the gateway's ceiling)
  bare           a bare hyper 1 server answering a constant (bench/bare-hyper): the ceiling
  nginx_proxy    nginx as a plain reverse proxy in front of the same nginx upstream, with the
                 gateway's request: what the gateway is measured against
  bare_proxy     the bare hyper server as a plain reverse proxy (hyper-util's pooled client) in
                 front of the same upstream, with the gateway's request: the ceiling of a Rust
                 gateway, no checks and no header filtering
  njs_gateway    nginx with an njs script that checks the same HMAC-SHA512 signature, then
                 proxies to the same upstream (bench/njs_peer.js): the scripted peer
  unknown_key    WhoAmI with well-formed keys never issued (rejections must not be slower)
  bad_signature  WhoAmI with a tampered body
  onboard        OnboardPartner with fresh codes (smallest size only)
  gateway_single_use
                 a signed POST through the gateway, every body different: single use on, one
                 database write per request (smallest size only; after the rounds, like onboard)

It writes the table between the markers in docs/benchmarks.md and a chart, bench/results.svg.

  bench/compare.py                                # SQLite and PostgreSQL; 1k, 100k, 1M
  BENCH_SIZES=1000,100000 BENCH_BACKENDS=sqlite bench/compare.py
Knobs: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_CONNECTIONS (64), BENCH_POSTGRES_URL
(postgres://postgres@127.0.0.1:5432/postgres), BENCH_LOG (keyward's log level: info, as operators
run it), BENCH_NO_WRITE=1 to print only; for a quick look at a change, BENCH_TARGETS (a
comma-separated subset of the targets above) and BENCH_BINARY (another keyward binary than
target/release/keyward).
Needs wrk, nginx and njs (apt-get install wrk nginx libnginx-mod-http-js) and, for PostgreSQL, psql.
"""
import json, os, random, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("BENCH_BINARY", ROOT / "target/release/keyward"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "1000,100000,1000000").split(",")]
BACKENDS = os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",")
PG = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
ALL_TARGETS = ["healthz", "whoami", "verify", "gateway", "upstream", "bare", "nginx_proxy", "bare_proxy", "njs_gateway",
               "unknown_key", "bad_signature", "onboard", "gateway_single_use"]
# The request wrk sends (bench/targets.lua's BENCH_MODE), where it is not the target's own.
MODE = {"njs_gateway": "gateway"}
NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
TARGETS_WANTED = os.environ.get("BENCH_TARGETS", ",".join(ALL_TARGETS)).split(",")
AFTER_ROUNDS = ("onboard", "gateway_single_use")  # at the smallest size, after the alternated rounds
TARGETS = [t for t in ALL_TARGETS if t in TARGETS_WANTED and t not in AFTER_ROUNDS]
# Distinct signed bodies for gateway_single_use: more than its runs can send at this machine's
# speed (a run that runs out re-sends bodies, which are refused and counted as errors).
SINGLE_USE_POOL = int(os.environ.get("BENCH_SINGLE_USE_POOL", str(40_000 * SECONDS * ROUNDS)))
BARE = ROOT / "bench/bare-hyper/target/release/bare-hyper"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=30, accept_status=False):
    """Waits until `url` answers 2xx (or, with `accept_status`, any HTTP status)."""
    import urllib.error, urllib.request
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            if accept_status:
                return
            time.sleep(0.1)
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def unknown_key():
    """A well-formed public key (SPEC §1 checksum) that was never issued."""
    body = "pk_partner_" + "".join(random.choice(BASE62) for _ in range(30))
    value, digits = zlib.crc32(body.encode()), ""
    for _ in range(6):
        digits = BASE62[value % 62] + digits
        value //= 62
    return body + digits


def tamper(body):
    """The signed body with its signature's first hex digit changed."""
    i = body.index('"signature":"') + len('"signature":"')
    return body[:i] + ("0" if body[i] != "0" else "1") + body[i + 1:]


def start_nginx(work):
    """nginx as the upstream (a constant), and as a plain reverse proxy in front of it."""
    port, proxy = free_port(), free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json; return 200 '{{"ok":true}}'; }} }}
  upstream api {{ server 127.0.0.1:{port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    wait_http(f"http://127.0.0.1:{proxy}/")
    return nginx, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{proxy}"


def start_njs(work, upstream_url, secrets):
    """nginx with bench/njs_peer.js in front of the upstream; `secrets` maps public to secret keys."""
    port = free_port()
    conf = work / "njs.conf"
    partners = "\n".join(f'    "Bearer {public}" "{secret}";' for public, secret in secrets.items())
    conf.write_text(f"""
load_module {NJS_MODULE};
worker_processes 1; daemon off; pid {work}/njs.pid; error_log {work}/njs.err;
events {{ worker_connections 1024; }}
http {{ access_log off;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  js_import peer from {ROOT / "bench/njs_peer.js"};
  map_hash_bucket_size 128;
  map $http_authorization $partner_secret {{
    default "";
{partners}
  }}
  upstream api {{ server {upstream_url.removeprefix("http://")}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; client_body_buffer_size 64k; client_body_in_single_buffer on;
    location / {{ js_content peer.check; }}
    location @upstream {{ proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}""")
    njs = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", accept_status=True)
    except SystemExit:
        njs.terminate()
        checked = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
        sys.exit(f"the njs peer did not come up: {checked.stderr.strip()}")
    return njs, f"http://127.0.0.1:{port}"


def start_bare(upstream_url=None):
    """The bare hyper server; with `upstream_url`, the bare hyper proxy in front of it."""
    port = free_port()
    bare = subprocess.Popen([str(BARE), f"127.0.0.1:{port}"] + ([upstream_url] if upstream_url else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/", accept_status=True)
    return bare, f"http://127.0.0.1:{port}"


def cpu_seconds(pid):
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url, mode, samples, token, seconds, pid=None, env=None):
    """One wrk run; with `pid`, also that server's CPU time per request (µs), which the shared
    cores' noise moves far less than req/s."""
    before = cpu_seconds(pid) if pid else None
    env = dict(os.environ, **(env or {}), BENCH_MODE=mode, BENCH_SAMPLES=str(samples), BENCH_TOKEN=token)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench/targets.lua"), url],
        env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out) for p in ("50", "99")}
    def ms(m):
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    result = {"rps": rps, "p50": ms(lat["50"]), "p99": ms(lat["99"]), "requests": total, "errors": failed}
    if pid:
        result["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(total, 1)
    return result


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_size(backend, size, upstream_url, proxy_url, bare_url, bare_pid, bare_proxy_url, bare_proxy_pid):
    work = Path(tempfile.mkdtemp(prefix="keyward-bench-"))
    env = dict(os.environ, KEYWARD_DATA_DIR=str(work), KEYWARD_LOG=os.environ.get("BENCH_LOG", "info"))
    db = None
    if backend == "postgres":
        db = f"keyward_bench_{os.getpid()}_{size}"
        subprocess.run(["psql", PG, "-qc", f"CREATE DATABASE {db}"], check=True)
        env["KEYWARD_DATABASE_URL"] = PG.rsplit("/", 1)[0] + "/" + db
    try:
        started = time.time()
        single_use = size == min(SIZES) and "gateway_single_use" in TARGETS_WANTED
        subprocess.run([str(BINARY), "bench-fill", "--partners", str(size), "--out", str(work / "samples.jsonl"),
                        "--single-use", str(SINGLE_USE_POOL if single_use else 0)],
                       env=env, check=True, stderr=subprocess.DEVNULL)
        fill = time.time() - started
        token = subprocess.run([str(BINARY), "service-token", "create", "bench"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        lines, secrets = [], {}
        for line in (work / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            secrets[sample["public_key"]] = sample["secret_key"]
            verify = json.dumps({"authorization": "Bearer " + sample["public_key"], "body": sample["body"]})
            lines.append("\t".join([sample["public_key"], sample["body"], verify, unknown_key(), tamper(sample["body"])]))
        samples = work / "samples.tsv"
        samples.write_text("\n".join(lines) + "\n")
        port, internal = free_port(), free_port()
        njs, njs_url = start_njs(work, upstream_url, secrets) if "njs_gateway" in TARGETS else (None, None)
        server = subprocess.Popen([str(BINARY), "serve"], env=dict(
            env, KEYWARD_LISTEN=f"127.0.0.1:{port}", KEYWARD_INTERNAL_LISTEN=f"127.0.0.1:{internal}",
            KEYWARD_UPSTREAM_URL=upstream_url, KEYWARD_IP_RATE_LIMIT_PER_MINUTE="100000000"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            public = f"http://127.0.0.1:{port}"
            wait_http(public + "/healthz")
            urls = {
                "healthz": public + "/healthz", "whoami": public + "/api/v1/PartnerP2P/WhoAmI",
                "verify": f"http://127.0.0.1:{internal}/internal/v1/verify",
                "gateway": public + "/api/v1/PartnerP2P/Bench", "upstream": upstream_url + "/api/v1/PartnerP2P/Bench",
                "bare": bare_url + "/healthz", "nginx_proxy": proxy_url + "/api/v1/PartnerP2P/Bench",
                "bare_proxy": bare_proxy_url + "/api/v1/PartnerP2P/Bench",
                "njs_gateway": f"{njs_url}/api/v1/PartnerP2P/Bench",
                "unknown_key": public + "/api/v1/PartnerP2P/WhoAmI", "bad_signature": public + "/api/v1/PartnerP2P/WhoAmI",
            }
            for target in TARGETS:  # warm-up: caches, connection pools
                wrk(urls[target], MODE.get(target, target), samples, token, 1)
            rounds = {t: [] for t in TARGETS}
            for r in range(ROUNDS):
                order = TARGETS if r % 2 == 0 else list(reversed(TARGETS))
                for target in order:
                    pid = {"bare": bare_pid, "bare_proxy": bare_proxy_pid, "upstream": None, "nginx_proxy": None, "njs_gateway": None}.get(target, server.pid)
                    rounds[target].append(wrk(urls[target], MODE.get(target, target), samples, token, SECONDS, pid))
            onboard = None
            if size == min(SIZES) and "onboard" in TARGETS_WANTED:
                onboard = [wrk(public + "/api/v1/no-auth/PartnerP2P/OnboardPartner", "onboard", samples, token, SECONDS,
                               server.pid)
                           for _ in range(ROUNDS)]
            single_use_runs = []
            if single_use:
                share = SINGLE_USE_POOL // ROUNDS  # each run its own bodies
                for r in range(ROUNDS):
                    single_use_runs.append(wrk(
                        urls["gateway"], "gateway_single_use", samples, token, SECONDS, server.pid,
                        env={"BENCH_SINGLE_USE": str(work / "single-use.tsv"), "BENCH_SKIP": str(r * share),
                             "BENCH_LIMIT": str(share)}))
            rss = peak_rss_mib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            if njs:
                njs.terminate()
                njs.wait(timeout=30)
        result = {t: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for t, runs in rounds.items()}
        if onboard:
            result["onboard"] = {k: statistics.median(run[k] for run in onboard) for k in onboard[0]}
        if single_use_runs:
            result["gateway_single_use"] = {k: statistics.median(run[k] for run in single_use_runs)
                                            for k in single_use_runs[0]}
        return {"backend": backend, "size": size, "fill_seconds": fill, "peak_rss_mib": rss, "targets": result}
    finally:
        if db:
            subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)
        shutil.rmtree(work, ignore_errors=True)


PROXIES = ("gateway", "gateway_single_use", "nginx_proxy", "bare_proxy", "njs_gateway")


def table(results):
    rows = ["| backend | partners | target | req/s | ratio | server CPU µs/req | p50 ms | p99 ms | errors | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["targets"]
        for name, m in t.items():
            if name in ("bare", "upstream", "onboard"):
                ratio = ""
            elif name in PROXIES and "upstream" in t:
                ratio = f"{m['rps'] / t['upstream']['rps']:.2f}× of direct"
                if name.startswith("gateway") and "nginx_proxy" in t:
                    nginx = t["nginx_proxy"]["rps"] / t["upstream"]["rps"]
                    ratio += f" = {m['rps'] / t['upstream']['rps'] / nginx:.2f}× nginx's"
                if name.startswith("gateway") and "bare_proxy" in t:
                    ratio += f", {m['rps'] / t['bare_proxy']['rps']:.2f}× bare hyper's"
                if name.startswith("gateway") and "njs_gateway" in t:
                    ratio += f", {m['rps'] / t['njs_gateway']['rps']:.2f}× njs's"
            elif name in PROXIES:
                ratio = ""
            elif "bare" in t:
                ratio = f"{m['rps'] / t['bare']['rps']:.2f}× of bare hyper"
            elif "healthz" in t:
                ratio = f"{m['rps'] / t['healthz']['rps']:.2f}× of healthz"
            else:
                ratio = ""
            expected = name in ("unknown_key", "bad_signature")
            errors = f"{m['errors']:.0f} (401 expected)" if expected else f"{m['errors']:.0f}"
            cpu = f"{m['cpu_us']:.1f}" if "cpu_us" in m else ""
            rows.append(f"| {r['backend']} | {r['size']:,} | {name} | {m['rps']:,.0f} | {ratio} | {cpu} | {m['p50']:.2f} | "
                        f"{m['p99']:.2f} | {errors} | {r['peak_rss_mib']:.0f} MiB |")
    return "\n".join(rows)


def chart(results):
    """req/s against partners (log scale), one panel per backend, one line per target."""
    colors = {"healthz": "#888", "whoami": "#1f77b4", "verify": "#2ca02c", "gateway": "#d62728",
              "upstream": "#bbb", "bare": "#000", "nginx_proxy": "#ff7f0e", "bare_proxy": "#17becf", "njs_gateway": "#e377c2", "unknown_key": "#9467bd",
              "bad_signature": "#8c564b"}
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in results)]
    w, h, pad = 460, 300, 50
    top = max(m["rps"] for r in results for m in r["targets"].values()) * 1.1
    import math
    sizes = sorted({r["size"] for r in results})
    lo, hi = math.log10(min(sizes)), math.log10(max(sizes)) + 1e-9
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(backends)}" height="{h + 56}" font-family="sans-serif" font-size="11">',
             "<!-- Generated by bench/compare.py from bench/results.json: run the script, do not edit. -->"]
    for i, backend in enumerate(backends):
        ox = i * w
        x = lambda s: ox + pad + (math.log10(s) - lo) / (hi - lo or 1) * (w - 2 * pad)
        y = lambda v: h - pad + 10 - v / top * (h - 2 * pad)
        parts.append(f'<text x="{ox + w / 2}" y="16" text-anchor="middle" font-weight="bold">{backend}: req/s by partners in the store</text>')
        parts.append(f'<line x1="{ox + pad}" y1="{y(0)}" x2="{ox + w - pad}" y2="{y(0)}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="{y(0)}" x2="{ox + pad}" y2="{y(top)}" stroke="black"/>')
        for s in sizes:
            parts.append(f'<text x="{x(s)}" y="{y(0) + 14}" text-anchor="middle">{s:,}</text>')
        for v in range(0, int(top), max(1, int(top / 5) // 1000 * 1000)):
            parts.append(f'<text x="{ox + pad - 4}" y="{y(v) + 4}" text-anchor="end">{v // 1000}k</text>')
        for j, (target, color) in enumerate(colors.items()):
            points = [(r["size"], r["targets"][target]["rps"]) for r in results if r["backend"] == backend and target in r["targets"]]
            points.sort()
            if points:
                path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
            parts.append(f'<rect x="{ox + pad + (j % 4) * 95}" y="{h + 8 + (j // 4) * 14}" width="10" height="3" fill="{color}"/>'
                         f'<text x="{ox + pad + (j % 4) * 95 + 14}" y="{h + 13 + (j // 4) * 14}">{target}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main():
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"bench/compare.py needs {tool}: apt-get install {tool}")
    if "njs_gateway" in TARGETS and not NJS_MODULE.exists():
        sys.exit(f"bench/compare.py needs nginx's njs module ({NJS_MODULE}): apt-get install libnginx-mod-http-js")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "keyward"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(ROOT / "bench/bare-hyper/Cargo.toml")],
                   cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="keyward-nginx-"))
    nginx, upstream, proxy = start_nginx(work)
    bare, bare_url = start_bare()
    bare_proxy, bare_proxy_url = start_bare(upstream)
    results = []
    try:
        for backend in BACKENDS:
            for size in SIZES:
                print(f"{backend}, {size:,} partners …", file=sys.stderr, flush=True)
                result = run_size(backend, size, upstream, proxy, bare_url, bare.pid, bare_proxy_url, bare_proxy.pid)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        nginx.terminate()
        bare.terminate()
        bare_proxy.terminate()
        shutil.rmtree(work, ignore_errors=True)
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, wrk -t1 "
              f"-c{CONNECTIONS}, {ROUNDS} rounds of {SECONDS} s per target, targets alternated, medians.")
    text = header + "\n\n" + table(results) + "\n"
    print(text)
    if os.environ.get("BENCH_NO_WRITE"):
        return
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
    (ROOT / "bench/results.svg").write_text(chart(results) + "\n")
    doc = ROOT / "docs/benchmarks.md"
    current = doc.read_text()
    start, end = "<!-- bench:compare:start -->", "<!-- bench:compare:end -->"
    if start in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1]
        doc.write_text(before + start + "\n" + text + end + after)
    else:
        doc.write_text(current + "\n" + start + "\n" + text + end + "\n")


if __name__ == "__main__":
    main()
