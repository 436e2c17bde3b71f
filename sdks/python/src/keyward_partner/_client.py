"""The partner's client (sync and async, on httpx), and the error every call raises."""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import httpx

from ._signing import append_member, is_legacy_key, is_well_formed_key, parse_as_javascript, sign, sign_raw, with_signature

__all__ = ["AsyncPartnerClient", "Credentials", "KeywardError", "PartnerClient", "PATHS"]

PATHS = {
    "onboard": "/api/v1/no-auth/PartnerP2P/OnboardPartner",
    "regenerate": "/api/v1/no-auth/PartnerP2P/GenKeysForPartner",
    "redeem": "/api/v1/no-auth/PartnerP2P/RedeemKeyLink",
    "who_am_i": "/api/v1/PartnerP2P/WhoAmI",
    "retire_old_keys": "/api/v1/PartnerP2P/RetireOldKeys",
    "set_allowed_ips": "/api/v1/PartnerP2P/SetAllowedIps",
    "create_key": "/api/v1/PartnerP2P/CreateKey",
    "list_keys": "/api/v1/PartnerP2P/ListKeys",
    "revoke_key": "/api/v1/PartnerP2P/RevokeKey",
    "time": "/api/v1/time",
    "verify": "/internal/v1/verify",
}

#: 429 and 503 are retried this many times at most, after what Retry-After says (capped).
MAX_RETRIES = 3
MAX_RETRY_WAIT = 10.0

Body = Union[Dict[str, Any], str]


