"""Your own OpenAI endpoint, detached: resumable, cancellable, owned.

    OPENAI_API_KEY=sk-... uv run python examples/openai_chat.py

``POST /chat`` ``{"messages": [{"role": "user", "content": "Hi"}]}`` streams the answer as SSE
(``start`` with the run's id, ``token``..., ``done``). The answer goes on when the client
leaves: ``GET /answers/{id}/events`` with ``Last-Event-ID`` resumes it exactly, ``POST
/answers/{id}/cancel`` stops it (and the request to OpenAI), ``GET /answers/{id}`` describes
it. ``"format": "openai"`` streams OpenAI's own chunks instead (for the OpenAI SDKs).

Any OpenAI-compatible server works: ``OPENAI_BASE_URL=http://127.0.0.1:8000/v1`` is ``uv run
sluiceway serve`` and its small local model. ``REDIS_URL``: runs shared by every process.
``TOKEN_SECRET``: callers send ``Authorization: Bearer <JWT>`` and see only their own runs.
"""

import os

import uvicorn
from fastapi import Depends, FastAPI
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from sluiceway.hub import Hub
from sluiceway.runs import Format, Runs, openai_chunks, token_subject

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="answer")
current_user = token_subject(os.environ.get("TOKEN_SECRET"))
app = FastAPI(lifespan=runs.lifespan)
app.include_router(runs.router(prefix="/answers", identify=current_user))
openai = AsyncOpenAI()


class Message(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str = Field(max_length=100_000)


class Question(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=100)
    format: Format = "sse"


@app.post("/chat")
async def chat(question: Question, user: str | None = Depends(current_user)):
    call = openai.chat.completions.create(
        model=MODEL,
        messages=[m.model_dump() for m in question.messages],  # type: ignore[misc]
        stream=True,
        stream_options={"include_usage": True},
    )
    return await runs.respond(
        openai_chunks(call), owner=user, format=question.format, meta={"model": MODEL}
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
