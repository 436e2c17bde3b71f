"""keyward-partner: sign and send requests to a keyward partner API, and verify partners'
requests in the exchange's own services.

Signing needs the standard library only (:func:`sign`, :func:`sign_canonical`,
:func:`sign_raw`); the clients and the verifier use httpx.
"""

from ._client import PATHS, AsyncPartnerClient, Credentials, KeywardError, PartnerClient
from ._signing import (
    is_well_formed_key,
    message,
    message_canonical,
    message_of_raw,
    sign,
    sign_canonical,
    sign_raw,
    with_signature,
)
from ._verify import KeywardVerifyMiddleware, Verifier

__version__ = "0.1.0"

__all__ = [
    "AsyncPartnerClient",
    "Credentials",
    "KeywardError",
    "KeywardVerifyMiddleware",
    "PATHS",
    "PartnerClient",
    "Verifier",
    "is_well_formed_key",
    "message",
    "message_canonical",
    "message_of_raw",
    "sign",
    "sign_canonical",
    "sign_raw",
    "with_signature",
]
