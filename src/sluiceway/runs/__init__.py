"""Runs: any async iterator, run detached from the request that started it, as a resumable,
cancellable stream in the hub.

The people Sluiceway is for write their own streaming code — a FastAPI endpoint that calls an
LLM SDK, runs tools, retrieves documents, reports progress. A :class:`Runs` family turns that
code into runs: started by a request, followed and resumed by any number of clients (by run id
and ``Last-Event-ID``, exactly), cancelled from anywhere, ended explicitly however they end,
bounded in time, items, bytes and concurrency, and owned by whoever started them.

>>> runs = Runs(Hub(), family="answer")                            # doctest: +SKIP
>>> async def answer(question):
...     yield {"status": "thinking"}
...     yield TextDelta("Hello")
>>> run = runs.start(answer("hi"), owner="alice")                  # doctest: +SKIP

In a FastAPI app (the endpoints are :mod:`sluiceway.runs.http`'s, FastAPI's in
:mod:`sluiceway.runs.fastapi`)::

    runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="answer")
    app = FastAPI(lifespan=runs.lifespan)
    app.include_router(runs.router(prefix="/answers", identify=current_user))

    @app.post("/answers")
    async def answer(question: Question, user: str | None = Depends(current_user)):
        call = openai.chat.completions.create(model=MODEL, messages=..., stream=True)
        return await runs.respond(openai_chunks(call), owner=user)
"""

from typing import TYPE_CHECKING, Any

from sluiceway.llm.chunks import Finish, TextDelta, ToolCallDelta, ToolResult, Usage
from sluiceway.runs.directory import RemoteRun, RunDirectory
from sluiceway.runs.follow import run_batches, run_events, run_frames, run_stream
from sluiceway.runs.formats import FORMATS, Format
from sluiceway.runs.http import respond, run_response, run_routes, token_subject
from sluiceway.runs.items import TERMINAL_EVENTS, ItemEncoder, RunError
from sluiceway.runs.limits import RunLimits
from sluiceway.runs.manager import RunRefused, Runs
from sluiceway.runs.run import Run, RunObserver, RunState
from sluiceway.runs.sdk import anthropic_chunks, openai_chunks
from sluiceway.runs.tools import ToolCall, ToolCalls

if TYPE_CHECKING:
    from sluiceway.runs.redis_directory import RedisRunDirectory


def __getattr__(name: str) -> Any:
    # Imported on first use: it needs the ``redis`` extra.
    if name == "RedisRunDirectory":
        from sluiceway.runs.redis_directory import RedisRunDirectory

        return RedisRunDirectory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "TERMINAL_EVENTS",
    "Finish",
    "Format",
    "ItemEncoder",
    "RedisRunDirectory",
    "RemoteRun",
    "Run",
    "RunDirectory",
    "RunError",
    "RunLimits",
    "RunObserver",
    "RunRefused",
    "RunState",
    "Runs",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCalls",
    "ToolResult",
    "Usage",
    "anthropic_chunks",
    "openai_chunks",
    "respond",
    "run_batches",
    "run_events",
    "run_frames",
    "run_response",
    "run_routes",
    "run_stream",
    "token_subject",
]