class KeywardError(Exception):
    """An error answer of keyward (SPEC §4): ``status``, ``code``, ``message``, ``data``."""

    def __init__(self, status: int, code: str, message: str, data: Any = None,
                 errors: Optional[List[Dict[str, str]]] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.data = data
        self.errors = errors


@dataclass(frozen=True)
class Credentials:
    """The keys a one-time link reveals, once."""

    partner_id: str
    partner_code: str
    public_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print the secret key
        return f"Credentials(partner_id={self.partner_id!r}, partner_code={self.partner_code!r}, public_key={self.public_key!r}, secret_key=***)"


def _failure(response: httpx.Response) -> KeywardError:
    try:
        envelope = response.json()
    except ValueError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    return KeywardError(
        response.status_code,
        envelope.get("code") or "unexpected_answer",
        envelope.get("message") or f"HTTP {response.status_code}",
        envelope.get("data"),
        envelope.get("errors"),
    )


def _data(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json().get("data")
    raise _failure(response)


def _retry_wait(response: httpx.Response, attempt: int) -> Optional[float]:
    if response.status_code not in (429, 503) or attempt >= MAX_RETRIES:
        return None
    try:
        wanted = float(response.headers.get("retry-after", ""))
    except ValueError:
        wanted = 0.25 * 2**attempt
    return min(max(wanted, 0.0), MAX_RETRY_WAIT)


def _base(url: str) -> str:
    return url.rstrip("/")


def _token(link_or_token: str) -> str:
    return [part for part in link_or_token.split("/") if part][-1]


def _create_key_body(name: str, scopes: Sequence[str], mode: Optional[str],
                     expires_in_days: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if mode is not None:
        body["mode"] = mode
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    return body


def _credentials(data: Dict[str, Any]) -> Credentials:
    return Credentials(data["partner_id"], data["partner_code"], data["public_key"], data["secret_key"])


def _check_keys(public_key: str, secret_key: str) -> None:
    """Raises unless the pair is of SPEC §1's format, both halves of the same mode."""
    # A live pair, or a test pair (SPEC §8.3): both halves of the same mode.
    live = is_well_formed_key(public_key, "pk_partner_")
    if not live and not is_well_formed_key(public_key, "pk_test_partner_"):
        raise ValueError("public_key is not a well-formed public key (pk_partner_… or pk_test_partner_…): "
                         "check for a typo or a truncated key")
    secret_prefix = "sk_partner_" if live else "sk_test_partner_"
    if not is_well_formed_key(secret_key, secret_prefix):
        raise ValueError(f"secret_key is not a well-formed secret key ({secret_prefix}…) of the public key's mode: "
                         "check for a typo, a truncated key, or a live and a test key mixed")


class _Signer:
    """What both clients share: the keys, the clock, and how a body is signed and sent."""

    def __init__(self, base_url: str, public_key: str, secret_key: str, timestamp: bool,
                 clock_sync: bool, now: Optional[Callable[[], float]], legacy_keys: bool) -> None:
        legacy = legacy_keys and is_legacy_key(public_key, "pk_partner_") and is_legacy_key(secret_key, "sk_partner_")
        if not legacy:
            _check_keys(public_key, secret_key)
        self.base_url = _base(base_url)
        self.public_key = public_key
        self._secret_key = secret_key
        self.timestamp = timestamp
        self.clock_sync = clock_sync
        self._now = now or (lambda: _time.time() * 1000)
        #: Milliseconds to add to the local clock (learned from the server).
        self.clock_offset_ms = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, public_key={self.public_key!r})"

    def _prepare(self, body: Body) -> str:
        """The text to send: the body with a timestamp (unless it has one) and its signature."""
        stamp = round(self._now() + self.clock_offset_ms)
        if isinstance(body, str):
            members = parse_as_javascript(body)
            if not isinstance(members, dict):
                raise ValueError("the body must be a JSON object")
            if "signature" in members:
                raise ValueError("the body already has a signature: give it without one")
            raw = body
            if self.timestamp and "timestamp" not in members:
                raw = append_member(raw, "timestamp", stamp)
            return with_signature(raw, sign_raw(raw, self._secret_key))
        payload = {k: v for k, v in body.items() if k != "signature"}
        if self.timestamp and "timestamp" not in payload:
            payload["timestamp"] = stamp
        payload["signature"] = sign(payload, self._secret_key)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def _headers(self) -> Dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.public_key}"}

    def _correct_clock(self, response: httpx.Response, body: Body, corrected: bool) -> bool:
        """Whether to try again after correcting the clock from a stale_request answer."""
        if corrected or not self.clock_sync or not self.timestamp or response.status_code != 401:
            return False
        if isinstance(body, dict) and "timestamp" in body:
            return False
        try:
            envelope = response.json()
        except ValueError:
            return False
        if not isinstance(envelope, dict) or envelope.get("code") != "stale_request":
            return False
        server_time = (envelope.get("data") or {}).get("server_time_ms")
        if not isinstance(server_time, (int, float)):
            return False
        self.clock_offset_ms = server_time - self._now()
        return True


class PartnerClient(_Signer):
    """A partner's client: every call signed with its keys. Errors raise :class:`KeywardError`.

    ``timestamp`` adds a ``timestamp`` to each body (default on); ``clock_sync`` corrects the
    clock by the server's once on ``stale_request`` and tries again (default on); ``now`` is
    the local clock in milliseconds (tests). ``legacy_keys`` accepts a live pair moved in from
    the exchange's previous system (SPEC §10.2: ``pk_partner_``/``sk_partner_`` + 8-128 letters
    and digits), which has no checksum to catch a typo here (default off)."""

    def __init__(self, base_url: str, public_key: str, secret_key: str, timestamp: bool = True,
                 clock_sync: bool = True, now: Optional[Callable[[], float]] = None,
                 http: Optional[httpx.Client] = None, legacy_keys: bool = False) -> None:
        super().__init__(base_url, public_key, secret_key, timestamp, clock_sync, now, legacy_keys)
        self._http = http or httpx.Client(timeout=30.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PartnerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _post(self, path: str, body: Body) -> httpx.Response:
        corrected = False
        while True:
            response = _send(self._http, "POST", f"{self.base_url}{path}",
                             content=self._prepare(body).encode("utf-8"), headers=self._headers())
            if self._correct_clock(response, body, corrected):
                corrected = True
                continue
            return response

    def request(self, path: str, body: Optional[Body] = None) -> Any:
        """Signs ``body`` (a dict, or the exact JSON text to send) and POSTs it to ``path``:
        any signed route, including the payment API behind the gateway. Returns the answer's
        JSON."""
        response = self._post(path, {} if body is None else body)
        if response.is_success:
            return response.json()
        raise _failure(response)

    def who_am_i(self) -> Dict[str, Any]:
        return _data(self._post(PATHS["who_am_i"], {}))

    def regenerate(self, *, email: str, partner_code: str, overlap_seconds: Optional[int] = None) -> str:
        body: Dict[str, Any] = {"email": email, "partner_code": partner_code}
        if overlap_seconds is not None:
            body["overlap_seconds"] = overlap_seconds
        return _message(self._post(PATHS["regenerate"], body))

    def retire_old_keys(self) -> Dict[str, Any]:
        return _data(self._post(PATHS["retire_old_keys"], {}))

    def set_allowed_ips(self, allowed_ips: List[str], confirm_lock_out: bool = False) -> Dict[str, Any]:
        body: Dict[str, Any] = {"allowed_ips": list(allowed_ips)}
        if confirm_lock_out:
            body["confirm_lock_out"] = True
        return _data(self._post(PATHS["set_allowed_ips"], body))

    def create_key(self, *, name: str, scopes: Sequence[str] = (), mode: Optional[str] = None,
                   expires_in_days: Optional[int] = None) -> str:
        """Asks for a restricted or test pair (SPEC §8.1), signed with the primary pair: a
        one-time link to it is emailed to the registered address (redeem it with
        :meth:`redeem`). ``scopes`` among the exchange's; ``mode`` ``"live"`` (default) or
        ``"test"``; ``expires_in_days`` 1–366. Returns the server's message."""
        return _message(self._post(PATHS["create_key"], _create_key_body(name, scopes, mode, expires_in_days)))

    def list_keys(self) -> List[Dict[str, Any]]:
        """Every pair that works (``key_id``, ``kind``, ``name``, ``hint``, ``scopes``, ``mode``,
        ``created_at``, ``expires_at``, ``last_used_at``, ``state``): never a secret."""
        return _data(self._post(PATHS["list_keys"], {}))["keys"]

    def revoke_key(self, key_id: str) -> Dict[str, Any]:
        """Revokes one restricted pair, on every node when it returns: ``{"revoked": n}``."""
        return _data(self._post(PATHS["revoke_key"], {"key_id": key_id}))

    def time(self) -> Dict[str, Any]:
        return _data(_send(self._http, "GET", f"{self.base_url}{PATHS['time']}"))

    @staticmethod
    def onboard(base_url: str, *, partner_code: str, email: str) -> str:
        return _message(_post_unsigned(base_url, PATHS["onboard"], {"partner_code": partner_code, "email": email}))

    @staticmethod
    def redeem(base_url: str, link_or_token: str, partner_code: str) -> Credentials:
        """Redeems a one-time link (the link, or its token): the keys, shown once."""
        body = {"token": _token(link_or_token), "partner_code": partner_code}
        return _credentials(_data(_post_unsigned(base_url, PATHS["redeem"], body)))

    @staticmethod
    def lost_keys(base_url: str, *, email: str, partner_code: str) -> str:
        """Lost keys: the same answer whether or not the pair matches (no enumeration)."""
        return _message(_post_unsigned(base_url, PATHS["regenerate"], {"email": email, "partner_code": partner_code}))


def _post_unsigned(base_url: str, path: str, body: Dict[str, Any]) -> httpx.Response:
    """A request without keys (onboarding, redemption, lost keys)."""
    with httpx.Client(timeout=30.0) as http:
        return _send(http, "POST", f"{_base(base_url)}{path}", json=body)


async def _post_unsigned_async(base_url: str, path: str, body: Dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30.0) as http:
        return await _send_async(http, "POST", f"{_base(base_url)}{path}", json=body)


def _message(response: httpx.Response) -> str:
    """The message of a successful answer whose data is null; an error raises."""
    _data(response)
    return response.json()["message"]


def _send(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    attempt = 0
    while True:
        response = http.request(method, url, **kwargs)
        wait = _retry_wait(response, attempt)
        if wait is None:
            return response
        _time.sleep(wait)
        attempt += 1


async def _send_async(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    import asyncio

    attempt = 0
    while True:
        response = await http.request(method, url, **kwargs)
        wait = _retry_wait(response, attempt)
        if wait is None:
            return response
        await asyncio.sleep(wait)
        attempt += 1


class AsyncPartnerClient(_Signer):
    """:class:`PartnerClient` for asyncio: the same calls, awaited."""

    def __init__(self, base_url: str, public_key: str, secret_key: str, timestamp: bool = True,
                 clock_sync: bool = True, now: Optional[Callable[[], float]] = None,
                 http: Optional[httpx.AsyncClient] = None, legacy_keys: bool = False) -> None:
        super().__init__(base_url, public_key, secret_key, timestamp, clock_sync, now, legacy_keys)
        self._http = http or httpx.AsyncClient(timeout=30.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncPartnerClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _post(self, path: str, body: Body) -> httpx.Response:
        corrected = False
        while True:
            response = await _send_async(self._http, "POST", f"{self.base_url}{path}",
                                         content=self._prepare(body).encode("utf-8"), headers=self._headers())
            if self._correct_clock(response, body, corrected):
                corrected = True
                continue
            return response

    async def request(self, path: str, body: Optional[Body] = None) -> Any:
        response = await self._post(path, {} if body is None else body)
        if response.is_success:
            return response.json()
        raise _failure(response)

    async def who_am_i(self) -> Dict[str, Any]:
        return _data(await self._post(PATHS["who_am_i"], {}))

    async def regenerate(self, *, email: str, partner_code: str, overlap_seconds: Optional[int] = None) -> str:
        body: Dict[str, Any] = {"email": email, "partner_code": partner_code}
        if overlap_seconds is not None:
            body["overlap_seconds"] = overlap_seconds
        return _message(await self._post(PATHS["regenerate"], body))

    async def retire_old_keys(self) -> Dict[str, Any]:
        return _data(await self._post(PATHS["retire_old_keys"], {}))

    async def set_allowed_ips(self, allowed_ips: List[str], confirm_lock_out: bool = False) -> Dict[str, Any]:
        body: Dict[str, Any] = {"allowed_ips": list(allowed_ips)}
        if confirm_lock_out:
            body["confirm_lock_out"] = True
        return _data(await self._post(PATHS["set_allowed_ips"], body))

    async def create_key(self, *, name: str, scopes: Sequence[str] = (), mode: Optional[str] = None,
                         expires_in_days: Optional[int] = None) -> str:
        return _message(await self._post(PATHS["create_key"], _create_key_body(name, scopes, mode, expires_in_days)))

    async def list_keys(self) -> List[Dict[str, Any]]:
        return _data(await self._post(PATHS["list_keys"], {}))["keys"]

    async def revoke_key(self, key_id: str) -> Dict[str, Any]:
        return _data(await self._post(PATHS["revoke_key"], {"key_id": key_id}))

    async def time(self) -> Dict[str, Any]:
        return _data(await _send_async(self._http, "GET", f"{self.base_url}{PATHS['time']}"))

    @staticmethod
    async def redeem(base_url: str, link_or_token: str, partner_code: str) -> Credentials:
        body = {"token": _token(link_or_token), "partner_code": partner_code}
        return _credentials(_data(await _post_unsigned_async(base_url, PATHS["redeem"], body)))

    @staticmethod
    async def lost_keys(base_url: str, *, email: str, partner_code: str) -> str:
        body = {"email": email, "partner_code": partner_code}
        return _message(await _post_unsigned_async(base_url, PATHS["regenerate"], body))
