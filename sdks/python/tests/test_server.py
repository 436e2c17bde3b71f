"""The package against a real `keyward serve`: onboarding through the mailbox, redeem, WhoAmI,
regeneration with an overlap, lost keys, the allow-list lock-out, stale_request with a skewed
clock, the verify API and its ASGI middleware (Starlette), and the gateway; sync and async."""

import asyncio
import itertools
import json
import os
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyward_partner import (
    AsyncPartnerClient,
    KeywardError,
    KeywardVerifyMiddleware,
    PartnerClient,
    Verifier,
)

_numbers = itertools.count(1)


def onboarded(keyward, **options):
    n = next(_numbers)
    code = f"PY-{os.getpid()}-{n}"
    email = f"ops-{os.getpid()}-{n}@python.example"
    PartnerClient.onboard(keyward.url, partner_code=code, email=email)
    credentials = PartnerClient.redeem(keyward.url, keyward.link(email), code)
    client = PartnerClient(keyward.url, credentials.public_key, credentials.secret_key, **options)
    return code, email, credentials, client


def test_onboard_redeem_and_who_am_i(keyward):
    code, _, credentials, client = onboarded(keyward)
    assert credentials.public_key.startswith("pk_partner_")
    assert "sk_partner_" not in repr(credentials), "the secret key is never printed"
    me = client.who_am_i()
    assert (me["partner_id"], me["partner_code"], me["key_expires_at"]) == (credentials.partner_id, code, None)
    assert abs(client.time()["server_time_ms"] - time.time() * 1000) < 60_000


def test_regeneration_with_an_overlap_then_retire_old_keys(keyward):
    code, email, credentials, client = onboarded(keyward)
    assert "emailed" in client.regenerate(email=email, partner_code=code, overlap_seconds=3600)
    renewed = PartnerClient.redeem(keyward.url, keyward.link(email, 2), code)
    assert renewed.partner_id == credentials.partner_id
    assert client.who_am_i()["key_expires_at"], "the old pair works on, as a retiring pair"
    with pytest.raises(KeywardError) as refused:
        client.retire_old_keys()
    assert (refused.value.status, refused.value.code) == (403, "key_retiring")
    current = PartnerClient(keyward.url, renewed.public_key, renewed.secret_key)
    assert current.retire_old_keys() == {"revoked": 1}
    with pytest.raises(KeywardError) as revoked:
        client.who_am_i()
    assert revoked.value.code == "revoked_key"


def test_lost_keys_answer_the_same_and_email_the_registered_address(keyward):
    code, email, _, _ = onboarded(keyward)
    matching = PartnerClient.lost_keys(keyward.url, email=email, partner_code=code)
    unknown = PartnerClient.lost_keys(keyward.url, email="x@nowhere.example", partner_code="NOBODY")
    assert matching == unknown
    renewed = PartnerClient.redeem(keyward.url, keyward.link(email, 2), code)
    assert PartnerClient(keyward.url, renewed.public_key, renewed.secret_key).who_am_i()


def test_the_allow_list_refuses_a_lock_out_unless_confirmed(keyward):
    _, _, _, client = onboarded(keyward)
    with pytest.raises(KeywardError) as refused:
        client.set_allowed_ips(["203.0.113.7"])
    assert (refused.value.status, refused.value.code) == (422, "would_lock_out")
    assert client.set_allowed_ips(["127.0.0.1", "198.51.100.7/24"]) == {"allowed_ips": ["127.0.0.1", "198.51.100.0/24"]}
    client.set_allowed_ips(["203.0.113.7"], confirm_lock_out=True)
    with pytest.raises(KeywardError) as locked:
        client.who_am_i()
    assert locked.value.code == "ip_not_allowed"


