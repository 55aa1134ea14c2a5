"""An agent loop as one run: model → tool call → tool result → model, served to ``useChat``.

    OPENAI_API_KEY=sk-... uv run python examples/agent.py

``POST /api/chat`` takes what the Vercel AI SDK's ``useChat`` sends and streams its UI message
stream: text, the tool call (its arguments whole), the tool's result, then the model's next
answer as a new step. The run goes on when the browser leaves; ``useChat({ resume: true })``
reconnects with ``GET /api/chat/{chatId}/stream``, and ``POST /api/chat/{chatId}/cancel`` stops
the whole loop (and the request to the model in flight)::

    const { messages, sendMessage } = useChat({
      id: chatId, resume: true, transport: new DefaultChatTransport({ api: "/api/chat" }),
    });
"""

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import Body, Depends, FastAPI, HTTPException
from openai import AsyncOpenAI

from sluiceway.hub import Hub
from sluiceway.llm.ai_sdk_format import BadRequest, parse_chat_request
from sluiceway.runs import Runs, ToolCalls, ToolResult, openai_chunks, token_subject

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
MAX_STEPS = 5

runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="agent")
current_user = token_subject(os.environ.get("TOKEN_SECRET"))
app = FastAPI(lifespan=runs.lifespan)
app.include_router(runs.router(prefix="/runs", identify=current_user, chats="/api/chat"))
openai = AsyncOpenAI()

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def get_weather(city: str) -> dict[str, Any]:
    return {"city": city, "temperature_c": 18, "sky": "clear"}  # your API call here


async def agent(messages: list[dict[str, Any]]) -> AsyncIterator[Any]:
    """Ask the model; run the tools it calls; ask again with their results; until it answers."""
    for _ in range(MAX_STEPS):
        calls = ToolCalls()
        call = openai.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=TOOLS,
            stream=True,  # type: ignore[arg-type]
        )
        async for chunk in openai_chunks(call):
            calls.add(chunk)
            yield chunk  # text and tool-call deltas go to the client as they come
        if not calls:
            return
        messages.append(calls.assistant_message())
        for tool_call in calls:
            result = await get_weather(**tool_call.arguments())
            yield ToolResult(tool_call.id, result)
            messages.append(
                {"role": "tool", "tool_call_id": tool_call.id, "content": json.dumps(result)}
            )


@app.post("/api/chat")
async def chat(body: Any = Body(), user: str | None = Depends(current_user)):  # noqa: B008
    try:
        turn = parse_chat_request(body, default_max_tokens=1024)
    except BadRequest as exc:
        raise HTTPException(400, str(exc)) from None
    messages = [m.model_dump(exclude_none=True) for m in turn.request.messages]
    return await runs.respond(
        agent(messages), owner=user, format="ai-sdk", chat_id=turn.chat_id, meta={"model": MODEL}
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
