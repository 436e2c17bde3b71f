#!/usr/bin/env python3
"""Writes README.md and docs/partners.md from their .template.md, quoting each @@examples/…@@
file as it is (a test checks that they stay in step)."""
import pathlib, re

root = pathlib.Path(__file__).resolve().parent.parent
for template, out in [
    ("README.template.md", "README.md"),
    ("docs/partners.template.md", "docs/partners.md"),
    ("docs/integration.template.md", "docs/integration.md"),
]:
    text = (root / template).read_text()
    text = re.sub(r"@@([^@]+)@@", lambda m: (root / m.group(1)).read_text().rstrip("\n"), text)
    header = f"<!-- Generated from {template} by scripts/render-docs.py: edit the template, then run the script. -->\n"
    (root / out).write_text(header + text)
