"""LLM gateway benchmark: sluiceway vs the LiteLLM proxy in front of the same fake upstream.

Both gateways serve ``POST /v1/chat/completions`` with ``"stream": true`` (OpenAI's
``chat.completion.chunk`` SSE) and forward to ``peers/fake_openai_upstream.py``, a raw-asyncio
fake that writes N tokens per request, each token's content carrying its index and the
``time.monotonic_ns()`` it was written at. A third target, ``direct``, is the load generator
talking to the fake upstream itself: the floor of this machine, with no gateway in between.

For each target and each concurrency (default 1, 100 and 1,000 streams):

* ``flat``: tokens as fast as the upstream can write them (interval 0); each of C
  keep-alive connections runs streams of ``--tokens`` tokens back to back. After a warm-up
  (until every connection has its first stream under way, 1 to 10 s), reported over the
  window: tokens/s delivered to the clients (all streams together), and the same per
  CPU-second the gateway process used (tokens/s per core).
* ``paced``: the upstream writes one token every ``--interval-ms`` (20 ms) per stream; the C
  streams start spread over ``--ramp`` seconds and run through the window. Reported: the
  *added inter-token gap*, for each pair of consecutive tokens of a stream
  ``(recv[i] - recv[i-1]) - (emit[i] - emit[i-1])``, p50 / p99 / max over all pairs emitted
  inside the window, and the token transit time ``recv - emit``.

Each stream is checked after the window: all tokens 0..N-1 in order, a ``finish_reason``
chunk, ``data: [DONE]`` last, every ``data:`` a ``chat.completion.chunk`` JSON object.

The load generator is asyncio + uvloop with raw ``asyncio.Protocol`` connections; while
measuring it only stores each read with its arrival time (and watches for the end of the
response), parsing happens afterwards, so it costs little per token. Its CPU is reported
next to the gateway's and the upstream's. Processes, CPU accounting, the HTTP client and the
results file are the harness's (``bench/harness/``).

    uv run python bench/llm_gateway.py             # everything, about 5 minutes
    uv run python bench/llm_gateway.py --quick     # smoke test, about a minute
    uv run python bench/llm_gateway.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import uvloop
from harness import BENCH_DIR, DISTURBED_PCT, HOST, VENV_BIN
from harness.cli import add_out_argument, choices, parser
from harness.cpu import CpuWindow, wait_machine_quiet
from harness.http import (
    CHUNKED_RE,
    CONTENT_LENGTH_RE,
    MAX_HEAD,
    ChunkDecoder,
    build_request,
    free_port,
    http_request,
)
from harness.machine import machine_info, pin_self, raise_nofile, src_changes
from harness.procs import UVLOOP_HTTPTOOLS, Proc, pinned, sluiceway_command, uvicorn_command
from harness.report import (
    config_of,
    fmt,
    md_table,
    met,
    percentile,
    ratio,
    save_results,
    say,
    timestamp,
)
from harness.runner import timed_phase

TARGETS = ("direct", "seed", "litellm", "sluiceway")
#: The peers' names in the tables: "seed" is the gateway people write first.
PEER_NAMES = {"seed": "seed gateway (FastAPI + AsyncOpenAI)", "litellm": "LiteLLM"}
LITELLM_VENV = BENCH_DIR / ".venvs" / "litellm"
LITELLM_SPEC = "litellm[proxy]"
# Installed next to it so that LiteLLM runs as well as it can here:
# * httptools: without it uvicorn falls back to its pure-Python h11 parser; litellm[proxy]
#   does not pull it in, every uvicorn deployment guide does (uvicorn[standard]).
# * opentelemetry-sdk: LiteLLM 1.106's auth step imports its OTel logger on every request
#   (`_seed_request_destinations`); without the SDK that import fails and, failed imports not
#   being cached, runs again on each request (about a third of the CPU of a short request).
LITELLM_EXTRA = ("httptools", "opentelemetry-sdk")
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
UPSTREAM_MODEL = "fake"

TOKEN_RE = re.compile(r"(\d+)@(\d+) ")
CONN_CLOSE_RE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
END_CHUNKED = b"\r\n0\r\n\r\n"
#: Versions the JSON records (and LiteLLM's, from its own venv).
PACKAGES = ("sluiceway", "uvloop", "httptools", "httpx")
#: What every streamed request sends besides its body.
CHAT_HEADERS = {"Accept": "text/event-stream", "Authorization": f"Bearer {MASTER_KEY}"}


# --------------------------------------------------------------------------------------------
# Processes: fake upstream, gateways
# --------------------------------------------------------------------------------------------


def ensure_litellm(args: argparse.Namespace) -> Path:
    """The LiteLLM proxy lives in its own venv, made on first use (never the project's)."""
    venv = args.litellm_venv
    exe = venv / "bin" / "litellm"
    marker = venv / ".bench-installed"
    want = " ".join([args.litellm_spec, *LITELLM_EXTRA])
    if exe.exists() and marker.exists() and marker.read_text().strip() == want:
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv not found: needed to create the LiteLLM venv")
    say(f"installing {want} into {venv} (first run only) ...")
    if not (venv / "bin" / "python").exists():
        subprocess.run([uv, "venv", "--python", platform.python_version(), str(venv)], check=True)
    # --compile-bytecode: what pip does by default; uv does not, and with
    # PYTHONDONTWRITEBYTECODE set the proxy would compile its ~2,000 modules at every start.
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--compile-bytecode",
            "--python",
            str(venv / "bin" / "python"),
            args.litellm_spec,
            *LITELLM_EXTRA,
        ],
        check=True,
    )
    marker.write_text(want + "\n")
    return exe


def litellm_version(venv: Path) -> str | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


LITELLM_CONFIG = """\
model_list:
  - model_name: fake
    litellm_params:
      model: openai/{model}
      api_base: http://{host}:{upstream_port}/v1
      api_key: dummy
litellm_settings:
  telemetry: false
  drop_params: true
  turn_off_message_logging: true
  disable_streaming_logging: true
  disable_token_counter: true
  disable_end_user_cost_tracking: true
  request_timeout: 600
  num_retries: 0
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
  disable_error_logs: true
"""

# Everything that would fetch from the network or write somewhere; no DATABASE_URL, so no
# database and no spend tracking.
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches the price list from GitHub
    "LITELLM_TELEMETRY": "False",
    "LITELLM_MODE": "PRODUCTION",  # no .env loading
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
}


