"""A fast fake OpenAI-compatible upstream for ``bench/llm_gateway.py``.

Raw asyncio protocol (uvloop when installed), HTTP/1.1 keep-alive. ``POST
/v1/chat/completions`` with ``"stream": true`` answers ``text/event-stream`` (chunked) with
exactly what OpenAI sends: a ``chat.completion.chunk`` carrying ``{"role": "assistant",
"content": ""}``, then one chunk per token, then a chunk with ``"finish_reason": "stop"`` and
an empty delta, a usage chunk when ``stream_options.include_usage`` asks for one, and
``data: [DONE]``. Without ``"stream": true`` it answers one ``chat.completion`` object.

Token *i* (0-based) of a response has the content ``"<i>@<t> "``, where ``t`` is
``time.monotonic_ns()`` taken just before the chunk is written: a client on the same machine
(``CLOCK_MONOTONIC`` is system-wide on Linux) knows when each token left the upstream, so the
gap it sees between two tokens minus the gap the upstream produced is what sat in between.

How many tokens and how fast:

* ``--tokens N`` / ``--interval-ms X``: the defaults. ``X = 0``: as fast as the socket takes
  them: each token is its own SSE event in its own HTTP chunk, ``--burst`` of them (16) per
  write, then the event loop's other streams get a turn; nothing is written while the
  transport is paused (socket full). ``X > 0``: token *i* is
  written at ``t0 + i*X`` ms (absolute schedule, ``t0`` = when the request arrived), from a
  timer callback per stream (no coroutine per stream).
* ``POST /_fake/config`` with ``{"tokens": N, "interval_ms": X}`` changes the defaults of a
  running upstream (the benchmark does this between phases, so the gateways keep their
  upstream).
* a model name ending in ``:n=N`` and/or ``:i=X`` (``"fake:n=50:i=20"``) overrides both for one
  request, for trying it by hand; a gateway may rewrite the model name, so the benchmark does
  not rely on it.

``GET /healthz`` and ``GET /v1/models`` answer 200. ``GET /_fake/stats`` returns counters.

    python bench/peers/fake_openai_upstream.py --port 9100 --tokens 20 --interval-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from typing import Any

HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
MODEL_OPTS_RE = re.compile(r":(n|i)=([0-9.]+)")
CHUNK_ID = b"chatcmpl-fake"


class Config:
    tokens = 200
    interval_ms = 0.0
    burst = 16
    requests = 0
    streams_done = 0
    tokens_sent = 0


CFG = Config()


def http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def json_response(status: int, doc: Any, keep_alive: bool = True) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    conn = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        reason,
        len(body),
        conn,
        body,
    )


class Stream:
    """One streamed completion on one connection."""

    __slots__ = (
        "close_after",
        "conn",
        "created",
        "i",
        "include_usage",
        "interval_ns",
        "model",
        "n",
        "prefix",
        "t0",
        "timer",
    )

    def __init__(
        self, conn: UpstreamConn, model: bytes, n: int, interval_ms: float, include_usage: bool
    ) -> None:
        self.conn = conn
        self.model = model
        self.n = n
        self.interval_ns = int(interval_ms * 1e6)
        self.include_usage = include_usage
        self.i = 0
        self.close_after = False
        self.t0 = time.monotonic_ns()
        self.created = int(time.time())
        self.timer: asyncio.TimerHandle | None = None
        # Everything of a token chunk before the content; the rest is fixed too.
        self.prefix = (
            b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"%s",'
            b'"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"'
            % (CHUNK_ID, self.created, model)
        )

    def _event(self, delta: bytes, finish: bytes) -> bytes:
        return http_chunk(
            b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"%s",'
            b'"system_fingerprint":null,"choices":[{"index":0,"delta":%s,"logprobs":null,'
            b'"finish_reason":%s}]}\n\n' % (CHUNK_ID, self.created, self.model, delta, finish)
        )

    def start(self) -> None:
        self.conn.write(HEAD_SSE + self._event(b'{"role":"assistant","content":""}', b"null"))
        self.step()

    def token(self) -> bytes:
        ev = self.prefix + b'%d@%d "},"logprobs":null,"finish_reason":null}]}\n\n' % (
            self.i,
            time.monotonic_ns(),
        )
        self.i += 1
        return b"%x\r\n%s\r\n" % (len(ev), ev)

    def step(self) -> None:
        """Write what is due now; schedule the rest."""
        self.timer = None
        conn = self.conn
        if conn.closed:
            return
        loop = conn.loop
        if self.interval_ns <= 0:
            # Up to `burst` tokens (each its own SSE event and HTTP chunk, each with its own
            # timestamp) go out in one write; then other streams (and reads) get a turn.
            while self.i < self.n and not conn.paused:
                end = min(self.n, self.i + CFG.burst)
                conn.write(b"".join([self.token() for _ in range(end - self.i)]))
                if self.i < self.n:
                    self.timer = loop.call_soon(self.step)  # type: ignore[assignment]
                    return
            if self.i < self.n:
                return  # paused; resume_writing calls step()
        else:
            now = time.monotonic_ns()
            while self.i < self.n and self.t0 + self.i * self.interval_ns <= now:
                conn.write(self.token())
            if self.i < self.n:
                due = self.t0 + self.i * self.interval_ns
                self.timer = loop.call_at(loop.time() + (due - now) / 1e9, self.step)
                return
        self.finish()

    def finish(self) -> None:
        out = self._event(b"{}", b'"stop"')
        if self.include_usage:
            out += http_chunk(
                b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"%s",'
                b'"system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":10,'
                b'"completion_tokens":%d,"total_tokens":%d}}\n\n'
                % (CHUNK_ID, self.created, self.model, self.n, self.n + 10)
            )
        out += http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.conn.write(out)
        CFG.streams_done += 1
        CFG.tokens_sent += self.n
        self.conn.stream = None
        if self.close_after:
            self.conn.closed = True
            assert self.conn.transport is not None
            self.conn.transport.close()
            return
        self.conn.maybe_next()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class UpstreamConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.closed = False
        self.paused = False
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        s = self.stream
        if s is not None and s.interval_ns <= 0 and s.timer is None:
            s.step()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.maybe_next()

    def maybe_next(self) -> None:
        """Handle the next complete request in the buffer (one at a time per connection)."""
        while self.stream is None and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self.fail(400, "bad request line")
                return
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body_start = end + 4
                parsed = dechunk(self.buf, body_start)
                if parsed is None:
                    return
                body, used = parsed
            else:
                n = int(headers.get("content-length", "0") or 0)
                if len(self.buf) < end + 4 + n:
                    return
                body = self.buf[end + 4 : end + 4 + n]
                used = end + 4 + n
            self.buf = self.buf[used:]
            close = headers.get("connection", "").lower() == "close"
            self.handle(method, target.split("?", 1)[0], body)
            if self.stream is not None:
                self.stream.close_after = close
            elif close:
                assert self.transport is not None
                self.transport.close()
                self.closed = True

    def fail(self, status: int, why: str) -> None:
        self.write(
            json_response(
                status, {"error": {"message": why, "type": "invalid_request"}}, keep_alive=False
            )
        )
        assert self.transport is not None
        self.transport.close()
        self.closed = True

    def handle(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            try:
                req = json.loads(body)
            except ValueError:
                self.fail(400, "body is not JSON")
                return
            CFG.requests += 1
            model = str(req.get("model") or "fake")
            n, interval = CFG.tokens, CFG.interval_ms
            for key, val in MODEL_OPTS_RE.findall(model):
                if key == "n":
                    n = int(float(val))
                else:
                    interval = float(val)
            model_b = json.dumps(model)[1:-1].encode()
            if not req.get("stream"):
                text = "".join(f"{i}@{time.monotonic_ns()} " for i in range(n))
                self.write(
                    json_response(
                        200,
                        {
                            "id": "chatcmpl-fake",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": model,
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text},
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 10,
                                "completion_tokens": n,
                                "total_tokens": n + 10,
                            },
                        },
                    )
                )
                return
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            self.stream = Stream(self, model_b, n, interval, include_usage)
            self.stream.start()
        elif method == "POST" and path == "/_fake/config":
            try:
                doc = json.loads(body or b"{}")
                if "tokens" in doc:
                    CFG.tokens = int(doc["tokens"])
                if "interval_ms" in doc:
                    CFG.interval_ms = float(doc["interval_ms"])
                if "burst" in doc:
                    CFG.burst = max(1, int(doc["burst"]))
            except (ValueError, TypeError) as exc:
                self.write(json_response(400, {"error": repr(exc)}))
                return
            self.write(json_response(200, config_doc()))
        elif method == "GET" and path == "/_fake/stats":
            self.write(json_response(200, config_doc()))
        elif method == "GET" and path in ("/healthz", "/health"):
            self.write(json_response(200, {"ok": True}))
        elif method == "GET" and path.endswith("/models"):
            self.write(
                json_response(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}
                        ],
                    },
                )
            )
        else:
            self.write(json_response(404, {"error": {"message": f"no route {method} {path}"}}))


def config_doc() -> dict[str, Any]:
    return {
        "tokens": CFG.tokens,
        "interval_ms": CFG.interval_ms,
        "burst": CFG.burst,
        "requests": CFG.requests,
        "streams_done": CFG.streams_done,
        "tokens_sent": CFG.tokens_sent,
    }


def dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None
            return b"".join(parts), end + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(buf[pos : pos + size])
        pos += size + 2


async def main(args: argparse.Namespace) -> None:
    CFG.tokens, CFG.interval_ms, CFG.burst = args.tokens, args.interval_ms, args.burst
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamConn, args.host, args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free one (printed)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per response")
    p.add_argument("--interval-ms", type=float, default=0.0, help="0: as fast as possible")
    p.add_argument("--burst", type=int, default=16, help="interval 0: tokens written per turn")
    p.add_argument("--cpu", type=int, default=None, help="pin to this core")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = parse_args()
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    try:
        import uvloop

        uvloop.run(main(a))
    except ImportError:
        print("uvloop not installed, using asyncio", file=sys.stderr)
        asyncio.run(main(a))
