"""The admission gate: the request-level check of :mod:`sluiceway.server.admission` in front
of every route, as ASGI middleware.

Every HTTP request and WebSocket handshake that reaches the application passes
:meth:`Admission.check_request` first (a foreign ``Host``: 421; a write or a handshake from a
page of another origin: 403), before any route reads a byte of its body. A refused handshake
is answered with an HTTP response (the ASGI ``websocket.http.response`` extension) where the
server offers it, else closed before it is accepted (403). The native paths ask the same
question themselves (:mod:`sluiceway.server.native`, :mod:`sluiceway.server.native_ws`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from sluiceway.server.access import FACTS_KEY
from sluiceway.server.admission import Admission, Refusal, RequestFacts
from sluiceway.server.errors import error_response


class AdmissionGate:
    """ASGI middleware: requests :meth:`Admission.check_request` refuses get its refusal."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        facts = scope[FACTS_KEY] = RequestFacts.from_scope(scope)
        refused = self.admission.check_request(facts)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await error_response(refused.status, refused.code, refused.detail)(scope, receive, send)
        else:
            await refuse_handshake(scope, receive, send, refused)


async def refuse_handshake(scope: Scope, receive: Receive, send: Send, refused: Refusal) -> None:
    """Answer a WebSocket handshake with the refusal, as JSON when the server can send an
    HTTP response to it."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        response = error_response(refused.status, refused.code, refused.detail)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008})
