"""What a caller asks of a model: the provider-neutral request every provider translates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """One message of the conversation (OpenAI's shape: a role and text content)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=1_000_000)
    #: For ``role: tool``: the id of the call this answers.
    tool_call_id: str | None = None
    #: For ``role: assistant``: the tool calls it made (OpenAI's shape).
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """A provider-neutral chat request.

    ``tools`` use OpenAI's function-tool shape (``{"type": "function", "function": {...}}``);
    providers translate them.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=1000)
    #: None: the provider's configured default model.
    model: str | None = Field(default=None, max_length=200)
    max_tokens: int = Field(default=512, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=4)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
