"""A detect-secrets plugin for keyward's tokens (SPEC §1, §8.3, §9.1), with their checksum:

    detect-secrets scan --plugin deploy/secret-scanning/keyward_detect_secrets.py .

Only tokens whose CRC-32 checksum is valid are reported, as `keyward scan` does.
"""

import re
import zlib

from detect_secrets.plugins.base import RegexBasedDetector

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PREFIXES = ("pk_test_partner_", "sk_test_partner_", "pk_partner_", "sk_partner_", "kw_service_")


def checksum_is_valid(token: str) -> bool:
    """prefix + 30 base62 characters + the base62 CRC-32 (6 characters) of both."""
    prefix = next((p for p in _PREFIXES if token.startswith(p)), None)
    if prefix is None or len(token) != len(prefix) + 36:
        return False
    value, digits = zlib.crc32(token[: len(prefix) + 30].encode("ascii")), ""
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits = _BASE62[digit] + digits
    return token[len(prefix) + 30:] == digits


class KeywardTokenDetector(RegexBasedDetector):
    """keyward partner keys (live and test) and service tokens."""

    secret_type = "keyward token"

    denylist = [
        re.compile(r"\b((?:pk|sk)_(?:test_)?partner_[0-9A-Za-z]{36}|kw_service_[0-9A-Za-z]{36})\b"),
    ]

    def analyze_string(self, string):
        for token in super().analyze_string(string):
            if checksum_is_valid(token):
                yield token
