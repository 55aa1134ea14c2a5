"""RPC to the application, and publications it validates or rewrites, with the official Python SDK
unchanged: in-process in the user's own Starlette app (``Hooks(on_rpc=...)``), and over HTTP to
a backend for ``sluiceway serve`` (Centrifugo's proxy format), in both formats. Bad answers —
an error, a disconnect, a timeout, a 500, garbage, a backend that is down — each become the
protocol's reply or close, never a crash or a client left waiting."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from centrifuge import ClientEventHandler, DisconnectedContext
from centrifuge.exceptions import ReplyError as SDKReplyError
from conftest import StartServer
from serverproc import ServerProcess, free_port
from sse_servers import UvicornThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from test_centrifugo_sdk import Recorder, post, sdk_client
from wsclient import ws_url

from sluiceway.centrifugo import (
    CentrifugoEndpoint,
    CentrifugoOptions,
    Disconnect,
    Hooks,
    ReplyError,
    codes,
)
from sluiceway.centrifugo import Client as WSClient
from sluiceway.hub import Hub

SECRET = "rpc-test-secret-long-enough-for-hs256!"


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, "HS256")


class Disconnections(ClientEventHandler):
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.changed = asyncio.Event()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.codes.append(ctx.code)
        self.changed.set()


async def kicked(client: Any, events: Disconnections, code: int) -> None:
    """The RPC ``kick`` closes the connection with ``code``."""
    with pytest.raises(Exception):  # noqa: B017 - the SDK fails the call as it disconnects
        await client.rpc("kick", {})
    async with asyncio.timeout(5):
        while code not in events.codes:
            events.changed.clear()
            await events.changed.wait()


# -- in-process: the application's own handler --------------------------------------------


async def on_rpc(client: WSClient, method: str, data: Any) -> Any:
    if method == "echo":
        return {"echo": data if not isinstance(data, bytes) else data.decode(), "id": client.id}
    if method == "fail":
        raise ReplyError(4004, "no such order")
    if method == "slow":
        await asyncio.sleep(5)
    if method == "kick":
        raise Disconnect(4501, "kicked")
    raise codes.method_not_found()


@pytest.fixture(scope="module")
def app_server() -> Iterator[UvicornThread]:
    options = CentrifugoOptions(hooks=Hooks(on_rpc=on_rpc), hook_timeout=0.5)
    endpoint = CentrifugoEndpoint(Hub(), options)
    app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)])
    with UvicornThread(app) as server:
        yield server


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_rpc_reaches_the_applications_handler(
    app_server: UvicornThread, use_protobuf: bool
) -> None:
    async with sdk_client(ws_url(app_server.url), use_protobuf=use_protobuf) as client:
        await client.connect()
        payload: Any = b'{"n":1}' if use_protobuf else {"n": 1}
        result = await client.rpc("echo", payload)
        answer = json.loads(result.data) if use_protobuf else result.data
        assert answer["echo"] == ({"n": 1} if not use_protobuf else '{"n":1}')
        for method, code in (("fail", 4004), ("nothing", 104)):
            with pytest.raises(SDKReplyError) as refused:
                await client.rpc(method, payload)
            assert refused.value.code == code
        started = time.monotonic()
        with pytest.raises(SDKReplyError) as late:
            await client.rpc("slow", payload)
        assert late.value.code == 100 and time.monotonic() - started < 3
        assert (await client.rpc("echo", payload)).data  # the connection goes on


async def test_a_handler_may_disconnect_the_client(app_server: UvicornThread) -> None:
    events = Disconnections()
    async with sdk_client(ws_url(app_server.url), events=events) as client:
        await client.connect()
        await kicked(client, events, 4501)


async def test_without_a_handler_rpc_is_method_not_found() -> None:
    endpoint = CentrifugoEndpoint(Hub())
    app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)])
    with UvicornThread(app) as server:
        async with sdk_client(ws_url(server.url)) as client:
            await client.connect()
            with pytest.raises(SDKReplyError) as refused:
                await client.rpc("anything", {})
            assert refused.value.code == 104


# -- sluiceway serve: the application behind an HTTP proxy ----------------------------------


class Backend:
    """The application: answers RPCs and reviews publications as Centrifugo's proxy expects."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/rpc", self.rpc, methods=["POST"]),
                Route("/publish", self.publish, methods=["POST"]),
            ]
        )

    async def rpc(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        method = body["method"]
        if method == "whoami":
            if "b64data" in body:
                return JSONResponse(
                    {"result": {"b64data": base64.b64encode(body["user"].encode()).decode()}}
                )
            return JSONResponse({"result": {"data": {"user": body["user"], "got": body["data"]}}})
        if method == "fail":
            return JSONResponse({"error": {"code": 4040, "message": "not found"}})
        if method == "kick":
            return JSONResponse({"disconnect": {"code": 4502, "reason": "go away"}})
        if method == "slow":
            await asyncio.sleep(5)
        if method == "crash":
            return Response("boom", status_code=500)
        if method == "garbage":
            return Response(b"\x00not json", media_type="application/json")
        return JSONResponse({"error": {"code": 104, "message": "method not found"}})

    async def publish(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return JSONResponse({"error": {"code": 4000, "message": "a message is {text}"}})
        clean = {"text": data["text"].replace("<", "&lt;"), "by": body["user"]}
        return JSONResponse({"result": {"data": clean}})


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Backend, UvicornThread]]:
    application = Backend()
    with UvicornThread(application.app) as server:
        yield application, server


