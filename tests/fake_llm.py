"""A fake LLM upstream that speaks the wire formats of OpenAI Chat Completions
(``POST /v1/chat/completions``) and Anthropic Messages (``POST /v1/messages``), streaming and not,
on a loopback port in a thread of its own, so that the providers (and the official SDKs, see
``test_fake_llm.py``) can be tested against real HTTP with scripted timing and failures::

    with FakeLLM(api_key="test-key") as fake:
        fake.script = Script(tokens=["a", "b"], token_interval=0.05, stall_after=1)
        ...  # point a client at fake.url + "/v1" (OpenAI) or fake.url (Anthropic)
        assert fake.wait_closed(1, timeout=2)

Streams are chunked (so a cut is visible to the client) and ``Connection: close``; the client
leaving is seen at once, even while the fake sleeps or stalls, and stops the generation.

A *generation* below is one request that got past authentication and validation and was not
answered with a scripted ``status``: a streaming response, or a non-streaming one that is still
"generating" (sleeping out the script's delays).  ``open_streams``, ``completed``, ``errored``
and ``closed_at`` count generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import orjson
from serverproc import HOST
from sse_servers import Connection, _LoopThread, _read_request

Face = Literal["openai", "anthropic"]

#: The key the fake accepts (tests check that it never leaks into our errors or logs).
FAKE_API_KEY = "sk-test-0123456789-secret"

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
_FACES: dict[str, Face] = {OPENAI_PATH: "openai", ANTHROPIC_PATH: "anthropic"}

#: OpenAI's finish reasons in Anthropic's words; anything else is passed through as is, so that
#: a script can also say "pause_turn" or "stop_sequence".
ANTHROPIC_STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

#: status -> (type, code, message) of OpenAI's error body.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM). Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

#: status -> (type, message) of Anthropic's error body.
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}

_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


@dataclass
class Script:
    """What the fake answers; the defaults are a short, instant, successful answer."""

    #: Text deltas, in order.
    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    #: Seconds before the first delta (after the head and the preamble events were sent).
    first_token_delay: float = 0.0
    #: Seconds between deltas.
    token_interval: float = 0.0
    #: After this many deltas, send nothing more and hold the connection until the client
    #: leaves.  Equal to the number of deltas: everything but the end.
    stall_after: int | None = None
    #: After this many deltas, send the provider's in-band error and end the stream (a
    #: non-streaming request gets the HTTP equivalent: OpenAI 500, Anthropic 529).
    error_after: int | None = None
    #: Answer this HTTP status with the provider's JSON error body instead of generating.
    status: int | None = None
    #: ``Retry-After`` header (seconds) with ``status``.
    retry_after: float | None = None
    #: In OpenAI's words; see ANTHROPIC_STOP_REASON.  "stop" with a ``tool_call`` becomes
    #: "tool_calls", as a real model's would.
    finish_reason: str = "stop"
    #: (name, arguments JSON) streamed as a tool call after the text, the arguments in ~3
    #: pieces (each a delta).
    tool_call: tuple[str, str] | None = None
    prompt_tokens: int = 12
    #: Anthropic: an ``event: ping`` every N deltas (there is always one in the preamble).
    ping_every: int | None = None
    #: Stream every token whatever the request's ``max_tokens`` (a provider or local server
    #: that does not honour it).
    ignore_max_tokens: bool = False


@dataclass
class RecordedRequest:
    method: str
    path: str
    #: Lower-case names.
    headers: dict[str, str]
    #: The parsed body (None when empty or not JSON).
    json: Any
    #: time.monotonic() when the request had been read.
    at: float


@dataclass
class _Plan:
    """One generation, worked out from the script and the request."""

    face: Face
    model: str
    texts: list[str]
    #: (id, name, arguments, pieces of arguments)
    tool: tuple[str, str, str, list[str]] | None
    finish: str
    prompt_tokens: int

    @property
    def units(self) -> int:
        """Deltas: text tokens, then pieces of tool arguments."""
        return len(self.texts) + (len(self.tool[3]) if self.tool else 0)


@dataclass(eq=False)
class _Generation:
    conn: Connection
    #: Whether the client leaving now would abandon the generation.
    in_flight: bool = True


class FakeLLM:
    """``with FakeLLM(api_key="test-key") as fake: ... fake.url ...``; ``api_key=None`` takes
    any key.  Assign ``fake.script`` for what the next requests get, or ``enqueue`` scripts
    for the next requests one by one (then ``script`` again)."""

    def __init__(self, api_key: str | None = "test-key") -> None:
        self.api_key = api_key
        self.script = Script()
        self.requests: list[RecordedRequest] = []
        #: time.monotonic() when the client was seen leaving each generation it abandoned.
        self.closed_at: list[float] = []
        #: Generations being served now.
        self.open_streams = 0
        #: Generations that ran to their natural end (finish reason, usage, [DONE]/message_stop).
        self.completed = 0
        #: Generations ended by the scripted in-band error (``error_after``).
        self.errored = 0
        #: Exceptions the fake itself raised while serving (re-raised on exit).
        self.server_errors: list[Exception] = []
        self.port = 0
        self._queue: deque[Script] = deque()
        self._changed = threading.Condition()
        self._generations: set[_Generation] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread: _LoopThread | None = None
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        self._thread = _LoopThread()
        self._server = self._thread.call(asyncio.start_server(self._serve, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None and self._server is not None
        # asyncio's Server.close() (3.11) leaves open connections alone: a stalled stream would
        # keep its client waiting, and its task would be destroyed pending.
        self._thread.call(self._shutdown())
        self._thread.stop(self._server)
        # _LoopThread leaves its loop open (and with it, its self-pipe sockets).
        with contextlib.suppress(RuntimeError):
            self._thread.loop.close()
        if self.server_errors:
            if isinstance(exc[1], BaseException):
                exc[1].add_note(f"the fake LLM failed too: {self.server_errors[0]!r}")
            else:
                raise self.server_errors[0]

    def enqueue(self, *scripts: Script) -> None:
        """Scripts for the next generations (requests past authentication), in order."""
        with self._changed:
            self._queue.extend(scripts)

    def reset(self) -> None:
        """A fresh default ``script``, no queued scripts, no recorded requests (for a fake shared
        by a module's tests).  The counters go on: compare them with a value taken before."""
        with self._changed:
            self.script = Script()
            self._queue.clear()
            self.requests.clear()

    @property
    def closed(self) -> int:
        """Generations abandoned by the client so far (``len(closed_at)``)."""
        return len(self.closed_at)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (about this fake's counters) holds."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_closed(self, count: int, timeout: float) -> bool:
        """True once ``count`` generations were abandoned by the client (EOF or reset seen)."""
        return self.wait_for(lambda: len(self.closed_at) >= count, timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        return self.wait_for(lambda: len(self.requests) >= count, timeout)

    def wait_open(self, count: int, timeout: float) -> bool:
        """True once ``count`` generations are open at the same time."""
        return self.wait_for(lambda: self.open_streams >= count, timeout)

    # -- serving ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for generation in list(self._generations):
            generation.in_flight = False
            generation.conn.writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _notify(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as error:
            # A bug in the fake must fail the test, not pass for a network error (see __exit__).
            self.server_errors.append(error)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        try:
            body = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            body = None
        path = request.path.split("?", 1)[0]
        self._notify(
            lambda: self.requests.append(
                RecordedRequest(request.method, path, request.headers, body, request.at)
            )
        )
        conn = Connection(request, reader, writer)
        face = _FACES.get(path)
        if face is None or request.method != "POST":
            guess: Face = "anthropic" if "anthropic-version" in request.headers else "openai"
            await _error(conn, face or guess, 404, f"Invalid URL ({request.method} {path})")
            return
        if (problem := self._auth_problem(face, request.headers)) is not None:
            await _error(conn, face, *problem)
            return
        if (message := _invalid(face, body)) is not None:
            await _error(conn, face, 400, message)
            return
        with self._changed:
            script = self._queue.popleft() if self._queue else self.script
        if script.status is not None:
            await _error(conn, face, script.status, retry_after=script.retry_after)
            return
        await self._generate(conn, _plan(face, script, body), script, body)

    def _auth_problem(self, face: Face, headers: dict[str, str]) -> tuple[int, str] | None:
        if face == "openai":
            authorization = headers.get("authorization", "")
            if not authorization:
                return 401, "You didn't provide an API key."
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                return 401, "Incorrect API key provided."
            return None
        # Anthropic checks the version header before the key.  The key comes as x-api-key or,
        # as the anthropic SDK 2.x sends its api_key, as a bearer token.
        if "anthropic-version" not in headers:
            return 400, "anthropic-version: header is required"
        key = headers.get("x-api-key")
        if key is None and headers.get("authorization", "").startswith("Bearer "):
            key = headers["authorization"].removeprefix("Bearer ")
        if key is None:
            return 401, "x-api-key header is required"
        if self.api_key is not None and key != self.api_key:
            return 401, "invalid x-api-key"
        return None

    async def _generate(
        self, conn: Connection, plan: _Plan, script: Script, body: dict[str, Any]
    ) -> None:
        generation = _Generation(conn)
        self._generations.add(generation)
        self._notify(lambda: setattr(self, "open_streams", self.open_streams + 1))
        watcher = asyncio.create_task(self._watch(generation))
        outcome = "gone"
        try:
            if body.get("stream") is True:
                outcome = await self._stream(conn, plan, script, body)
            else:
                outcome = await self._complete(conn, plan, script)
        except ConnectionError:
            pass
        finally:
            generation.in_flight = False
            self._generations.discard(generation)

            def finish() -> None:
                self.open_streams -= 1
                if outcome == "end":
                    self.completed += 1
                elif outcome == "error":
                    self.errored += 1

            self._notify(finish)
            watcher.cancel()

    async def _watch(self, generation: _Generation) -> None:
        """Read until EOF (the client sends nothing more after its request), so that its
        leaving is seen at once, whatever the generation is waiting for."""
        with contextlib.suppress(ConnectionError):
            while await generation.conn.reader.read(65536):
                pass
        generation.conn.client_gone.set()
        if generation.in_flight:
            generation.in_flight = False
            at = time.monotonic()
            self._notify(lambda: self.closed_at.append(at))

    async def _run(
        self, conn: Connection, plan: _Plan, script: Script, send_unit: Callable[[int], Any]
    ) -> str:
        """The deltas, paced: "end" when all were sent, "error" at ``error_after``, "gone" when
        the client left (stalling waits for that)."""
        for index in range(plan.units + 1):
            if script.stall_after is not None and index >= script.stall_after:
                await conn.client_gone.wait()
                return "gone"
            if script.error_after is not None and index >= script.error_after:
                return "error"
            if index == plan.units:
                return "end"
            delay = script.first_token_delay if index == 0 else script.token_interval
            if not await _pause(conn, delay):
                return "gone"
            await send_unit(index)
        raise AssertionError("unreachable")

    async def _stream(
        self, conn: Connection, plan: _Plan, script: Script, body: dict[str, Any]
    ) -> str:
        wire: _OpenAIWire | _AnthropicWire
        if plan.face == "openai":
            wire = _OpenAIWire(plan, body)
            await conn.send_head(
                200,
                "text/event-stream; charset=utf-8",
                x_request_id=_id("req_", 32),
                openai_processing_ms="42",
            )
        else:
            wire = _AnthropicWire(plan, script)
            await conn.send_head(
                200,
                "text/event-stream; charset=utf-8",
                request_id=_id("req_011C", 20),
                Cache_Control="no-cache",
            )

        async def send(events: list[bytes]) -> None:
            for event in events:
                if conn.client_gone.is_set():
                    raise ConnectionResetError
                await conn.send(event)

        await send(wire.preamble())

        async def send_unit(index: int) -> None:
            await send(wire.unit(index))

        outcome = await self._run(conn, plan, script, send_unit)
        if outcome == "end":
            await send(wire.end())
        elif outcome == "error":
            await send(wire.error())
        if outcome != "gone":
            await conn.end()
        return outcome

    async def _complete(self, conn: Connection, plan: _Plan, script: Script) -> str:
        """A non-streaming answer, after the time the deltas would have taken."""

        async def nothing(_index: int) -> None:
            pass

        outcome = await self._run(conn, plan, script, nothing)
        if outcome == "error":
            if plan.face == "openai":
                await _error(conn, "openai", 500)
            else:
                await _error(conn, "anthropic", 529)
        elif outcome == "end":
            whole = _openai_completion(plan) if plan.face == "openai" else _anthropic_message(plan)
            await conn.respond(200, orjson.dumps(whole), content_type="application/json")
        return outcome


# -- wire formats ----------------------------------------------------------------------------


class _OpenAIWire:
    """``data: {chat.completion.chunk}`` events, then ``data: [DONE]``."""

    def __init__(self, plan: _Plan, body: dict[str, Any]) -> None:
        self.plan = plan
        options = body.get("stream_options") or {}
        self.include_usage = options.get("include_usage") is True
        # On by default since 2025: random padding on every chunk, against size side channels.
        self.obfuscate = options.get("include_obfuscation", True) is not False
        self.id = _id("chatcmpl-", 29)
        self.created = int(time.time())
        self.fingerprint = _id("fp_", 10, _HEX)

    def _chunk(
        self, delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None
    ) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.plan.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            data["usage"] = usage
        if self.obfuscate:
            data["obfuscation"] = _id("", random.randint(1, 16))
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def _tool_start(self) -> dict[str, Any]:
        assert self.plan.tool is not None
        call_id, name, _arguments, _pieces = self.plan.tool
        return {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }

    def preamble(self) -> list[bytes]:
        # The role comes first; a call with no text before it opens the tool call there too.
        if not self.plan.texts and self.plan.tool:
            delta = {
                "role": "assistant",
                "content": None,
                "tool_calls": [self._tool_start()],
                "refusal": None,
            }
        else:
            delta = {"role": "assistant", "content": "", "refusal": None}
        return [self._chunk(delta)]

    def unit(self, index: int) -> list[bytes]:
        texts = self.plan.texts
        if index < len(texts):
            return [self._chunk({"content": texts[index]})]
        assert self.plan.tool is not None
        piece = index - len(texts)
        events = []
        if piece == 0 and texts:
            events.append(self._chunk({"tool_calls": [self._tool_start()]}))
        arguments = self.plan.tool[3][piece]
        events.append(
            self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
        )
        return events

    def end(self) -> list[bytes]:
        events = [self._chunk({}, self.plan.finish)]
        if self.include_usage:
            events.append(self._chunk(None, usage=_openai_usage(self.plan)))
        return [*events, b"data: [DONE]\n\n"]

    def error(self) -> list[bytes]:
        # No [DONE] after an in-band error: the stream just ends.
        return [b"data: " + orjson.dumps({"error": _openai_error(500)}) + b"\n\n"]


class _AnthropicWire:
    """Named events: message_start, (content_block_start, content_block_delta...,
    content_block_stop) per block, message_delta, message_stop; pings anywhere."""

    def __init__(self, plan: _Plan, script: Script) -> None:
        self.plan = plan
        self.ping_every = script.ping_every
        self.id = _id("msg_01", 22)

    @staticmethod
    def _event(kind: str, data: dict[str, Any]) -> bytes:
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, **data}))

    def _tool_index(self) -> int:
        return 1 if self.plan.texts else 0

    def _tool_open(self) -> list[bytes]:
        assert self.plan.tool is not None
        call_id, name, _arguments, _pieces = self.plan.tool
        index = self._tool_index()
        return [
            self._event(
                "content_block_start",
                {
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
                },
            ),
            # The API opens every tool input with an empty piece.
            self._delta(index, {"type": "input_json_delta", "partial_json": ""}),
        ]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self._event("content_block_delta", {"index": index, "delta": delta})

    def preamble(self) -> list[bytes]:
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(self.plan, output_tokens=1),
        }
        events = [self._event("message_start", {"message": message})]
        if self.plan.texts:
            block = {"type": "text", "text": ""}
            events.append(self._event("content_block_start", {"index": 0, "content_block": block}))
        elif self.plan.tool:
            events += self._tool_open()
        return [*events, self._event("ping", {})]

    def unit(self, index: int) -> list[bytes]:
        texts = self.plan.texts
        events = []
        if index < len(texts):
            events.append(self._delta(0, {"type": "text_delta", "text": texts[index]}))
        else:
            assert self.plan.tool is not None
            piece = index - len(texts)
            if piece == 0 and texts:
                events.append(self._event("content_block_stop", {"index": 0}))
                events += self._tool_open()
            partial = self.plan.tool[3][piece]
            events.append(
                self._delta(
                    self._tool_index(), {"type": "input_json_delta", "partial_json": partial}
                )
            )
        if self.ping_every and (index + 1) % self.ping_every == 0:
            events.append(self._event("ping", {}))
        return events

    def end(self) -> list[bytes]:
        events = []
        if self.plan.texts or self.plan.tool:
            last = self._tool_index() if self.plan.tool else 0
            events.append(self._event("content_block_stop", {"index": last}))
        delta = {"stop_reason": _anthropic_stop(self.plan.finish), "stop_sequence": None}
        usage = {"output_tokens": self.plan.units}
        events.append(self._event("message_delta", {"delta": delta, "usage": usage}))
        return [*events, self._event("message_stop", {})]

    def error(self) -> list[bytes]:
        return [
            self._event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
        ]


