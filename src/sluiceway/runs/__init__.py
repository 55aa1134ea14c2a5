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

See :mod:`sluiceway.runs.http` for the endpoints (FastAPI and Starlette) that serve them.
"""

from sluiceway.llm.chunks import Finish, TextDelta, ToolCallDelta, ToolResult, Usage
from sluiceway.runs.directory import RedisRunDirectory, RemoteRun, RunDirectory
from sluiceway.runs.follow import run_batches, run_events, run_frames, run_stream
from sluiceway.runs.items import TERMINAL_EVENTS, ItemEncoder, RunError
from sluiceway.runs.limits import RunLimits
from sluiceway.runs.manager import RunRefused, Runs
from sluiceway.runs.run import Run, RunObserver, RunState

__all__ = [
    "TERMINAL_EVENTS",
    "Finish",
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
    "ToolCallDelta",
    "ToolResult",
    "Usage",
    "run_batches",
    "run_events",
    "run_frames",
    "run_stream",
]
