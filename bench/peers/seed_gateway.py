"""Peer: the gateway people write first — FastAPI, the official ``AsyncOpenAI`` client, and a
``StreamingResponse`` that re-streams each chunk as SSE. What every tutorial and most
production "proxy" endpoints look like; run like them, with uvicorn's uvloop and httptools::

    OPENAI_BASE_URL=http://127.0.0.1:9000/v1 OPENAI_API_KEY=x \\
        uvicorn seed_gateway:app --app-dir bench/peers --loop uvloop --http httptools
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from openai import AsyncOpenAI

app = FastAPI()
# A pool as large as the benchmark's concurrency: the default (100 connections) would make the
# peer queue requests that the gateways it is compared with serve at once.
client = AsyncOpenAI(
    http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=4096)), max_retries=0
)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> StreamingResponse:
    body: dict[str, Any] = await request.json()

    async def events() -> AsyncIterator[str]:
        stream = await client.chat.completions.create(**body)
        async for chunk in stream:
            yield f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")
