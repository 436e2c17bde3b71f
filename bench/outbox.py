#!/usr/bin/env python3
"""How fast queued emails reach a real SMTP server (aiosmtpd), measured from outside.

Starts an SMTP sink that records each arrival, one or two `keyward serve` nodes sending to it,
onboards N partners over HTTP as fast as it can (each onboarding queues one email), then waits
for the last email to arrive and reports the queue time, the queue-to-last-delivery time and
the delivery rate.

With --drain, the emails are first queued while the mail server is unreachable; the nodes are
then restarted pointing at the sink, and the rate is the backlog's size over the time from the
first to the last arrival: what the outbox can send, not how fast onboarding queues.

    python3 bench/outbox.py [--emails 3000] [--concurrency 8] [--nodes 1|2]
                            [--postgres postgres://postgres@127.0.0.1:5432/postgres]
                            [--binary target/release/keyward] [--rounds 3] [--drain]
                            [--latency-ms 20]

With --nodes 2, --postgres is required (a fresh database is created and dropped).
"""
import argparse, concurrent.futures, http.client, json, os, socket, statistics, subprocess
import sys, tempfile, time, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def onboard_all(ports, n, run_id, workers=16):
    """Onboards n partners spread over the nodes; returns (first, last) queue times."""
    def worker(indices):
        port = ports[indices[0] % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in indices:
            body = json.dumps({"partner_code": f"B{run_id}{i}", "email": f"p{i}@{run_id}.bench.example"})
            conn.request("POST", "/api/v1/no-auth/PartnerP2P/OnboardPartner", body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"onboarding answered {response.status}")
    chunks = [list(range(w, n, workers)) for w in range(workers)]
    first = time.time()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, chunks))
    return first, time.time()


def arrivals(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def one_round(args, run_id):
    work = tempfile.mkdtemp(prefix="keyward-outbox-bench-")
    sink_out = os.path.join(work, "arrivals.jsonl")
    smtp_port = free_port()
    children = [subprocess.Popen([sys.executable, os.path.join(ROOT, "bench/smtp_sink.py"),
                                  str(smtp_port), sink_out, "--latency-ms", str(args.latency_ms)],
                                 stdout=subprocess.DEVNULL)]
    database = None
    try:
        wait_port(smtp_port)
        env = dict(os.environ, KEYWARD_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
                   KEYWARD_SMTP_CONCURRENCY=str(args.concurrency),
                   KEYWARD_IP_RATE_LIMIT_PER_MINUTE="100000000",
                   KEYWARD_INTERNAL_LISTEN="off", KEYWARD_LOG="warn")
        if args.postgres:
            database = f"keyward_outbox_bench_{run_id}"
            subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {database}"], check=True)
            base = args.postgres.rsplit("/", 1)[0]
            env["KEYWARD_DATABASE_URL"] = f"{base}/{database}"
            env["KEYWARD_MASTER_KEY"] = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
        def start_nodes(smtp_url):
            nodes, ports = [], []
            for node in range(args.nodes):
                port = free_port()
                node_env = dict(env, KEYWARD_LISTEN=f"127.0.0.1:{port}", KEYWARD_SMTP_URL=smtp_url,
                                KEYWARD_DATA_DIR=os.path.join(work, f"node{node}"))
                child = subprocess.Popen([args.binary, "serve"], env=node_env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                children.append(child)
                nodes.append(child)
                wait_port(port)
                ports.append(port)
            return nodes, ports

        if args.drain:
            nodes, ports = start_nodes(f"smtp://127.0.0.1:{free_port()}")  # nothing listens
            onboard_all(ports, args.emails, run_id)
            for node in nodes:
                node.kill()
                node.wait()
            queued_first = time.time()
            queued_last = queued_first
            start_nodes(env["KEYWARD_SMTP_URL"])
        else:
            _, ports = start_nodes(env["KEYWARD_SMTP_URL"])
            queued_first, queued_last = onboard_all(ports, args.emails, run_id)
        deadline = time.time() + args.timeout
        while len(arrivals(sink_out)) < args.emails and time.time() < deadline:
            time.sleep(0.05)
        got = arrivals(sink_out)
        if len(got) < args.emails:
            raise SystemExit(f"only {len(got)} of {args.emails} emails arrived in {args.timeout} s")
        times = sorted(a["t"] for a in got)
        ids = [a["message_id"] for a in got]
        first_arrival = times[0] if args.drain else queued_first
        return {
            "mode": "drain" if args.drain else "live",
            "emails": args.emails,
            "arrived": len(got),
            "duplicates": len(ids) - len(set(ids)),
            "queue_s": queued_last - queued_first,
            "queue_to_last_delivery_s": times[-1] - queued_first,
            "delivery_rate_per_s": len(got) / max(times[-1] - first_arrival, 1e-9),
        }
    finally:
        for child in children:
            child.kill()
            child.wait()
        if database:
            subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--postgres")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/keyward"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=0,
                        help="the sink answers each message this much later (a remote relay)")
    args = parser.parse_args()
    if args.nodes > 1 and not args.postgres:
        raise SystemExit("--nodes 2 needs --postgres")
    results = []
    for r in range(args.rounds):
        result = one_round(args, f"{os.getpid()}r{r}")
        print(json.dumps(result), flush=True)
        results.append(result)
    backend = "postgresql" if args.postgres else "sqlite"
    median = lambda key: statistics.median(r[key] for r in results)
    mode = "backlog drained" if args.drain else "queued live"
    print(f"| {backend} | {args.nodes} | {mode} | {args.latency_ms:g} ms | {args.concurrency} | {args.emails} | "
          f"{median('queue_s'):.1f} s | {median('queue_to_last_delivery_s'):.1f} s | "
          f"{median('delivery_rate_per_s'):.0f}/s | {sum(r['duplicates'] for r in results)} |")


if __name__ == "__main__":
    main()