def test_a_skewed_clock_is_corrected_once_from_stale_request(keyward):
    skew = 10 * 60_000
    _, _, credentials, client = onboarded(keyward, now=lambda: time.time() * 1000 - skew)
    assert client.who_am_i()["partner_id"] == credentials.partner_id
    assert abs(client.clock_offset_ms - skew) < 60_000
    strict = PartnerClient(keyward.url, credentials.public_key, credentials.secret_key,
                           clock_sync=False, now=lambda: time.time() * 1000 - skew)
    with pytest.raises(KeywardError) as stale:
        strict.who_am_i()
    assert stale.value.code == "stale_request"
    assert isinstance(stale.value.data["skew_ms"], int)


def test_the_gateway_forwards_signed_requests_as_dicts_and_as_exact_text(keyward):
    _, _, credentials, client = onboarded(keyward)
    answer = client.request("/api/v1/PartnerP2P/Payout?ref=1", {"amount": "10.50", "big": 12345678901234567000})
    assert answer == {"paid_to": credentials.partner_id, "path": "/api/v1/PartnerP2P/Payout?ref=1"}
    # The exact text is sent as it is, with its signature (sign_raw) added.
    raw = '{ "amount" : 1.50, "note": "caf\\u00e9" }'
    assert client.request("/api/v1/PartnerP2P/Payout", raw)["paid_to"] == credentials.partner_id


def test_a_test_pair_made_listed_refused_by_the_gateway_and_revoked(keyward):
    code, email, credentials, client = onboarded(keyward)
    assert "emailed" in client.create_key(name="laptop", mode="test", expires_in_days=30)
    test = PartnerClient.redeem(keyward.url, keyward.link(email, 2), code)
    assert test.public_key.startswith("pk_test_partner_") and test.partner_id == credentials.partner_id
    laptop = PartnerClient(keyward.url, test.public_key, test.secret_key)
    me = laptop.who_am_i()
    assert (me["kind"], me["name"], me["mode"]) == ("restricted", "laptop", "test")
    assert me["key_expires_at"], "a 30-day key says when it expires"
    # Never forwarded to the live payment API; only the primary pair manages keys.
    with pytest.raises(KeywardError) as refused:
        laptop.request("/api/v1/PartnerP2P/Payout", {"amount": "1"})
    assert (refused.value.status, refused.value.code) == (403, "test_key_not_accepted")
    with pytest.raises(KeywardError) as managed:
        laptop.list_keys()
    assert managed.value.code == "insufficient_scope"

    keys = client.list_keys()
    assert sorted(k["kind"] for k in keys) == ["primary", "restricted"]
    assert test.public_key not in json.dumps(keys), "never a whole public key"
    restricted = next(k for k in keys if k["kind"] == "restricted")
    assert client.revoke_key(restricted["key_id"]) == {"revoked": 1}
    with pytest.raises(KeywardError) as revoked:
        laptop.who_am_i()
    assert revoked.value.code == "revoked_key"
    # A live public key with a test secret key is refused before anything is sent.
    with pytest.raises(ValueError):
        PartnerClient(keyward.url, credentials.public_key, test.secret_key)


def test_the_async_client(keyward):
    code, email, credentials, _ = onboarded(keyward)

    async def run():
        async with AsyncPartnerClient(keyward.url, credentials.public_key, credentials.secret_key) as client:
            me = await client.who_am_i()
            await client.regenerate(email=email, partner_code=code)
            return me

    assert asyncio.run(run())["partner_id"] == credentials.partner_id
    renewed = asyncio.run(AsyncPartnerClient.redeem(keyward.url, keyward.link(email, 2), code))
    assert renewed.partner_id == credentials.partner_id