def proxied_env(backend_url: str) -> dict[str, str]:
    return {
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_WS_RPC_PROXY_URL": f"{backend_url}/rpc",
        "SLUICEWAY_WS_PUBLISH_PROXY_URL": f"{backend_url}/publish",
        "SLUICEWAY_WS_HOOK_TIMEOUT": "0.5",
    }


@pytest.fixture(scope="module")
def proxied(backend: tuple[Backend, UvicornThread]) -> Iterator[ServerProcess]:
    """``sluiceway serve`` asking the backend (one for the module's tests)."""
    server = ServerProcess(env=proxied_env(backend[1].url)).start()
    yield server
    server.stop()


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_rpc_over_http_to_the_application(
    proxied: ServerProcess, backend: tuple[Backend, UvicornThread], use_protobuf: bool
) -> None:
    application, _ = backend
    server = proxied
    async with sdk_client(
        ws_url(server.url), token=token("ann"), use_protobuf=use_protobuf
    ) as client:
        await client.connect()
        if use_protobuf:
            assert (await client.rpc("whoami", b"\x00\xff")).data == b"ann"
            assert application.requests[-1]["b64data"] == base64.b64encode(b"\x00\xff").decode()
            assert application.requests[-1]["protocol"] == "protobuf"
        else:
            result = await client.rpc("whoami", {"q": 1})
            assert result.data == {"user": "ann", "got": {"q": 1}}
            assert application.requests[-1]["user"] == "ann"  # the identity Sluiceway verified
        payload: Any = b"{}" if use_protobuf else {}
        for method, code in (("fail", 4040), ("nothing", 104), ("slow", 100), ("crash", 100)):
            with pytest.raises(SDKReplyError) as refused:
                await client.rpc(method, payload)
            assert refused.value.code == code, method
        with pytest.raises(SDKReplyError) as garbled:
            await client.rpc("garbage", payload)
        assert garbled.value.code == 100


async def test_a_proxy_disconnect_and_a_backend_that_is_down(
    start_server: StartServer, proxied: ServerProcess
) -> None:
    server = proxied
    events = Disconnections()
    async with sdk_client(ws_url(server.url), token=token("ann"), events=events) as client:
        await client.connect()
        await kicked(client, events, 4502)
    nobody = start_server(env=proxied_env(f"http://127.0.0.1:{free_port()}"))
    async with sdk_client(ws_url(nobody.url), token=token("ann")) as client:
        await client.connect()
        with pytest.raises(SDKReplyError) as refused:
            await client.rpc("whoami", {})
        assert refused.value.code == 100


async def test_the_application_validates_and_rewrites_publications(
    proxied: ServerProcess,
) -> None:
    server = proxied
    channel = f"room.{time.time_ns()}"
    seen = Recorder()
    async with (
        sdk_client(ws_url(server.url), token=token("ann")) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, seen)
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        with pytest.raises(SDKReplyError) as refused:
            await subscription.publish({"html": "<b>"})
        assert refused.value.code == 4000
        await subscription.publish({"text": "<b>hi"})
        await seen.until(lambda: len(seen.data) == 1)
        await post(http, channel, "over HTTP")  # the HTTP API is not the proxy's
        await seen.until(lambda: len(seen.data) == 2)
        history = (await http.get(f"/topics/{channel}/history")).json()["events"]
    assert seen.data == [{"text": "&lt;b>hi", "by": "ann"}, "over HTTP"]
    assert [event["data"] for event in history] == ['{"text":"&lt;b>hi","by":"ann"}', "over HTTP"]
