#!/bin/sh
# keyward scan's speed on a large tree, beside `grep -rE` of the same prefixes (which checks no
# checksum and prints whole tokens): MB/s, median of 3 runs each, alternated.
#   bench/scan.sh              # 256 MiB in 1024 files; BENCH_SCAN_MB=64 for a quicker run
# Needs target/release/keyward (cargo build --release).
set -eu
cd "$(dirname "$0")/.."
KEYWARD=${KEYWARD_BIN:-target/release/keyward}
MB=${BENCH_SCAN_MB:-256}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
python3 - "$tree" "$MB" <<'PY'
import os, random, sys, zlib
root, mb = sys.argv[1], int(sys.argv[2])
B = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def token(prefix, r):
    s = prefix + "".join(r.choice(B) for _ in range(30)); v = zlib.crc32(s.encode()); d = ""
    for _ in range(6): d = B[v % 62] + d; v //= 62
    return s + d
r = random.Random(1)
words = ["partner", "payout", "amount", "signature", "config", "key", "value", "return", "import", "def", "{", "}", "=", "sk_", "pk_", "_partner_x"]
files = 1024
for i in range(files):
    d = os.path.join(root, f"d{i % 32}")
    os.makedirs(d, exist_ok=True)
    lines = []
    size = 0
    while size < mb * 1024 * 1024 // files:
        line = " ".join(r.choice(words) for _ in range(12))
        if r.random() < 0.001:
            line += " " + token(r.choice(["pk_partner_", "sk_partner_", "kw_service_"]), r)
        lines.append(line)
        size += len(line) + 1
    open(os.path.join(d, f"f{i}.txt"), "w").write("\n".join(lines) + "\n")
PY
bytes=$(du -sb "$tree" | cut -f1)
PATTERN='(pk_|sk_)(test_)?partner_[0-9A-Za-z]{36}|kw_service_[0-9A-Za-z]{36}'
time_of() { # seconds of one run of "$@", output discarded
  start=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; end=$(date +%s.%N)
  awk "BEGIN { print $end - $start }"
}
scan_times=""; grep_times=""
for _ in 1 2 3; do
  scan_times="$scan_times $(time_of "$KEYWARD" scan "$tree")"
  grep_times="$grep_times $(time_of grep -rEo "$PATTERN" "$tree")"
done
median() { echo "$@" | tr ' ' '\n' | grep . | sort -n | sed -n 2p; }
s=$(median $scan_times); g=$(median $grep_times)
found=$("$KEYWARD" scan "$tree" 2>/dev/null | wc -l || true)
printf '| tree | keyward scan | grep -rEo (no checksum) | tokens found |\n|---|---|---|---|\n'
printf '| %s MiB, 1024 files | %.0f MB/s (%.2f s) | %.0f MB/s (%.2f s) | %s |\n' \
  "$MB" "$(awk "BEGIN { print $bytes / $s / 1e6 }")" "$s" "$(awk "BEGIN { print $bytes / $g / 1e6 }")" "$g" "$found"
