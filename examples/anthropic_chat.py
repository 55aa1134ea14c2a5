"""Your own Anthropic endpoint, detached: ``messages.stream`` as a resumable, cancellable run.

    ANTHROPIC_API_KEY=sk-ant-... uv run python examples/anthropic_chat.py

``POST /chat`` ``{"messages": [{"role": "user", "content": "Hi"}]}`` streams the answer as SSE
(``start``, ``token``..., ``done``); ``"format": "anthropic"`` streams Anthropic's own Messages
events instead (for the Anthropic SDKs), ``"openai"`` OpenAI's chunks: the endpoint picks.
``GET /answers/{id}/events`` (``Last-Event-ID``) resumes, ``POST /answers/{id}/cancel`` stops
the answer and the request to Anthropic. ``ANTHROPIC_BASE_URL=http://127.0.0.1:8000`` is ``uv
run sluiceway serve`` and its small local model; ``REDIS_URL`` and ``TOKEN_SECRET`` as in
``openai_chat.py``.
"""

import os

import uvicorn
from anthropic import AsyncAnthropic
from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from sluiceway.hub import Hub
from sluiceway.runs import Format, Runs, anthropic_chunks, token_subject

MODEL = os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5")

runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="answer")
current_user = token_subject(os.environ.get("TOKEN_SECRET"))
app = FastAPI(lifespan=runs.lifespan)
app.include_router(runs.router(prefix="/answers", identify=current_user))
anthropic = AsyncAnthropic()


class Message(BaseModel):
    role: str = Field(pattern="^(user|assistant)$")
    content: str = Field(max_length=100_000)


class Question(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=100)
    max_tokens: int = Field(default=1024, ge=1, le=8192)
    format: Format = "sse"


@app.post("/chat")
async def chat(question: Question, user: str | None = Depends(current_user)):
    stream = anthropic.messages.stream(
        model=MODEL,
        max_tokens=question.max_tokens,
        messages=[m.model_dump() for m in question.messages],  # type: ignore[misc]
    )
    return await runs.respond(
        anthropic_chunks(stream), owner=user, format=question.format, meta={"model": MODEL}
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