def test_the_verify_api_and_the_asgi_middleware(keyward):
    _, _, credentials, _ = onboarded(keyward)
    token = keyward.operator("service-token", "create", f"python-{os.getpid()}")
    verifier = Verifier(keyward.internal_url, token)
    forged = '{"amount":"1","signature":"' + "0" * 128 + '"}'
    verdict = verifier.verify(authorization=f"Bearer {credentials.public_key}", body=forged, client_ip="127.0.0.1")
    assert verdict["valid"] is False and verdict["error"]["code"] == "invalid_signature"

    async def pay(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"paid_to": request.scope["keyward"]["partner_id"], "bytes": len(body)})

    app = KeywardVerifyMiddleware(Starlette(routes=[Route("/pay", pay, methods=["POST"])]),
                                  verifier=verifier, prefixes=["/pay"])
    service = PartnerClient("http://service", credentials.public_key, credentials.secret_key,
                            http=httpx.Client(transport=_AsgiInThread(app)))
    assert service.request("/pay", {"payout": 1})["paid_to"] == credentials.partner_id
    once = {"payout": 2, "timestamp": int(time.time() * 1000)}
    assert service.request("/pay", once)["paid_to"] == credentials.partner_id
    with pytest.raises(KeywardError) as replayed:
        service.request("/pay", once)
    assert (replayed.value.status, replayed.value.code) == (409, "replayed_request")
    with httpx.Client(transport=_AsgiInThread(app)) as raw:
        answer = raw.post("http://service/pay", content=forged, headers={"Authorization": f"Bearer {credentials.public_key}"})
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_signature")


class _AsgiInThread(httpx.BaseTransport):
    """Serves an ASGI app to a sync httpx client (httpx's ASGITransport is async only)."""

    def __init__(self, app):
        self.transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def run():
            async with httpx.AsyncClient(transport=self.transport) as client:
                response = await client.send(httpx.Request(request.method, request.url,
                                                           headers=request.headers, content=request.read()))
                await response.aread()
                return response

        response = asyncio.run(run())
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)


def test_the_payout_service_example(keyward):
    """examples/payout_service.py: the middleware in front of a Starlette app, under uvicorn."""
    import subprocess
    import sys

    from conftest import ROOT

    _, _, credentials, _ = onboarded(keyward)
    token = keyward.operator("service-token", "create", f"python-example-{os.getpid()}")
    env = {**os.environ, "PORT": "0", "KEYWARD_INTERNAL_URL": keyward.internal_url, "KEYWARD_SERVICE_TOKEN": token}
    example = subprocess.Popen([sys.executable, str(ROOT / "examples" / "payout_service.py")], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        url = example.stdout.readline().split()[-1]
        service = PartnerClient(url, credentials.public_key, credentials.secret_key)
        paid = service.request("/api/v1/PartnerP2P/Payout", {"amount": "10.50"})
        assert paid["data"] == {"partner_id": credentials.partner_id, "amount": "10.50"}
        with pytest.raises(KeywardError) as unsigned:
            PartnerClient(url, credentials.public_key, "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK").request(
                "/api/v1/PartnerP2P/Payout", {"amount": "1"})
        assert (unsigned.value.status, unsigned.value.code) == (401, "invalid_signature")
    finally:
        example.terminate()
        example.wait(timeout=10)


def test_a_partner_moved_in_with_legacy_keys_signs_with_them_when_asked(keyward, tmp_path):
    code = f"PYLEGACY-{os.getpid()}"
    public_key, secret_key = f"pk_partner_PyLegacy{os.getpid()}", f"sk_partner_PyLegacy{os.getpid()}S"
    rows = tmp_path / "import.jsonl"
    rows.write_text(json.dumps({"partner_code": code, "email": f"{code.lower()}@py.example",
                                "public_key": public_key, "secret_key": secret_key}) + "\n")
    report = keyward.operator("partner", "import", str(rows))
    assert "1 imported (1 with legacy keys)" in report
    assert secret_key not in report
    with pytest.raises(ValueError, match="public_key"):
        PartnerClient(keyward.url, public_key, secret_key)
    with PartnerClient(keyward.url, public_key, secret_key, legacy_keys=True) as client:
        assert client.who_am_i()["partner_code"] == code
        assert client.list_keys()[0]["legacy"] is True

    async def run():
        async with AsyncPartnerClient(keyward.url, public_key, secret_key, legacy_keys=True) as client:
            return await client.who_am_i()

    assert asyncio.run(run())["partner_code"] == code
