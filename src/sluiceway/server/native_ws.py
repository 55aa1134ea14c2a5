"""WebSocket frames written straight to the socket under ``sluiceway serve``.

Through ASGI, every frame a connection sends is a task switch into its writer and an ``await
send(...)``, in which the WebSocket library frames the text again for every connection. A
fan-out to 1,000 connections is then 1,000 task switches per publication. So the server's
WebSocket protocol (:mod:`sluiceway.uvicorn_adapter.websocket`) hands the application
(``scope["extensions"][DIRECT_WRITER]``) a direct writer: the connection writes a text frame
(server frames are not masked, so its header depends only on the length) with
``transport.write``, from the hub's callback, with no task switch. Flow control is the
transport's ``pause_writing``/``resume_writing``; everything else (the handshake, reading,
pings, the closing handshake) stays the server's.

The endpoint is called without the application's middleware, so the handshake is admitted
here, by the same check the admission gate makes (:mod:`sluiceway.server.admission`): a
foreign ``Host`` or a page of another origin gets the gate's refusal, as an HTTP response
(:func:`handshake_app`).
"""

from __future__ import annotations

import functools
from typing import Any

from sluiceway.centrifugo.connection import DIRECT_WRITER
from sluiceway.centrifugo.endpoint import CentrifugoEndpoint
from sluiceway.server.admission import Admission, Refusal, RequestFacts
from sluiceway.server.gate import refuse_handshake
from sluiceway.uvicorn_adapter import websocket

#: Where ``sluiceway serve`` serves the WebSocket endpoint.
WEBSOCKET_PATH = "/connection/websocket"


def handshake_app(
    scope: Any, endpoint: CentrifugoEndpoint | None, admission: Admission | None
) -> Any | None:
    """The ASGI app to call for an accepted handshake, instead of the application: the
    endpoint, or the admission gate's refusal; None leaves it to the application."""
    if endpoint is None or scope["path"] != WEBSOCKET_PATH:
        return None
    refused = None
    if admission is not None:
        refused = admission.check_request(RequestFacts.from_scope(scope))
    return endpoint if refused is None else _Refuse(refused)


class _Refuse:
    """An ASGI app that answers a handshake with a refusal."""

    def __init__(self, refused: Refusal) -> None:
        self.refused = refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await refuse_handshake(scope, receive, send, self.refused)


def protocol_for(
    endpoint: CentrifugoEndpoint | None, admission: Admission
) -> type[websocket.DirectWebSocketProtocol]:
    """The server's WebSocket protocol class, bound to the endpoint and the app's admission."""
    route = functools.partial(handshake_app, endpoint=endpoint, admission=admission)
    return websocket.protocol_for(route, DIRECT_WRITER)
