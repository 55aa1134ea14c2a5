"""WebSocket fan-out peers for ``bench/ws_fanout.py``.

Two servers that do what the benchmark asks of sluiceway's Centrifugo endpoint (every
connection on one channel, a publisher whose messages reach all of them) and nothing more:

* ``socketio_app``: python-socketio's ``AsyncServer`` as an ASGI app, the way its docs show
  it. Every client joins the room ``bench`` in its ``connect`` handler, except the publisher
  (it connects with the auth payload ``{"role": "pub"}``). The publisher emits ``pub`` events
  with an acknowledgement id; the handler broadcasts the data to the room with
  ``await sio.emit("pub", data, room="bench")`` and its return value acknowledges the event.
  Run with uvicorn::

      uvicorn ws_peers:socketio_app --app-dir bench/peers --loop uvloop --http httptools

* ``python bench/peers/ws_peers.py websockets --port P``: a bare ``websockets`` asyncio server
  (the lower bound). ``/sub`` adds the connection to a set and answers ``subscribed``;
  every text message on ``/pub`` goes to the whole set with ``websockets.asyncio.server.
  broadcast`` and is then acknowledged to the publisher with ``ok``.

Both answer ``GET /healthz`` with 200, for the benchmark's readiness check.
"""

from __future__ import annotations

import argparse
import asyncio
import http
from typing import Any

# --------------------------------------------------------------------------------------------
# python-socketio
# --------------------------------------------------------------------------------------------

try:
    import socketio
except ImportError:  # the websockets peer does not need it
    socketio = None

if socketio is not None:
    sio = socketio.AsyncServer(async_mode="asgi")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not (isinstance(auth, dict) and auth.get("role") == "pub"):
            await sio.enter_room(sid, "bench")

    @sio.event
    async def pub(sid: str, data: Any) -> str:
        await sio.emit("pub", data, room="bench")
        return "ok"  # the acknowledgement

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        ok = scope["type"] == "http" and scope["path"] == "/healthz"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok\n" if ok else b"no\n"})

    socketio_app = socketio.ASGIApp(sio, other_asgi_app=health)


# --------------------------------------------------------------------------------------------
# websockets broadcast()
# --------------------------------------------------------------------------------------------


async def run_websockets(host: str, port: int, backlog: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.http11 import Request, Response

    subscribers: set[ServerConnection] = set()

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return conn.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else ""
        if path == "/pub":
            async for message in conn:
                broadcast(subscribers, message)
                await conn.send("ok")
            return
        subscribers.add(conn)
        try:
            await conn.send("subscribed")
            await conn.wait_closed()
        finally:
            subscribers.discard(conn)

    async with serve(handler, host, port, process_request=process_request, backlog=backlog):
        await asyncio.Future()  # until killed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("server", choices=["websockets"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backlog", type=int, default=4096)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args()
    coro = run_websockets(args.host, args.port, args.backlog)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
