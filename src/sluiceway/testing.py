"""Testing your streams in process: any ASGI app (FastAPI, Starlette, Sluiceway's), no socket.

httpx's own ``ASGITransport`` collects the whole body before it answers, so a test that reads
five events of a stream that never ends waits forever; people start real servers instead.
:func:`client` gives an ``httpx.AsyncClient`` whose transport runs the app in a task and hands
each body chunk over as the app sends it: ``client.stream(...)`` yields events as they are
sent, leaving the block disconnects (the app gets ``http.disconnect``, and your producer's
``finally`` has run when the block is left), and ``Last-Event-ID`` resumes as with a server::

    >>> import asyncio
    >>> from fastapi import FastAPI
    >>> from sluiceway.asgi import EventStreamResponse
    >>> from sluiceway.sse import Event, Parser
    >>> from sluiceway.testing import client
    >>> app = FastAPI()
    >>> @app.get("/ticks")
    ... async def ticks() -> EventStreamResponse:
    ...     async def produce():
    ...         n = 0
    ...         while True:  # never ends: the client leaves
    ...             n += 1
    ...             yield Event(data=str(n), id=str(n))
    ...             await asyncio.sleep(0.01)
    ...     return EventStreamResponse(produce())
    >>> async def first_three() -> list[str]:
    ...     parser, seen = Parser(), []
    ...     async with client(app) as http, http.stream("GET", "/ticks") as response:
    ...         async for chunk in response.aiter_bytes():
    ...             seen += [event.data for event in parser.feed(chunk)]
    ...             if len(seen) >= 3:
    ...                 return seen[:3]
    ...     return seen
    >>> asyncio.run(first_three())
    ['1', '2', '3']

In pytest (with pytest-asyncio), a fixture::

    @pytest.fixture
    async def http():
        async with client(app) as http:
            yield http

:class:`sluiceway.client.EventSource` takes it too (``client=http``), reconnecting with
``Last-Event-ID`` through the app. The base URL is ``http://localhost``: a name every app
answers (Sluiceway's own answers loopback names only, unless ``allowed_hosts`` says more).
The app's lifespan runs around the block (``lifespan=False`` to skip it), so a ``Hub``
started there is running in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

__all__ = ["StreamingASGITransport", "app_lifespan", "client"]

#: How many body chunks the app may send ahead of the test's reading (then its ``send``
#: waits, as a socket's would).
BUFFERED_CHUNKS = 64

_END = object()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """An httpx transport that runs ``app`` for each request and streams its response.

    ``client``: the (host, port) the app sees as the client's address. ``disconnect_timeout``:
    how long closing a response waits for the app to finish after ``http.disconnect`` before
    cancelling it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        root_path: str = "",
        disconnect_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.client = client
        self.root_path = root_path
        self.disconnect_timeout = disconnect_timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": self.client,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "extensions": {},
        }
        exchange = _Exchange(body, self.disconnect_timeout)
        exchange.task = asyncio.create_task(exchange.run(self.app, scope))
        try:
            status, headers = await exchange.started()
        except BaseException:
            await exchange.close()  # cancelled while waiting (a timeout): the app must not run on
            raise
        return httpx.Response(status, headers=headers, stream=_Body(exchange), request=request)


class _Exchange:
    """One request's messages between the app (its task) and the response being read."""

    def __init__(self, body: bytes, disconnect_timeout: float) -> None:
        self.body = body
        self.disconnect_timeout = disconnect_timeout
        self.task: asyncio.Task[None] | None = None
        self.chunks: asyncio.Queue[object] = asyncio.Queue(BUFFERED_CHUNKS)
        self.start: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.disconnected = asyncio.Event()
        self.body_sent = False
        self.complete = False

    async def run(self, app: ASGIApp, scope: MutableMapping[str, Any]) -> None:
        """The app's call: a failure before the response is raised by the request, one in the
        body by reading it, one after a complete response (a 500 page sent by Starlette's
        error middleware) at the end of the body, as httpx's own transport raises them."""
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            if not self.start.done():
                self.start.set_exception(exc)
                return
            if not self.complete:
                self.complete = True
                await self._put(exc)
                return
            raise
        if not self.start.done():
            self.start.set_exception(RuntimeError("the app returned without a response"))
        elif not self.complete:  # it returned without its last body message
            self.complete = True
            await self._put(_END)

    async def started(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        return await self.start

    async def receive(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set():
            return  # the client left: nothing reaches it any more, as with a closed socket
        if message["type"] == "http.response.start":
            if not self.start.done():
                self.start.set_result((message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body" and not self.complete:
            chunk = message.get("body", b"")
            if chunk:
                await self._put(bytes(chunk))
            if not message.get("more_body", False):
                self.complete = True
                await self._put(_END)

    async def _put(self, item: object) -> None:
        put = asyncio.ensure_future(self.chunks.put(item))
        gone = asyncio.ensure_future(self.disconnected.wait())
        try:
            await asyncio.wait({put, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            gone.cancel()

    async def finished(self) -> None:
        """The body was read to its end: wait for the app to return (raising its error)."""
        if self.task is not None:
            await self.task

    async def close(self) -> None:
        """The client is done with the response: disconnect, and let the app finish."""
        self.disconnected.set()
        task = self.task
        if task is None or task.done():
            return
        # What the app raises once its client left is not the test's concern (a server logs it).
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(task), self.disconnect_timeout)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class _Body(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.exchange.chunks.get()
            if item is _END:
                await self.exchange.finished()
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        await self.exchange.close()


@contextlib.asynccontextmanager
async def app_lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block: startup before, shutdown after (an app
    without lifespan support is run as it is)."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def run() -> None:
        try:
            await app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                to_app.get,
                from_app.put,
            )
        except Exception as exc:  # an app without lifespan support raises here
            await from_app.put({"type": "lifespan.unsupported", "error": exc})
        else:
            # Returned without a word (`if scope["type"] != "http": return`): no lifespan,
            # as uvicorn reads it. After a complete shutdown, nobody reads this any more.
            await from_app.put({"type": "lifespan.unsupported"})

    task = asyncio.create_task(run())
    await to_app.put({"type": "lifespan.startup"})
    answer = await from_app.get()
    if answer["type"] == "lifespan.startup.failed":
        await task
        raise RuntimeError(f"the app's startup failed: {answer.get('message', '')}")
    try:
        yield
    finally:
        if answer["type"] == "lifespan.startup.complete":
            await to_app.put({"type": "lifespan.shutdown"})
            answer = await from_app.get()
            if answer["type"] == "lifespan.shutdown.failed":
                raise RuntimeError(f"the app's shutdown failed: {answer.get('message', '')}")
        with contextlib.suppress(Exception):
            await task


@contextlib.asynccontextmanager
async def client(
    app: ASGIApp,
    *,
    base_url: str = "http://localhost",
    lifespan: bool = True,
    **options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``app``, its responses streamed (see the module doc);
    ``options`` go to the client (``headers``, ``timeout``...)."""
    transport = StreamingASGITransport(app)
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app_lifespan(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url=base_url, **options)
        )
        yield http
