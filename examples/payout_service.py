# A payout API that authenticates partners through keyward's verify API with the
# keyward-partner package (`pip install ./sdks/python`), as ASGI middleware around Starlette,
# served by uvicorn.
import json
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyward_partner import KeywardVerifyMiddleware, Verifier


async def payout(request: Request) -> JSONResponse:
    body = json.loads(await request.body())  # exactly what the partner signed
    partner = request.scope["keyward"]
    return JSONResponse({"success": True, "message": "payout accepted",
                         "data": {"partner_id": partner["partner_id"], "amount": body.get("amount")}})


verifier = Verifier(os.environ.get("KEYWARD_INTERNAL_URL", "http://127.0.0.1:8081"),
                    os.environ.get("KEYWARD_SERVICE_TOKEN", ""))  # checked here: fails at start
app = KeywardVerifyMiddleware(Starlette(routes=[Route("/api/v1/PartnerP2P/Payout", payout, methods=["POST"])]),
                              verifier=verifier, prefixes=["/api/v1/PartnerP2P/"])

if __name__ == "__main__":
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", int(os.environ.get("PORT", "9004"))))  # PORT=0: any free port
    # Listening before it says so: a client that connects at once waits in the backlog for
    # uvicorn instead of being refused (uvicorn only listens once it has started).
    listener.listen(128)
    print(f"payout API listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
