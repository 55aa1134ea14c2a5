"""A long job's progress, as a run: it goes on when nobody watches, and anyone may look in.

    uv run python examples/progress.py

``POST /imports`` ``{"rows": 500}`` starts an import and streams its progress as SSE:
``progress`` events ``{"done": n, "total": N}``, then ``{"imported": N}``, then ``done``. The
import is a *background* run: closing the page does not stop it; ``GET /imports/{id}/events``
(``Last-Event-ID``) picks the progress up again, ``GET /imports/{id}`` tells where it stands,
``POST /imports/{id}/cancel`` stops it (its ``finally`` runs: roll back, clean up).
"""

import asyncio
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from sluiceway.hub import Hub
from sluiceway.runs import RunError, RunLimits, Runs, token_subject
from sluiceway.sse import Event

#: An import may take an hour; its progress stays replayable for a day after it ends.
LIMITS = RunLimits(max_duration=3600, first_item_timeout=60, retention=86_400, max_per_owner=4)

runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="import", limits=LIMITS)
current_user = token_subject(os.environ.get("TOKEN_SECRET"))
app = FastAPI(lifespan=runs.lifespan)
app.include_router(runs.router(prefix="/imports", identify=current_user))
SECONDS_PER_ROW = float(os.environ.get("SECONDS_PER_ROW", "0.01"))


class Import(BaseModel):
    rows: int = Field(ge=1, le=1_000_000)


async def import_rows(rows: int) -> AsyncIterator[Event | dict[str, int]]:
    if rows > 100_000:  # raised before the first item: the client gets this status
        raise RunError("too_large", "imports of more than 100000 rows need a ticket", status=413)
    imported = 0
    try:
        for row in range(rows):
            await asyncio.sleep(SECONDS_PER_ROW)  # your work here
            imported = row + 1
            if imported % 10 == 0 or imported == rows:
                yield Event(data=f'{{"done": {imported}, "total": {rows}}}', event="progress")
        yield {"imported": imported}  # a JSON value: a "message" event
    finally:
        if imported < rows:  # cancelled, or the server stops: roll back here
            print(f"import stopped after {imported} of {rows} rows: rolled back", flush=True)


@app.post("/imports")
async def start_import(job: Import, user: str | None = Depends(current_user)):
    return await runs.respond(import_rows(job.rows), owner=user, background=True)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