def gateway_proc(
    target: str, upstream_port: int, args: argparse.Namespace, log_dir: Path
) -> tuple[Proc, str]:
    """-> (process, readiness path)."""
    cpu = args.gateway_cpu
    port = free_port()
    log = log_dir / f"{target}.log"
    # More than the largest phase: LiteLLM's connection pool to the upstream (1,000 / 500 per
    # host by default), sluiceway's streams at once (1024 by default for a remote API).
    limit = str(2 * max(args.concurrency) + 100)
    if target == "litellm":
        exe = ensure_litellm(args)
        cfg = log_dir / "litellm_config.yaml"
        cfg.write_text(
            LITELLM_CONFIG.format(
                model=UPSTREAM_MODEL, host=HOST, upstream_port=upstream_port, master_key=MASTER_KEY
            )
        )
        cmd = [
            *pinned(cpu),
            str(exe),
            "--config",
            str(cfg),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        env = {
            **LITELLM_ENV,
            "AIOHTTP_CONNECTOR_LIMIT": limit,
            "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": limit,
        }
        proc = Proc(target, cmd, log, port=port, env=env, cwd=log_dir, append=True)
        return proc, "/health/liveliness"
    if target == "seed":
        cmd = uvicorn_command(
            cpu,
            "seed_gateway:app",
            port,
            *UVLOOP_HTTPTOOLS,
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        )
        env = {
            "OPENAI_BASE_URL": f"http://{HOST}:{upstream_port}/v1",
            "OPENAI_API_KEY": "dummy",
        }
        return Proc(target, cmd, log, port=port, env=env, append=True), "/healthz"
    if target == "sluiceway":
        env = {
            "SLUICEWAY_LLM_PROVIDER": "openai",
            "SLUICEWAY_LLM_BASE_URL": f"http://{HOST}:{upstream_port}/v1",
            "SLUICEWAY_LLM_API_KEY": "dummy",
            "SLUICEWAY_LLM_MODEL": UPSTREAM_MODEL,
            "SLUICEWAY_LLM_MAX_CONCURRENT": limit,
        }
        cmd = sluiceway_command(cpu, port)
        return Proc(target, cmd, log, port=port, env=env, append=True), "/healthz"
    raise ValueError(target)


# --------------------------------------------------------------------------------------------
# Requests: the chat request, the fake upstream's settings, one-off streams
# --------------------------------------------------------------------------------------------


def chat_body(tokens: int) -> bytes:
    # max_tokens above what the upstream sends: a gateway that enforces it (sluiceway does)
    # would otherwise end the answer itself, with finish_reason "length", and close the
    # upstream request before its last chunks.
    return json.dumps(
        {
            "model": "fake",
            "stream": True,
            "max_tokens": tokens + 50,
            "messages": [{"role": "user", "content": "Count for me."}],
        },
        separators=(",", ":"),
    ).encode()


def chat_request(port: int, tokens: int) -> bytes:
    return build_request("POST", "/v1/chat/completions", port, chat_body(tokens), CHAT_HEADERS)


async def configure_upstream(port: int, tokens: int, interval_ms: float) -> dict[str, Any]:
    status, body = await http_request(
        port,
        "POST",
        "/_fake/config",
        json.dumps({"tokens": tokens, "interval_ms": interval_ms}).encode(),
    )
    if status != 200:
        raise RuntimeError(f"upstream config: {status} {body[:200]!r}")
    return cast(dict[str, Any], json.loads(body))


async def upstream_stats(port: int) -> dict[str, Any]:
    _, body = await http_request(port, "GET", "/_fake/stats")
    return cast(dict[str, Any], json.loads(body))


async def smoke(port: int, limit_s: float = 30.0) -> tuple[bool, str]:
    """One small streamed request through a target: (worked, what came back)."""
    try:
        status, body = await http_request(
            port,
            "POST",
            "/v1/chat/completions",
            chat_body(5),
            headers=CHAT_HEADERS,
            limit_s=limit_s,
        )
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        return False, repr(exc)
    text = body[:600].decode("utf-8", "replace")
    return status == 200 and b"[DONE]" in body and b"chat.completion.chunk" in body, (
        f"status {status}: {text}"
    )


# --------------------------------------------------------------------------------------------
# Load generator: streams over raw keep-alive connections
# --------------------------------------------------------------------------------------------


class Response:
    """One streamed response as received: raw body reads and their arrival times."""

    __slots__ = (
        "chunked",
        "clen",
        "done",
        "dropped",
        "end_ns",
        "error",
        "got",
        "head",
        "read_ns",
        "reads",
        "send_ns",
        "status",
        "tail",
    )

    def __init__(self, send_ns: int) -> None:
        self.send_ns = send_ns
        self.head = b""
        self.status = 0
        self.chunked = False
        self.clen = -1  # content-length, -1: none (chunked or close-delimited)
        self.got = 0
        self.reads: list[bytes] = []
        self.read_ns = array("q")
        self.tail = b""
        self.done = False
        self.dropped = False  # completed during a warm-up: reads thrown away, not checked
        self.end_ns = 0
        self.error: str | None = None


class Run:
    """Shared state of one phase: every slot's responses, the stop time, completion wait."""

    def __init__(self, port: int, tokens: int, loop_until_ns: int | None) -> None:
        self.port = port
        self.request = chat_request(port, tokens)
        self.tokens = tokens
        self.loop_until_ns = loop_until_ns  # flat mode: start new streams until then
        self.responses: list[Response] = []
        self.open_streams = 0
        self.all_done = asyncio.Event()
        self.errors: list[str] = []
        self.reconnects = 0
        self.stopping = False
        self.slots_streaming = 0  # slots whose first stream has sent body bytes
        self.in_warmup = False  # responses completed now are not kept


class Slot(asyncio.Protocol):
    """One client connection carrying one stream at a time (keep-alive, reconnect on close)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.cur: Response | None = None
        self.closed = True
        self.keep_alive = True
        self.connected = asyncio.get_running_loop().create_future()
        self.pending_start = False
        self.streaming = False

    # connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.closed = False
        self.keep_alive = True
        if not self.connected.done():
            self.connected.set_result(None)
        if self.pending_start:
            self.pending_start = False
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r = self.cur
        if r is not None and not r.done:
            if r.status and r.clen < 0 and not r.chunked:
                self._complete(r)  # close-delimited body
            elif not self.run.stopping:
                r.error = f"connection closed mid-response: {exc!r}"
                self._complete(r)
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(repr(exc)))

    # streams
    def start(self) -> None:
        if self.closed or not self.keep_alive:
            self.pending_start = True
            self.run.reconnects += 1
            if self.transport is not None:
                self.transport.close()
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_connection(lambda: self, HOST, self.run.port))
            task.add_done_callback(self._connect_done)
            return
        self._send()

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            self.run.errors.append(f"reconnect: {exc!r}")
            self.pending_start = False
            self._maybe_all_done()

    def _send(self) -> None:
        assert self.transport is not None
        r = Response(time.monotonic_ns())
        self.cur = r
        self.run.responses.append(r)
        self.run.open_streams += 1
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        r = self.cur
        if r is None or r.done:
            self.run.errors.append(f"unexpected bytes between responses: {data[:80]!r}")
            return
        if not r.status:
            head = r.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                r.head = head
                if len(head) > MAX_HEAD:
                    r.error = "response head too large"
                    self._complete(r)
                return
            r.head = head[: end + 2]
            try:
                r.status = int(head[9:12])
            except ValueError:
                r.status = -1
            r.chunked = CHUNKED_RE.search(r.head) is not None
            if not r.chunked and (m := CONTENT_LENGTH_RE.search(r.head)):
                r.clen = int(m.group(1))
            if CONN_CLOSE_RE.search(r.head):
                self.keep_alive = False
            r.tail = b"\r\n\r\n"
            data = head[end + 4 :]
            if not data:
                if r.clen == 0:
                    self._complete(r)
                return
        r.reads.append(data)
        r.read_ns.append(now)
        if not self.streaming:
            self.streaming = True
            self.run.slots_streaming += 1
        if r.chunked:
            t = r.tail + data[-7:] if len(data) < 7 else data[-7:]
            if t.endswith(END_CHUNKED):
                self._complete(r)
            else:
                r.tail = t[-7:]
        elif r.clen >= 0:
            r.got += len(data)
            if r.got >= r.clen:
                self._complete(r)

    def _complete(self, r: Response) -> None:
        r.done = True
        r.end_ns = time.monotonic_ns()
        self.cur = None
        run = self.run
        if run.in_warmup and r.status == 200 and r.error is None:
            r.reads = []
            r.read_ns = array("q")
            r.dropped = True
        run.open_streams -= 1
        if r.status != 200 and r.error is None:
            r.error = f"status {r.status}"
        if run.loop_until_ns is not None and not run.stopping and r.end_ns < run.loop_until_ns:
            self.start()
        else:
            self._maybe_all_done()

    def _maybe_all_done(self) -> None:
        if self.run.open_streams <= 0 and not self.pending_start:
            self.run.all_done.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_slots(run: Run, count: int, concurrency: int = 256) -> list[Slot]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    slots: list[Slot] = []

    async def one() -> None:
        async with sem:
            s = Slot(run)
            await loop.create_connection(lambda: s, HOST, run.port)
            slots.append(s)

    async with asyncio.timeout(60):
        await asyncio.gather(*(one() for _ in range(count)))
    return slots


# --------------------------------------------------------------------------------------------
# Parsing and checking (after the measured window)
# --------------------------------------------------------------------------------------------


@dataclass
class Parsed:
    ok: bool = False
    complete: bool = False  # the response ended (vs cut at the deadline)
    error: str | None = None
    seqs: array[int] = field(default_factory=lambda: array("q"))
    emit: array[int] = field(default_factory=lambda: array("q"))
    recv: array[int] = field(default_factory=lambda: array("q"))
    events: int = 0
    role_chunks: int = 0
    finish: str | None = None
    done: bool = False
    after_done: int = 0
    malformed: int = 0
    malformed_sample: str | None = None
    order_ok: bool = True


def parse_stream(r: Response, expect_tokens: int) -> Parsed:
    """Decode the stored reads: HTTP chunks -> SSE events -> chunk JSON -> tokens."""
    p = Parsed(complete=r.done and r.error is None)
    if r.status != 200:
        p.error = r.error or f"status {r.status}"
        if r.reads:
            p.error += f": {b''.join(r.reads)[:200]!r}"
        return p
    dechunker = ChunkDecoder()
    sse = b""
    content = ""
    for data, t in zip(r.reads, r.read_ns, strict=False):
        body = dechunker.feed(data) if r.chunked else data
        if not body:
            continue
        buf = (sse + body).replace(b"\r\n", b"\n")
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            sse = buf
            continue
        sse = buf[cut + 2 :]
        for block in buf[:cut].split(b"\n\n"):
            data_lines = [
                ln[5:].lstrip(b" ") if ln.startswith(b"data:") else None
                for ln in block.split(b"\n")
            ]
            payload_parts = [d for d in data_lines if d is not None]
            if not payload_parts:
                continue  # comment / keep-alive / event-only block
            payload = b"\n".join(payload_parts)
            p.events += 1
            if p.done:
                p.after_done += 1
                continue
            if payload == b"[DONE]":
                p.done = True
                continue
            try:
                obj = json.loads(payload)
                if obj.get("object") != "chat.completion.chunk":
                    raise ValueError(f"object {obj.get('object')!r}")
                for choice in obj.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("role"):
                        p.role_chunks += 1
                    piece = delta.get("content")
                    if piece:
                        content += piece
                    if choice.get("finish_reason"):
                        p.finish = choice["finish_reason"]
            except (ValueError, AttributeError, TypeError) as exc:
                p.malformed += 1
                if p.malformed_sample is None:
                    p.malformed_sample = f"{exc!r}: {payload[:200]!r}"
                continue
            if content:
                last = 0
                for m in TOKEN_RE.finditer(content):
                    p.seqs.append(int(m.group(1)))
                    p.emit.append(int(m.group(2)))
                    p.recv.append(t)
                    last = m.end()
                content = content[last:]
    seqs = p.seqs
    p.order_ok = all(seqs[i] == i for i in range(len(seqs)))
    if p.complete:
        p.ok = (
            p.order_ok
            and len(seqs) == expect_tokens
            and p.done
            and p.finish == "stop"
            and not p.after_done
            and not p.malformed
            and not content.strip()
        )
        if not p.ok:
            bits = []
            if not p.order_ok:
                bits.append("tokens out of order")
            if len(seqs) != expect_tokens:
                bits.append(f"{len(seqs)}/{expect_tokens} tokens")
            if not p.done:
                bits.append("no [DONE]")
            if p.finish != "stop":
                bits.append(f"finish_reason {p.finish!r}")
            if p.after_done:
                bits.append(f"{p.after_done} events after [DONE]")
            if p.malformed:
                bits.append(f"{p.malformed} malformed: {p.malformed_sample}")
            p.error = ", ".join(bits)
    else:
        p.error = r.error or "cut at the deadline"
    return p


def ms_stats(vals: list[int], prefix: str) -> dict[str, Any]:
    vals.sort()
    if not vals:
        return {f"{prefix}_samples": 0}
    return {
        f"{prefix}_samples": len(vals),
        f"{prefix}_p50_ms": round(percentile(vals, 0.50) / 1e6, 3),
        f"{prefix}_p90_ms": round(percentile(vals, 0.90) / 1e6, 3),
        f"{prefix}_p99_ms": round(percentile(vals, 0.99) / 1e6, 3),
        f"{prefix}_p999_ms": round(percentile(vals, 0.999) / 1e6, 3),
        f"{prefix}_max_ms": round(vals[-1] / 1e6, 3),
        f"{prefix}_min_ms": round(vals[0] / 1e6, 3),
    }


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    target: str
    upstream: Proc
    upstream_port: int
    args: argparse.Namespace
    log_dir: Path
    port: int = 0  # where the load generator sends requests
    gateway: Proc | None = None
    restarts: int = 0

    async def start(self) -> dict[str, Any]:
        """(Re)start the gateway (none for ``direct``), check it streams, warm it up.

        Raises RuntimeError with what went wrong in the message."""
        a = self.args
        info: dict[str, Any] = {}
        self.port = self.upstream_port
        if self.target != "direct":
            if self.gateway is not None:
                self.gateway.stop()
            gw, ready_path = gateway_proc(self.target, self.upstream_port, a, self.log_dir)
            self.gateway = gw
            info["cmd"], info["env"] = gw.cmd, gw.env
            gw.start()
            self.port = gw.port
            try:
                ready_s = await gw.wait_ready(a.ready_timeout, ready_path, attempt_s=2, poll_s=0.2)
                info["ready_s"] = round(ready_s, 2)
            except Exception as exc:
                raise RuntimeError(f"start: {exc!r}; log: {gw.log_tail(1500)}") from None
        await configure_upstream(self.upstream_port, 5, 0.0)
        ok, sample = await smoke(self.port)
        info["smoke"] = sample[:600]
        if not ok:
            tail = self.gateway.log_tail(1500) if self.gateway else ""
            raise RuntimeError(f"/v1/chat/completions does not stream: {sample[:300]}; log: {tail}")
        # Warm up (first requests through a gateway import and build things lazily).
        await configure_upstream(self.upstream_port, 20, 0.0)
        run = Run(self.port, 20, loop_until_ns=time.monotonic_ns() + int(a.warmup_requests_s * 1e9))
        slots = await open_slots(run, 10)
        for sl in slots:
            sl.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(a.warmup_requests_s + 10):
                await run.all_done.wait()
        for sl in slots:
            sl.close()
        info["warmup_requests"] = len(run.responses)
        if self.gateway is not None:
            await self.gateway.wait_quiet(max_s=5)
            info["rss_mib_after_warmup"] = self.gateway.rss_mib()
            info["threads"] = self.gateway.threads()
        return info

    def cpu_window(self) -> Callable[[], dict[str, Any]]:
        """Start measuring the CPU of the gateway, the upstream, this process and their cores;
        the function returned ends the window and gives the phase's ``cpu``."""
        a = self.args
        procs = {"gateway": self.gateway, "upstream": self.upstream}
        window = CpuWindow({k: p for k, p in procs.items() if p is not None})
        cores = {"gateway": a.gateway_cpu, "upstream": a.upstream_cpu, "loadgen": a.loadgen_cpu}
        return lambda: window.stop().by_core(cores)


async def settle(ctx: Ctx) -> dict[str, Any]:
    """Before a phase: the gateway idle (restarted if the last phase left it busy: streams
    the load generator cut are still being served, or requests it gave up on still being
    admitted, for a minute at 1,000 streams), the upstream idle, the cores idle."""
    a = ctx.args
    out: dict[str, Any] = {}
    if ctx.gateway is not None and a.settle_wait > 0:
        waited = await ctx.gateway.wait_quiet(max_s=a.settle_wait)
        if waited >= a.settle_wait:
            ctx.restarts += 1
            out["gateway_restarted"] = True
            say(f"  [{ctx.target}] still busy after {a.settle_wait:g} s: restarting it")
            await ctx.start()
    await ctx.upstream.wait_quiet(max_s=5)
    cores = sorted({a.gateway_cpu, a.loadgen_cpu, a.upstream_cpu})
    out.update(await wait_machine_quiet(cores, a.quiet_wait, interval=0.3, count_steal=False))
    return out


def summarize_streams(parsed: list[Parsed]) -> dict[str, Any]:
    complete = [p for p in parsed if p.complete]
    bad = [p for p in complete if not p.ok]
    cut = [p for p in parsed if not p.complete]
    cut_bad_order = [p for p in cut if not p.order_ok]
    errors = sorted({p.error for p in bad + cut_bad_order if p.error})[:5]
    return {
        "streams": len(parsed),
        "streams_complete": len(complete),
        "streams_ok": len(complete) - len(bad),
        "streams_bad": len(bad),
        "streams_cut": len(cut),
        "streams_cut_out_of_order": len(cut_bad_order),
        "cut_reasons": sorted({p.error or "" for p in cut})[:3],
        "error_samples": errors,
    }


async def phase_flat(ctx: Ctx, conc: int) -> dict[str, Any]:
    """C connections, streams back to back, tokens as fast as the upstream writes them."""
    a = ctx.args
    machine = await settle(ctx)
    await configure_upstream(ctx.upstream_port, a.tokens, 0.0)
    loop = asyncio.get_running_loop()
    run = Run(ctx.port, a.tokens, loop_until_ns=None)
    slots = await open_slots(run, conc)
    t0 = time.monotonic_ns()
    run.loop_until_ns = t0 + int((a.max_warmup + a.duration + 60) * 1e9)
    run.in_warmup = True
    for s in slots:
        s.start()
    # Warm-up: at least --warmup s, and until every stream is under way (all C requests
    # admitted and answering), at most --max-warmup s: the window then sees the steady state.
    timeline: list[tuple[float, int]] = []  # (s since start, streams under way)
    limit = t0 + int(a.max_warmup * 1e9)
    least = t0 + int(a.warmup * 1e9)
    while True:
        now = time.monotonic_ns()
        if not timeline or now - t0 >= (len(timeline)) * 5e8:
            timeline.append((round((now - t0) / 1e9, 2), run.slots_streaming))
        if now >= limit or (now >= least and run.slots_streaming >= conc):
            break
        await asyncio.sleep(0.05)
    w0 = time.monotonic_ns()
    w1 = w0 + int(a.duration * 1e9)
    run.loop_until_ns = w1
    run.in_warmup = False
    streaming_at_w0 = run.slots_streaming
    stop_cpu = ctx.cpu_window()
    await asyncio.sleep(max(0.0, (w1 - time.monotonic_ns()) / 1e9))
    cpu_r = stop_cpu()
    # Streams still running are cut: the window is over and a slow gateway could take minutes.
    run.stopping = True
    for s in slots:
        s.close()
    await asyncio.sleep(0.05)
    del loop
    # Tokens per read, counted cheaply: every token's content is "<i>@<t> " and no other byte
    # of a chunk is "@" (checked below against the full parse of the streams verified).
    kept = [r for r in run.responses if not r.dropped]
    in_window = 0
    at_counts = []
    for r in kept:
        n_at = 0
        for data, t in zip(r.reads, r.read_ns, strict=False):
            k = data.count(b"@")
            n_at += k
            if w0 <= t < w1:
                in_window += k
        at_counts.append(n_at)
    # Full parse and checks: every stream of the window, or an even sample of them when they
    # carried more than --verify-tokens tokens (the no-gateway baseline: millions).
    total = sum(at_counts) or 1
    step = max(1, math.ceil(total / a.verify_tokens))
    sample = list(range(0, len(kept), step))
    parsed = [parse_stream(kept[i], a.tokens) for i in sample]
    count_mismatch = sum(
        1 for i, p in zip(sample, parsed, strict=True) if len(p.seqs) != at_counts[i]
    )
    ttft: list[int] = []
    transit: list[int] = []
    for i, p in zip(sample, parsed, strict=True):
        r = kept[i]
        if p.recv and w0 <= r.send_ns < w1:
            ttft.append(p.recv[0] - r.send_ns)
        # Transit only for tokens that arrived in the window (bounded sample: every 10th).
        for j in range(0, len(p.recv), 10):
            if w0 <= p.recv[j] < w1:
                transit.append(p.recv[j] - p.emit[j])
    tokens_per_s = in_window / ((w1 - w0) / 1e9)
    gw_cpu = cpu_r.get("gateway_cpu_s")
    res: dict[str, Any] = {
        "mode": "flat",
        "concurrency": conc,
        "tokens_per_stream": a.tokens,
        "window_s": a.duration,
        "warmup_s": round((w0 - t0) / 1e9, 2),
        "streams_under_way_at_window_start": streaming_at_w0,
        "warmup_timeline": timeline,
        "tokens_in_window": in_window,
        "tokens_per_s": round(tokens_per_s),
        "tokens_per_gateway_cpu_s": (round(in_window / gw_cpu) if gw_cpu else None),
        "reconnects": run.reconnects,
        "loadgen_errors": run.errors[:5],
        "streams_completed_in_warmup": len(run.responses) - len(kept),
        "streams_in_window": len(kept),
        "verified_every_nth_stream": step,
        "token_count_mismatches": count_mismatch,
        **summarize_streams(parsed),
        **ms_stats(ttft, "ttft"),
        **ms_stats(transit, "transit"),
        "machine_before": machine,
        "cpu": cpu_r,
    }
    res["ok"] = (
        res["token_count_mismatches"] == 0
        and res["streams_bad"] == 0
        and res["streams_cut_out_of_order"] == 0
        and res["streams_ok"] > 0
        and not run.errors
    )
    return res


async def phase_paced(ctx: Ctx, conc: int) -> dict[str, Any]:
    """C streams at a fixed token interval, started over `ramp` s; added gap percentiles."""
    a = ctx.args
    interval_ns = int(a.interval_ms * 1e6)
    n_tokens = math.ceil((a.ramp + a.paced_duration) * 1e3 / a.interval_ms) + 1
    machine = await settle(ctx)
    await configure_upstream(ctx.upstream_port, n_tokens, a.interval_ms)
    loop = asyncio.get_running_loop()
    run = Run(ctx.port, n_tokens, loop_until_ns=None)
    slots = await open_slots(run, conc)
    t0 = time.monotonic_ns()
    lt0 = loop.time()
    for k, s in enumerate(slots):
        loop.call_at(lt0 + a.ramp * k / conc, s.start)
    w0 = t0 + int(a.ramp * 1e9)
    w1 = w0 + int(a.paced_duration * 1e9)
    await asyncio.sleep(max(0.0, (w0 - time.monotonic_ns()) / 1e9))
    stop_cpu = ctx.cpu_window()
    await asyncio.sleep(max(0.0, (w1 - time.monotonic_ns()) / 1e9))
    cpu_r = stop_cpu()
    # The last stream started at ~w0 and ends ~one interval after w1; then a grace period.
    outcome = "deadline"
    deadline = time.monotonic() + a.ramp + 2 * a.interval_ms / 1e3 + a.grace
    while time.monotonic() < deadline:
        if len(run.responses) >= conc and all(r.done for r in run.responses):
            outcome = "done"
            break
        await asyncio.sleep(0.05)
    run.stopping = True
    for s in slots:
        s.close()
    await asyncio.sleep(0.05)
    parsed = [parse_stream(r, n_tokens) for r in run.responses]
    gaps: list[int] = []
    transit: list[int] = []
    ttft: list[int] = []
    in_window = 0
    missing = 0
    for r, p in zip(run.responses, parsed, strict=True):
        recv, emit = p.recv, p.emit
        missing += max(0, n_tokens - len(recv))
        if recv:
            ttft.append(recv[0] - r.send_ns)
        for i in range(len(recv)):
            e = emit[i]
            if w0 <= recv[i] < w1:
                in_window += 1
            if w0 <= e < w1:
                transit.append(recv[i] - e)
                if i and emit[i - 1] >= w0:
                    gaps.append((recv[i] - recv[i - 1]) - (e - emit[i - 1]))
    offered = conc * 1e9 / interval_ns
    res: dict[str, Any] = {
        "mode": "paced",
        "concurrency": conc,
        "interval_ms": a.interval_ms,
        "tokens_per_stream": n_tokens,
        "ramp_s": a.ramp,
        "window_s": a.paced_duration,
        "outcome": outcome,
        "offered_tokens_per_s": round(offered),
        "tokens_per_s": round(in_window / ((w1 - w0) / 1e9)),
        "tokens_missing_at_deadline": missing,
        "loadgen_errors": run.errors[:5],
        **summarize_streams(parsed),
        **ms_stats(gaps, "added_gap"),
        **ms_stats(transit, "transit"),
        **ms_stats(ttft, "ttft"),
        "machine_before": machine,
        "cpu": cpu_r,
    }
    res["saturated"] = res["tokens_per_s"] < 0.95 * offered or outcome != "done"
    res["ok"] = (
        res["streams_bad"] == 0
        and res["streams_cut_out_of_order"] == 0
        and res["streams_ok"] == conc
        and not run.errors
    )
    return res


PHASES: dict[str, Callable[[Ctx, int], Any]] = {"flat": phase_flat, "paced": phase_paced}


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


async def bench_target(
    target: str, upstream: Proc, upstream_port: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"phases": {}}
    ctx = Ctx(target, upstream, upstream_port, args, log_dir)
    try:
        try:
            out.update(await ctx.start())
        except RuntimeError as exc:
            out["error"] = str(exc)
            return out
        for conc in args.concurrency:
            for mode in args.modes:
                key = f"{mode}-{conc}"
                for attempt in range(1, args.disturbed_retries + 2):
                    say(f"  [{target}] {key} ...")
                    res = await timed_phase(PHASES[mode](ctx, conc), args.phase_budget)
                    res["attempt"] = attempt
                    gw = ctx.gateway
                    if gw is not None and not gw.alive():
                        res["ok"] = False
                        res["error"] = f"gateway exited with code {gw.returncode}"
                    say(f"  [{target}] {key}: {summary_line(res)}")
                    other = disturbance(res, args)
                    if other < DISTURBED_PCT or attempt > args.disturbed_retries or "error" in res:
                        break
                    say(
                        f"  [{target}] {key}: {other}% of a core went to other processes,"
                        " running it again"
                    )
                    out.setdefault("disturbed_attempts", {}).setdefault(key, []).append(res)
                out["phases"][key] = res
                gw = ctx.gateway
                if gw is not None and not gw.alive():
                    out.setdefault("log_tails", []).append(gw.log_tail(3000))
                    try:
                        await ctx.start()
                        ctx.restarts += 1
                    except RuntimeError as exc:
                        out["error"] = f"gateway died and did not restart: {exc}"
                        return out
        if ctx.gateway is not None:
            out["rss_mib_end"] = ctx.gateway.rss_mib()
    finally:
        out["gateway_restarts"] = ctx.restarts
        if ctx.gateway is not None:
            ctx.gateway.stop()
    return out


def disturbance(res: dict[str, Any], args: argparse.Namespace) -> float:
    """Largest share of a benchmark core that went to other processes during the window."""
    c = res.get("cpu") or {}
    return max(
        (c.get(f"core{k}_other_pct", 0.0) for k in (args.gateway_cpu, args.loadgen_cpu)),
        default=0.0,
    )


def summary_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    c = r.get("cpu", {})
    cpu = (
        f"cpu gw {c.get('gateway_cpu_pct', '-')}% up {c.get('upstream_cpu_pct', '-')}%"
        f" lg {c.get('loadgen_cpu_pct', '-')}%"
    )
    streams = f"{r['streams_ok']} ok/{r['streams_bad']} bad/{r['streams_cut']} cut"
    if r["mode"] == "flat":
        return f"{r['tokens_per_s']:,} tokens/s, {streams}, {cpu}"
    return (
        f"{r['tokens_per_s']:,}/{r['offered_tokens_per_s']:,} tokens/s, added gap p50 "
        f"{r.get('added_gap_p50_ms')} p99 {r.get('added_gap_p99_ms')} ms, transit p99 "
        f"{r.get('transit_p99_ms')} ms, {streams}, {cpu}"
    )


def machine_record(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info(
        PACKAGES,
        before={"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)},
        after={"src_dirty": bool(src_changes())},
    )
    info["versions"]["litellm"] = litellm_version(args.litellm_venv)
    return info


#: A cell of the main table: what it shows of one phase's result.
Cell = Callable[[dict[str, Any]], str]
#: The "sluiceway vs peer" tables' rows: (label, mode, key of a phase's result, higher is better).
PEER_RATIOS = (
    ("tokens/s (higher)", "flat", "tokens_per_s", True),
    ("tokens per gateway CPU-second (higher)", "flat", "tokens_per_gateway_cpu_s", True),
    ("TTFT p99 (lower)", "flat", "ttft_p99_ms", False),
    ("added gap p99 (lower)", "paced", "added_gap_p99_ms", False),
)


def streams_cell(r: dict[str, Any]) -> str:
    """How the streams of a phase checked out."""
    s = f"{r['streams_ok']:,} ok"
    if r["streams_bad"]:
        s += f", **{r['streams_bad']} BAD**"
    if r["streams_cut"]:
        s += f", {r['streams_cut']:,} cut"
    if r["streams_cut_out_of_order"]:
        s += f", **{r['streams_cut_out_of_order']} cut out of order**"
    if r.get("loadgen_errors"):
        s += ", **loadgen errors**"
    if r.get("token_count_mismatches"):
        s += f", **{r['token_count_mismatches']} token count mismatches**"
    if r.get("verified_every_nth_stream", 1) > 1:
        s += f" (every {r['verified_every_nth_stream']}th of {r['streams_in_window']:,} checked)"
    return s


def gap_cell(r: dict[str, Any]) -> str:
    """The added inter-token gap, p50 / p99 ms (or saturated)."""
    cell = f"{fmt(r.get('added_gap_p50_ms'))} / {fmt(r.get('added_gap_p99_ms'))}"
    if r.get("saturated"):
        n = r.get("added_gap_samples", 0)
        if n:
            return f"**saturated** ({cell} over the {n:,} gaps that arrived)"
        return "**saturated** (no gaps arrived)"
    return f"**{cell}**"


def cpu_cell(r: dict[str, Any]) -> str:
    """Process CPU: gateway / upstream / load generator."""
    c = r["cpu"]
    gw = fmt(c.get("gateway_cpu_pct"), ".0f")
    return f"{gw}% / {c['upstream_cpu_pct']:.0f}% / {c['loadgen_cpu_pct']:.0f}%"


def p50_p99_cell(key: str) -> Cell:
    return lambda r: f"{fmt(r.get(key + '_p50_ms'))} / {fmt(r.get(key + '_p99_ms'))}"


def table_rows(args: argparse.Namespace) -> list[tuple[str, str, Cell]]:
    """The main table's rows: (label, phase, cell), concurrency by concurrency."""

    def cores(r: dict[str, Any]) -> str:
        c = r["cpu"]
        return " / ".join(
            f"{c.get(f'core{k}_busy_pct', float('nan')):.0f}%"
            for k in sorted({args.gateway_cpu, args.loadgen_cpu})
        )

    def paced_rate(r: dict[str, Any]) -> str:
        rate = f"{r['tokens_per_s']:,} ({r['offered_tokens_per_s']:,})"
        return rate + (" **saturated**" if r.get("saturated") else "")

    rows: list[tuple[str, str, Cell]] = []
    for conc in args.concurrency:
        if "flat" in args.modes:
            k = f"flat-{conc}"
            t = f"{conc:,} streams, flat out ({args.tokens} tokens/stream)"
            rows += [
                (f"{t}: **tokens/s**", k, lambda r: f"**{r['tokens_per_s']:,}**"),
                (
                    f"{t}: tokens per gateway CPU-second",
                    k,
                    lambda r: fmt(r.get("tokens_per_gateway_cpu_s"), ","),
                ),
                (f"{t}: TTFT p50 / p99 ms", k, p50_p99_cell("ttft")),
                (
                    f"{t}: warm-up s (streams under way at window start)",
                    k,
                    lambda r: f"{r['warmup_s']} ({r['streams_under_way_at_window_start']:,})",
                ),
                (f"{t}: streams checked", k, streams_cell),
                (f"{t}: CPU gateway / upstream / loadgen", k, cpu_cell),
                (f"{t}: core busy {args.gateway_cpu} / {args.loadgen_cpu}", k, cores),
            ]
        if "paced" in args.modes:
            k = f"paced-{conc}"
            t = f"{conc:,} streams, 1 token / {args.interval_ms:g} ms"
            rows += [
                (f"{t}: tokens/s delivered (offered)", k, paced_rate),
                (f"{t}: **added inter-token gap p50 / p99 ms**", k, gap_cell),
                (f"{t}: token transit p50 / p99 ms", k, p50_p99_cell("transit")),
                (f"{t}: streams checked", k, streams_cell),
                (f"{t}: CPU gateway / upstream / loadgen", k, cpu_cell),
            ]
    return rows


def peer_ratio(
    ours: dict[str, Any], theirs: dict[str, Any], key: str, higher: bool, name: str
) -> str:
    """sluiceway against peer ``name`` in one phase: the ratio (above 1: sluiceway does
    better), or why there is none."""
    if ours.get("saturated") or theirs.get("saturated"):
        who = [n for n, r in (("sluiceway", ours), (name, theirs)) if r.get("saturated")]
        return " and ".join(who) + " saturated"
    a, b = ours.get(key), theirs.get(key)
    if higher and a and not b:
        return f"{name} delivered none"
    r = ratio(a, b, higher)
    return "-" if r is None else f"{r:.1f}x"


def targets(ours: dict[str, Any], seed100: dict[str, Any], litellm100: dict[str, Any]) -> list[str]:
    """sluiceway's targets, from its phases and the peers' flat phases at 100 streams."""
    tgt = []
    s100 = ours.get("flat-100", {})
    if s100.get("tokens_per_s") and seed100.get("tokens_per_s"):
        r = s100["tokens_per_s"] / seed100["tokens_per_s"]
        ttft, seed_ttft = s100.get("ttft_p99_ms"), seed100.get("ttft_p99_ms")
        no_worse = ttft is not None and seed_ttft is not None and ttft <= seed_ttft
        tgt.append(
            f"{r:.1f}x the seed gateway's tokens/s at 100 streams (≥ 10x: {met(r >= 10)}),"
            f" TTFT p99 {ttft} vs {seed_ttft} ms (no worse: {met(no_worse)})"
        )
    f100 = s100.get("tokens_per_gateway_cpu_s")
    l100 = litellm100.get("tokens_per_gateway_cpu_s")
    if f100 and l100:
        r = f100 / l100
        tgt.append(
            f"{r:.1f}x LiteLLM's tokens per CPU-second at 100 streams (≥ 10x: {met(r >= 10)})"
        )
    p99 = ours.get("paced-100", {}).get("added_gap_p99_ms")
    if ours.get("paced-100", {}).get("saturated"):
        tgt.append("saturated at 100 paced streams (< 1 ms added p99: MISSED)")
    elif p99 is not None:
        tgt.append(f"added p99 {p99} ms at 100 streams (< 1 ms: {met(p99 < 1)})")
    return tgt


def load_notes(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Warnings: a load-generator-bound phase, other processes on a benchmark core, a target
    that failed."""
    notes = []
    for n, res in results.items():
        for key, r in res.get("phases", {}).items():
            c = r.get("cpu")
            if not c:
                continue
            # Our own load on the load generator's core: this process, and the upstream if it
            # shares the core. Saturated while the gateway is not: the harness is the limit.
            own = c.get("loadgen_cpu_pct", 0.0)
            if args.upstream_cpu == args.loadgen_cpu:
                own += c.get("upstream_cpu_pct", 0.0)
            gw = c.get("gateway_cpu_pct", 0.0)
            if n != "direct" and own >= 85 and gw < 90:
                notes.append(
                    f"{n}/{key}: load generator + upstream took {own:.0f}% of core"
                    f" {args.loadgen_cpu} while the gateway used {gw:.0f}%: may be"
                    " load-generator-bound"
                )
            for core in sorted({args.gateway_cpu, args.loadgen_cpu}):
                other = c.get(f"core{core}_other_pct", 0)
                if other >= DISTURBED_PCT:
                    notes.append(f"{n}/{key}: {other}% of core {core} was not our processes")
        if "error" in res:
            notes.append(f"{n}: {res['error'][:300]}")
    return notes


def render_table(doc: dict[str, Any], args: argparse.Namespace) -> str:
    results = doc["results"]
    names = list(results)

    def get(n: str, key: str) -> dict[str, Any]:
        return cast(dict[str, Any], results.get(n, {}).get("phases", {}).get(key, {}))

    def cell(n: str, key: str, f: Cell) -> str:
        if "error" in results[n] and not results[n].get("phases"):
            return "**FAILED**"
        r = get(n, key)
        if not r:
            return "not run"
        if "error" in r:
            return f"**FAILED**: {r['error'][:80]}"
        return f(r)

    rows = [[label, *(cell(n, key, f) for n in names)] for label, key, f in table_rows(args)]
    lines = md_table(["metric", *names], rows)
    if "sluiceway" in results:
        for peer in (p for p in ("seed", "litellm") if p in results):
            name = PEER_NAMES[peer]
            header = [
                f"sluiceway vs {name} (one run)",
                *(f"{c:,} streams" for c in args.concurrency),
            ]
            ratios = [
                [
                    label,
                    *(
                        peer_ratio(
                            get("sluiceway", f"{mode}-{c}"),
                            get(peer, f"{mode}-{c}"),
                            key,
                            higher,
                            name,
                        )
                        for c in args.concurrency
                    ),
                ]
                for label, mode, key, higher in PEER_RATIOS
                if mode in args.modes
            ]
            lines += ["", *md_table(header, ratios)]
        ours = results["sluiceway"].get("phases", {})
        if tgt := targets(ours, get("seed", "flat-100"), get("litellm", "flat-100")):
            lines += ["", "sluiceway targets: " + "; ".join(tgt)]
    if notes := load_notes(results, args):
        lines += ["", "Warnings: " + "; ".join(notes)]
    machine = doc["machine"]
    versions = machine["versions"]
    dirty = ", src modified" if machine.get("src_dirty") else ""
    lines += [
        "",
        f"LiteLLM {versions.get('litellm')}, sluiceway {versions.get('sluiceway')}"
        f" (git {machine.get('git_commit')}{dirty})."
        f" Gateway pinned to core {args.gateway_cpu}, load generator to core {args.loadgen_cpu},"
        f" fake upstream to core {args.upstream_cpu}. CPU: user+system time of each process as %"
        " of the measured window. Core busy: /proc/stat, including softirq (loopback TCP"
        " delivery). Added gap: (arrival gap) - (upstream write gap) between consecutive"
        " tokens of a stream; transit: arrival - upstream write.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of: " + ", ".join(TARGETS),
    )
    p.add_argument("--modes", default="flat,paced", help="comma-separated subset of: flat, paced")
    p.add_argument(
        "--concurrency", default="1,100,1000", help="concurrent streams, comma-separated"
    )
    p.add_argument("--tokens", type=int, default=200, help="tokens per stream in flat mode")
    p.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="flat: at least this many seconds of load before the measured window",
    )
    p.add_argument(
        "--max-warmup",
        type=float,
        default=10.0,
        help="flat: the window starts once every stream has sent its first bytes,"
        " or after this many seconds",
    )
    p.add_argument("--duration", type=float, default=5.0, help="flat: measured window, seconds")
    p.add_argument(
        "--verify-tokens",
        type=int,
        default=300_000,
        help="flat: parse and check every stream of the window up to this many tokens, an even"
        " sample beyond",
    )
    p.add_argument("--interval-ms", type=float, default=20.0, help="paced: upstream token interval")
    p.add_argument(
        "--ramp", type=float, default=1.0, help="paced: streams start spread over this many seconds"
    )
    p.add_argument(
        "--paced-duration",
        type=float,
        default=6.0,
        help="paced: measured window after the ramp, seconds",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="paced: after the window, how long streams may take to finish",
    )
    p.add_argument(
        "--warmup-requests-s",
        type=float,
        default=1.0,
        help="seconds of small requests through each target before measuring",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each window wait up to this long for the cores to be idle",
    )
    p.add_argument(
        "--disturbed-retries",
        type=int,
        default=1,
        help="run a phase again (this many times at most) when other processes took"
        f" >= {DISTURBED_PCT:g}%% of a benchmark core during its window",
    )
    p.add_argument(
        "--settle-wait",
        type=float,
        default=5.0,
        help="a gateway still busy this long after a phase is restarted before the next (0: never)",
    )
    p.add_argument("--phase-budget", type=float, default=120.0, help="hard cap on one phase, s")
    p.add_argument("--ready-timeout", type=float, default=90.0, help="gateway start limit, s")
    p.add_argument("--gateway-cpu", type=int, default=0, help="core the gateways are pinned to")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="core this process is pinned to")
    p.add_argument("--upstream-cpu", type=int, default=1, help="core the fake upstream runs on")
    p.add_argument(
        "--litellm-venv",
        type=Path,
        default=LITELLM_VENV,
        help="venv for the LiteLLM proxy (created with uv on first use)",
    )
    p.add_argument("--litellm-spec", default=LITELLM_SPEC, help="what to pip install there")
    add_out_argument(p)
    p.add_argument("--quick", action="store_true", help="short windows, 1 and 100 streams")
    args = p.parse_args(argv)
    args.targets = choices(p, args.targets, TARGETS, "target")
    args.modes = choices(p, args.modes, PHASES, "mode")
    args.concurrency = [int(s) for s in args.concurrency.split(",") if s.strip()]
    if args.quick:
        args.concurrency = [c for c in args.concurrency if c <= 100] or [1]
        args.warmup, args.max_warmup, args.duration = 0.5, 2.0, 1.0
        args.ramp, args.paced_duration, args.grace = 0.5, 1.0, 1.0
        args.settle_wait = 0.0  # never restart a busy gateway (a LiteLLM start takes 15 s)
        args.warmup_requests_s = 0.5
        args.quiet_wait = 1.0
        args.disturbed_retries = 0
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="llm-gateway-logs-"))
    t0 = time.monotonic()
    up_port = free_port()
    script = BENCH_DIR / "peers" / "fake_openai_upstream.py"
    cmd = [
        *pinned(args.upstream_cpu),
        str(VENV_BIN / "python"),
        str(script),
        "--port",
        str(up_port),
    ]
    upstream = Proc("upstream", cmd, log_dir / "upstream.log", port=up_port, append=True)
    upstream.start()
    results: dict[str, Any] = {}
    try:
        await upstream.wait_ready(15, attempt_s=2, poll_s=0.2)
        for name in args.targets:
            say(f"== {name}")
            results[name] = await bench_target(name, upstream, up_port, args, log_dir)
        stats = await upstream_stats(up_port)
    finally:
        upstream.stop()
    say(f"logs in {log_dir}")
    return {
        "results": results,
        "upstream": {"cmd": upstream.cmd, "stats": stats},
        "total_wall_s": round(time.monotonic() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(2 * max(args.concurrency) + 1024)
    pin_self(args.loadgen_cpu)
    started = timestamp()
    run = uvloop.run(amain(args))
    save_results(
        "llm_gateway",
        started,
        argv,
        config_of(args),
        machine_record(args),
        run,
        lambda doc: render_table(doc, args),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
