"""An SMTP server (aiosmtpd) that records when each message arrives, for bench/outbox.py.

    python3 bench/smtp_sink.py PORT OUT.jsonl [--fail-rate R] [--latency-ms MS] [--save-dir DIR]

Each accepted message appends {"t": unix_seconds, "to": ..., "message_id": ...} to OUT.jsonl.
With --fail-rate, that share of transactions is refused with 451 (a flapping relay); with
--latency-ms, each message is answered that much later (a relay across a network); with
--save-dir, each accepted message is also written there as an .eml file.
"""
import asyncio, json, os, random, sys, time
from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, out, fail_rate, latency, save_dir):
        self.out = open(out, "a", buffering=1)
        self.fail_rate = fail_rate
        self.latency = latency
        self.save_dir = save_dir

    async def handle_DATA(self, server, session, envelope):
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail_rate and random.random() < self.fail_rate:
            return "451 4.3.0 try again later"
        message_id = ""
        for line in envelope.content.split(b"\r\n"):
            if not line:
                break
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
        if self.save_dir:
            name = os.path.join(self.save_dir, f"{time.time_ns()}-{random.getrandbits(32)}.eml")
            with open(name + ".tmp", "wb") as f:
                f.write(envelope.original_content)
            os.rename(name + ".tmp", name)
        for to in envelope.rcpt_tos:
            self.out.write(json.dumps({"t": time.time(), "to": to, "message_id": message_id}) + "\n")
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    options = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    fail_rate = float(options.get("--fail-rate", 0))
    latency = float(options.get("--latency-ms", 0)) / 1000
    save_dir = options.get("--save-dir")
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    controller = Controller(Recorder(out, fail_rate, latency, save_dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
