"""For the exchange's own services: the verify API (SPEC §7.1) and an ASGI middleware."""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, Dict, Iterable, List, MutableMapping, Optional

import httpx

from ._client import PATHS, KeywardError, _data, _send, _send_async
from ._signing import is_well_formed_key

__all__ = ["KeywardVerifyMiddleware", "Verifier"]

log = logging.getLogger("keyward_partner")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Verifier:
    """The verify API's client. ``url`` is keyward's internal listener, ``token`` this
    service's ``kw_service_…`` token (``keyward service-token create NAME``)."""

    def __init__(self, url: str, token: str) -> None:
        if not is_well_formed_key(token, "kw_service_"):
            raise ValueError("token is not a keyward service token (kw_service_…): create one with `keyward service-token create NAME`")
        self.url = url.rstrip("/")
        self._token = token

    def __repr__(self) -> str:
        return f"Verifier(url={self.url!r})"

    def _request(self, authorization: Optional[str], body: Any, client_ip: Optional[str],
                 single_use: bool, required_scopes: Optional[List[str]]) -> Dict[str, Any]:
        if isinstance(body, (bytes, bytearray)):
            body = body.decode("utf-8", "replace")
        request: Dict[str, Any] = {"authorization": authorization, "body": body,
                                   "client_ip": client_ip, "single_use": single_use}
        if required_scopes is not None:
            request["required_scopes"] = list(required_scopes)
        return request

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def verify(self, *, authorization: Optional[str], body: Any, client_ip: Optional[str] = None,
               single_use: bool = False, required_scopes: Optional[List[str]] = None) -> Dict[str, Any]:
        """Verifies one partner request as it arrived: ``{"valid": True, "partner_id": …}`` or
        ``{"valid": False, "error": {status, code, message, data}}`` (relay it unchanged). A
        refused service token raises :class:`KeywardError`: that is not the partner's doing."""
        with httpx.Client(timeout=10.0) as http:
            response = _send(http, "POST", f"{self.url}{PATHS['verify']}", headers=self._headers(),
                             json=self._request(authorization, body, client_ip, single_use, required_scopes))
        return _data(response)

    async def verify_async(self, *, authorization: Optional[str], body: Any, client_ip: Optional[str] = None,
                           single_use: bool = False, required_scopes: Optional[List[str]] = None) -> Dict[str, Any]:
        """:meth:`verify` for asyncio."""
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await _send_async(http, "POST", f"{self.url}{PATHS['verify']}", headers=self._headers(),
                                         json=self._request(authorization, body, client_ip, single_use, required_scopes))
        return _data(response)


async def _json_response(send: Send, status: int, payload: Dict[str, Any]) -> None:
    data = json.dumps(payload).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class KeywardVerifyMiddleware:
    """ASGI middleware (Starlette, FastAPI, any ASGI app): requests under ``prefixes`` are
    verified through keyward before the app sees them. An invalid one is answered with
    keyward's status and envelope, unchanged; a valid one reaches the app with
    ``scope["keyward"] = {"partner_id", "partner_code", "key_id", "key_created_at",
    "key_expires_at", …}`` and its body intact.

    ``single_use``: default every method but GET, HEAD and OPTIONS (a repeated payout gets
    409 ``replayed_request``). ``client_ip(scope)``: default the peer address; behind a proxy,
    give the address it vouches for."""

    def __init__(self, app: Any, *, verifier: Verifier, prefixes: Iterable[str] = ("/",),
                 single_use: Optional[bool] = None, required_scopes: Optional[List[str]] = None,
                 client_ip: Optional[Callable[[Scope], Optional[str]]] = None) -> None:
        self.app = app
        self.verifier = verifier
        self.prefixes = tuple(prefixes)
        self.single_use = single_use
        self.required_scopes = required_scopes
        self.client_ip = client_ip or (lambda scope: (scope.get("client") or (None,))[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        single_use = self.single_use if self.single_use is not None else scope["method"] not in ("GET", "HEAD", "OPTIONS")
        try:
            result = await self.verifier.verify_async(
                authorization=headers.get("authorization"), body=body, client_ip=self.client_ip(scope),
                single_use=single_use, required_scopes=self.required_scopes)
        except (KeywardError, httpx.HTTPError) as error:
            # Our own token refused, or keyward unreachable: the partner can do nothing about it.
            log.error("keyward verify: %s", error)
            await _json_response(send, 503, {"success": False, "message": "The service is temporarily unavailable. Try again shortly.",
                                             "data": None, "code": "unavailable"})
            return
        if not result["valid"]:
            error = dict(result["error"])
            status = error.pop("status")
            await _json_response(send, status, {"success": False, **error})
            return
        scope = dict(scope)
        scope["keyward"] = {k: v for k, v in result.items() if k != "valid"}
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
