#!/usr/bin/env python3
"""Writes README.md from README.template.md, quoting each @@examples/…@@ file as it is."""
import pathlib, re

root = pathlib.Path(__file__).resolve().parent.parent
template = (root / "README.template.md").read_text()
readme = re.sub(r"@@([^@]+)@@", lambda m: (root / m.group(1)).read_text().rstrip("\n"), template)
(root / "README.md").write_text(readme)
