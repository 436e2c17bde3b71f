"""Every case of testdata/signatures.json (made with Node's crypto and JSON) through sign /
sign_canonical from the parsed body, and every key-format case."""

import json

import pytest

from keyward_partner import is_well_formed_key, message, message_canonical, sign, sign_canonical
from keyward_partner._signing import parse_as_javascript

from conftest import VECTORS

VECTORS_JSON = json.loads(VECTORS.read_text())
CASES = [c for c in VECTORS_JSON["signature_cases"] if "message_as_sent" in c]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_signature_case(case):
    # What was signed (the template, before any mutation), parsed as a client holds it: with
    # Python's json and with JavaScript's number semantics alike.
    template = case.get("template", case["body"])
    for signed in (json.loads(template), parse_as_javascript(template)):
        assert message(signed) == case["message_as_sent"]
        assert message_canonical(signed) == case["message_jcs"]
    sent = json.loads(case["body"])
    form = sign_canonical if case.get("signed_form") == "jcs" else sign
    if case["expect"] == "valid":
        assert form(sent, case["secret_key"]) == sent["signature"].lower()
    if case["expect"] == "invalid_signature":
        assert form(sent, case["secret_key"]) != str(sent["signature"]).lower()


def test_key_format_cases():
    for case in VECTORS_JSON["key_format_cases"]:
        prefix = "pk_partner_" if case["key"].startswith("pk_") else "sk_partner_"
        assert is_well_formed_key(case["key"], prefix) == case["valid"], case["key"]
