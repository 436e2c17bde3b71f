#!/usr/bin/env python3
"""Seeds the fuzz corpus with every body of testdata/signatures.json (the Node vectors)."""
import hashlib, json, pathlib

root = pathlib.Path(__file__).resolve().parent
corpus = root / "corpus" / "json_signature"
corpus.mkdir(parents=True, exist_ok=True)
vectors = json.loads((root.parent / "testdata" / "signatures.json").read_text())

def bodies(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("body", "raw", "raw_body") and isinstance(value, str):
                yield value
            else:
                yield from bodies(value)
    elif isinstance(node, list):
        for item in node:
            yield from bodies(item)

count = 0
for body in bodies(vectors):
    (corpus / hashlib.sha256(body.encode()).hexdigest()[:16]).write_text(body)
    count += 1
print(f"{count} seeds in {corpus}")
