"""The request signature (SPEC §2), with the standard library only.

The message the server checks is what Node's ``JSON.stringify(JSON.parse(text))`` gives for
the body without its top-level ``signature``: members in the order given, no whitespace,
every number as JavaScript writes a double (``1e-7``, ``1e+21``, ``12345678901234567000``),
strings escaped as ``JSON.stringify`` escapes them (``"``, ``\\`` and control characters
only; every other character raw). Python's ``json.dumps`` differs on each of these, so this
module writes the message itself.

Where the server and Node differ, this module writes what the server checks: members keep
the order given even when their names are array indices (``"0"``, ``"42"``, which JavaScript
moves first), and a lone surrogate is refused, as the server refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import zlib
from typing import Any, Dict, List, Tuple

__all__ = [
    "sign",
    "sign_canonical",
    "sign_raw",
    "message",
    "message_canonical",
    "message_of_raw",
    "with_signature",
    "is_well_formed_key",
]

_SIGNATURE = "signature"


def ecmascript_number(value: float) -> str:
    """``Number.prototype.toString`` of a double, as ``JSON.stringify`` writes it."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError("NaN and Infinity are not JSON: send such a value as a string")
    if value == 0:
        return "0"
    if value < 0:
        return "-" + ecmascript_number(-value)
    # repr gives the shortest decimal that reads back as the same double, as ECMAScript asks.
    mantissa, _, exponent = repr(value).partition("e")
    integer, _, fraction = mantissa.partition(".")
    digits = (integer + fraction).lstrip("0")
    # The value is 0.DIGITS x 10^n.
    n = len(integer) + (int(exponent) if exponent else 0)
    n -= len(integer + fraction) - len((integer + fraction).lstrip("0"))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(e)}"


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("a lone surrogate is not text: keyward refuses it (invalid_json)")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(name: Any) -> str:
    # Member names as json.dumps turns them into strings (then JSON.parse reads them back).
    if isinstance(name, str):
        return name
    if name is True:
        return "true"
    if name is False:
        return "false"
    if name is None:
        return "null"
    if isinstance(name, int):
        return str(name)
    if isinstance(name, float):
        return float.__repr__(name)
    raise TypeError(f"a member name must be a string, not {type(name).__name__}")


def _write(value: Any, out: List[str], sort: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        # JSON.parse reads every number as a double: beyond 2^53 digits are lost.
        out.append(str(value) if abs(value) < 2**53 else ecmascript_number(float(value)))
    elif isinstance(value, float):
        out.append(ecmascript_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, sort)
        out.append("]")
    elif isinstance(value, dict):
        members: List[Tuple[str, Any]] = [(_key(k), v) for k, v in value.items()]
        _members(members, out, sort)
    else:
        raise TypeError(
            f"{type(value).__name__} is not JSON: send amounts and other exact values as strings"
        )


def _members(members: List[Tuple[str, Any]], out: List[str], sort: bool) -> None:
    if sort:
        # RFC 8785 sorts by UTF-16 code units; big-endian UTF-16 bytes compare the same way.
        members = sorted(members, key=lambda m: m[0].encode("utf-16-be", "surrogatepass"))
    out.append("{")
    for i, (name, item) in enumerate(members):
        if i:
            out.append(",")
        out.append(_string(name))
        out.append(":")
        _write(item, out, sort)
    out.append("}")


def _without_signature(body: Dict[str, Any]) -> List[Tuple[str, Any]]:
    if not isinstance(body, dict):
        raise TypeError("a keyward request body is a JSON object (a dict)")
    return [(_key(k), v) for k, v in body.items() if _key(k) != _SIGNATURE]


def message(body: Dict[str, Any]) -> str:
    """The as-sent message of ``body``: what Node's JSON.stringify writes, without ``signature``."""
    out: List[str] = []
    _members(_without_signature(body), out, sort=False)
    return "".join(out)


def message_canonical(body: Dict[str, Any]) -> str:
    """The RFC 8785 (JCS) message: the same, with members sorted at every depth."""
    out: List[str] = []
    _members(_without_signature(body), out, sort=True)
    return "".join(out)


def _hmac(text: str, secret_key: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), text.encode("utf-8"), hashlib.sha512).hexdigest()


def sign(body: Dict[str, Any], secret_key: str) -> str:
    """Lower-case hex HMAC-SHA512 of the as-sent message of ``body``, keyed with the whole
    secret key (``sk_partner_…`` included)."""
    return _hmac(message(body), secret_key)


def sign_canonical(body: Dict[str, Any], secret_key: str) -> str:
    """The same over the RFC 8785 message (the server accepts either)."""
    return _hmac(message_canonical(body), secret_key)


def _pairs(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a member name appears twice in one object: the server refuses it (duplicate_member)")
    return dict(pairs)


def parse_as_javascript(raw: str) -> Any:
    """``JSON.parse`` of ``raw``: every number a double, a repeated member name refused."""
    return json.loads(raw, parse_int=float, parse_float=float, object_pairs_hook=_pairs)


def message_of_raw(raw: str) -> str:
    """The §2 as-sent message the server computes from the exact text ``raw``."""
    body = parse_as_javascript(raw)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return message(body)


def sign_raw(raw: str, secret_key: str) -> str:
    """Signs a body given as the exact text that will be sent (without ``signature``): the
    message is the one the server computes from that text, so what is sent and what is signed
    cannot drift. Add the signature with :func:`with_signature`."""
    return _hmac(message_of_raw(raw), secret_key)


def with_signature(raw: str, signature: str) -> str:
    """``raw`` (a JSON object's text) with a top-level ``signature`` member added last."""
    return append_member(raw, _SIGNATURE, signature)


def append_member(raw: str, name: str, value: Any) -> str:
    """``raw`` (a JSON object's text, kept as it is) with ``"name": value`` added last."""
    text = raw.rstrip()
    if not text.endswith("}"):
        raise ValueError("the body must be a JSON object")
    inner = text[:-1].rstrip()
    separator = "" if inner.endswith("{") else ","
    return f"{inner}{separator}{json.dumps(name)}:{json.dumps(value)}}}"


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int, width: int) -> str:
    out = ""
    while n:
        n, digit = divmod(n, 62)
        out = _BASE62[digit] + out
    return out.rjust(width, "0")


def is_legacy_key(key: str, prefix: str) -> bool:
    """Whether ``key`` has the shape of a key moved in from an exchange's previous system
    (SPEC §10.2): ``pk_partner_`` or ``sk_partner_`` and 8 to 128 letters and digits, no
    checksum."""
    if prefix not in ("pk_partner_", "sk_partner_") or not isinstance(key, str) or not key.startswith(prefix):
        return False
    rest = key[len(prefix):]
    return 8 <= len(rest) <= 128 and all(c in _BASE62 for c in rest)


def is_well_formed_key(key: str, prefix: str) -> bool:
    """Whether ``key`` is ``prefix`` + 30 base62 characters + their 6-character CRC-32
    checksum (SPEC §1): ``pk_partner_``, ``sk_partner_``, ``kw_service_``."""
    if not isinstance(key, str) or not key.startswith(prefix) or len(key) != len(prefix) + 36:
        return False
    rest = key[len(prefix):]
    if any(c not in _BASE62 for c in rest):
        return False
    checksum = zlib.crc32((prefix + rest[:30]).encode("ascii")) & 0xFFFFFFFF
    return rest[30:] == _base62(checksum, 6)
