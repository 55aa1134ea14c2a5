"""Structured output as it forms: a JSON answer streamed as partial values, detached.

    OPENAI_API_KEY=sk-... uv run python examples/structured.py

``POST /recipes`` ``{"dish": "pancakes"}`` asks the model for a recipe as JSON (a JSON schema)
and streams ``partial`` events, ``{"value": ...}``: the object parsed so far, strings still
growing (a UI renders the list of ingredients as it fills), at most 10 a second. The last is
the complete, validated value. Resume and cancel as in ``openai_chat.py``.
"""

import os
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from sluiceway.hub import Hub
from sluiceway.runs import Runs, openai_chunks, token_subject

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

runs = Runs(Hub.from_url(os.environ.get("REDIS_URL")), family="recipe")
current_user = token_subject(os.environ.get("TOKEN_SECRET"))
app = FastAPI(lifespan=runs.lifespan)
app.include_router(runs.router(prefix="/recipes", identify=current_user))
openai = AsyncOpenAI()


class Recipe(BaseModel):
    title: str
    ingredients: list[str]
    steps: list[str]


SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "recipe", "schema": Recipe.model_json_schema(), "strict": True},
}


class Order(BaseModel):
    dish: str = Field(min_length=1, max_length=200)


@app.post("/recipes")
async def recipe(order: Order, user: str | None = Depends(current_user)):
    call = openai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"A recipe for {order.dish}, as JSON."}],
        response_format=SCHEMA,  # type: ignore[arg-type]
        stream=True,
    )
    return await runs.respond(
        openai_chunks(call), owner=user, partial_json=True, meta={"model": MODEL}
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
