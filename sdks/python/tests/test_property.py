"""Generated bodies (escapes, control and astral characters, every number form, nesting): the Python message equals what Node's JSON.stringify(JSON.parse(text)) writes, both
from a dict (`message`) and from the exact text (`message_of_raw`)."""

import json
import os
import random
import shutil
import subprocess

import pytest

from keyward_partner import message, message_canonical, message_of_raw

NODE = shutil.which("node")
CHARS = ["a", "Z", "0", " ", '"', "\\", "/", "\n", "\t", "\b", "\f", "\r", "\x00", "\x01", "\x1f",
         "\x7f", "é", "Zoë", "€", "\u2028", "\ufeff", "🚀", "𝄞"]


def number(rng: random.Random):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randrange(-(10**6), 10**6)
    if kind == 1:
        return rng.randrange(-(10**25), 10**25)  # beyond 2^53: digits JSON.parse loses
    if kind == 2:
        return rng.choice([0.0, -0.0, 0.1, 1.5, 1e21, 1e-7, 1e-6, 123e-20, 5e-324, 1.7976931348623157e308])
    if kind == 3:
        return rng.uniform(-1, 1) * 10 ** rng.randrange(-30, 30)
    if kind == 4:
        return float(rng.randrange(10**17))
    if kind == 5:
        return rng.random()
    if kind == 6:
        return 2**53 + rng.randrange(-3, 4)
    return rng.uniform(-1e6, 1e6)


def value(rng: random.Random, depth: int):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return number(rng)
    if kind == 1:
        return "".join(rng.choice(CHARS) for _ in range(rng.randrange(6)))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return number(rng)
    if kind == 4:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return body(rng, depth + 1)


def name(rng: random.Random) -> str:
    text = "".join(rng.choice(CHARS) for _ in range(rng.randrange(1, 4)))
    # JavaScript moves array-index names ("0", "42") first; keyward keeps the order received
    # (docs/decisions.md), and so does this package: such names are compared elsewhere.
    return "k" + text if text.isdigit() and (text == "0" or not text.startswith("0")) else text


def body(rng: random.Random, depth: int = 0):
    return {name(rng): value(rng, depth) for _ in range(rng.randrange(5))}


NODE_SCRIPT = r"""
const canonical = (v) => Array.isArray(v) ? `[${v.map(canonical).join(",")}]`
  : v !== null && typeof v === "object"
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`
    : JSON.stringify(v);
const texts = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(texts.map((t) => { const o = JSON.parse(t); delete o.signature; return [JSON.stringify(o), canonical(o)]; })));
"""


@pytest.mark.skipif(NODE is None and not os.environ.get("KEYWARD_STRICT_TESTS"), reason="needs node")
def test_messages_match_node_for_generated_bodies():
    rng = random.Random(20261204)
    bodies = [body(rng) for _ in range(400)]
    # The text a Python client sends (json.dumps escapes non-ASCII, which JSON.parse undoes).
    texts = [json.dumps(b) for b in bodies] + [json.dumps(b, ensure_ascii=False) for b in bodies[:50]]
    out = subprocess.run([NODE or "node", "-e", NODE_SCRIPT], input=json.dumps(texts),
                         capture_output=True, text=True, check=True)
    expected = json.loads(out.stdout)
    for i, (text, (as_sent, canonical)) in enumerate(zip(texts, expected)):
        source = bodies[i % len(bodies)] if i < len(bodies) else bodies[i - len(bodies)]
        assert message(source) == as_sent, text
        assert message_canonical(source) == canonical, text
        assert message_of_raw(text) == as_sent, text


def test_array_index_names_keep_the_order_given_as_the_server_does():
    assert message({"b": 1, "0": 2}) == '{"b":1,"0":2}'
    assert message_of_raw('{"b":1,"0":2}') == '{"b":1,"0":2}'


def test_a_lone_surrogate_is_refused_as_the_server_refuses_it():
    with pytest.raises(ValueError):
        message({"a": "\ud800"})
