"""The scanners' rules against the samples `keyward scan` is tested with
(testdata/scan-samples.txt): detect-secrets runs for real with the plugin; the gitleaks and
trufflehog files parse and their regexes find every valid token and no look-alike of another
shape (a regex cannot check a checksum: the wrong-checksum sample is theirs to find)."""

import json
import pathlib
import re
import subprocess
import sys
import tomllib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
SAMPLES = HERE.parents[1] / "testdata" / "scan-samples.txt"
TEXT = SAMPLES.read_text()
VALID = [line.split('KEY="')[1].rstrip('"') for line in TEXT.splitlines() if 'KEY="' in line]
WRONG_CHECKSUM = next(line.split("=", 1)[1] for line in TEXT.splitlines() if line.startswith("BAD="))


def found_by(patterns):
    found = set()
    for pattern in patterns:
        found.update(match.group(1) for match in re.finditer(pattern, TEXT))
    return found


def test_gitleaks_rules():
    rules = tomllib.loads((HERE / "gitleaks.toml").read_text())["rules"]
    assert len(rules) == 5
    assert all(rule["secretGroup"] == 1 and rule["keywords"] for rule in rules)
    assert found_by(rule["regex"] for rule in rules) == set(VALID) | {WRONG_CHECKSUM}


def test_trufflehog_detectors():
    detectors = yaml.safe_load((HERE / "trufflehog.yaml").read_text())["detectors"]
    assert len(detectors) == 5
    assert all(d["name"] and d["keywords"] for d in detectors)
    patterns = [pattern for d in detectors for pattern in d["regex"].values()]
    assert found_by(patterns) == set(VALID) | {WRONG_CHECKSUM}


def test_the_detect_secrets_plugin_finds_exactly_the_valid_tokens():
    # detect-secrets scans paths relative to where it runs.
    out = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", "--all-files", "--plugin",
         str(HERE / "keyward_detect_secrets.py"), SAMPLES.name],
        capture_output=True, text=True, check=True, cwd=SAMPLES.parent,
    )
    results = json.loads(out.stdout)["results"].get(SAMPLES.name, [])
    ours = [r for r in results if r["type"] == "keyward token"]
    assert sorted(r["line_number"] for r in ours) == [5, 6, 7, 8, 9], ours
    import hashlib
    assert {r["hashed_secret"] for r in ours} == {hashlib.sha1(t.encode()).hexdigest() for t in VALID}