# -- helpers ---------------------------------------------------------------------------------


def _id(prefix: str, length: int, alphabet: str = _ALNUM) -> str:
    return prefix + "".join(random.choices(alphabet, k=length))


def _split(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` pieces of about the same size (fewer if it is too short)."""
    cuts = [len(text) * i // parts for i in range(parts + 1)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if b > a] or [""]


def _plan(face: Face, script: Script, body: dict[str, Any]) -> _Plan:
    limit = body.get("max_tokens")
    if face == "openai":
        limit = body.get("max_completion_tokens", limit)
    texts = list(script.tokens)
    tool: tuple[str, str, str, list[str]] | None = None
    finish = script.finish_reason
    if isinstance(limit, int) and limit < len(texts) and not script.ignore_max_tokens:
        # Out of tokens before the end of the text: no tool call either.
        texts = texts[:limit]
        finish = "length"
    elif script.tool_call is not None:
        name, arguments = script.tool_call
        prefix, length = ("call_", 24) if face == "openai" else ("toolu_01", 22)
        tool = (_id(prefix, length), name, arguments, _split(arguments, 3))
        if finish == "stop":
            finish = "tool_calls"
    return _Plan(face, str(body.get("model")), texts, tool, finish, script.prompt_tokens)


def _invalid(face: Face, body: Any) -> str | None:
    """The API's 400 for a body it would reject, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    if face == "anthropic" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if (
        face == "openai"
        and body.get("stream_options") is not None
        and body.get("stream") is not True
    ):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return None


async def _pause(conn: Connection, seconds: float) -> bool:
    """Sleep, but wake when the client leaves; False if it did."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.client_gone.wait(), seconds)
    return not conn.client_gone.is_set()


def _anthropic_stop(finish: str) -> str:
    return ANTHROPIC_STOP_REASON.get(finish, finish)


def _openai_usage(plan: _Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.units,
        "total_tokens": plan.prompt_tokens + plan.units,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _anthropic_usage(plan: _Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _openai_completion(plan: _Plan) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(plan.texts) if plan.texts or not plan.tool else None,
        "refusal": None,
        "annotations": [],
    }
    if plan.tool:
        call_id, name, arguments, _pieces = plan.tool
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
    return {
        "id": _id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish}
        ],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": _id("fp_", 10, _HEX),
    }


def _anthropic_message(plan: _Plan) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if plan.texts:
        content.append({"type": "text", "text": "".join(plan.texts)})
    if plan.tool:
        call_id, name, arguments, _pieces = plan.tool
        content.append(
            {"type": "tool_use", "id": call_id, "name": name, "input": orjson.loads(arguments)}
        )
    return {
        "id": _id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": _anthropic_stop(plan.finish),
        "stop_sequence": None,
        "usage": _anthropic_usage(plan, output_tokens=plan.units),
    }


def _openai_error(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _OPENAI_ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, "Error."),
    )
    return {"message": message or default, "type": kind, "param": None, "code": code}


async def _error(
    conn: Connection,
    face: Face,
    status: int,
    message: str | None = None,
    retry_after: float | None = None,
) -> None:
    """The provider's JSON error response."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry_After"] = f"{retry_after:g}"
    if face == "openai":
        body: dict[str, Any] = {"error": _openai_error(status, message)}
        headers["x_request_id"] = _id("req_", 32)
    else:
        kind, default = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
        )
        request_id = _id("req_011C", 20)
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or default},
            "request_id": request_id,
        }
        headers["request_id"] = request_id
    await conn.respond(status, orjson.dumps(body), content_type="application/json", **headers)
