"""Build the configured provider; keys stay in ``SecretStr`` until the request header."""

from __future__ import annotations

from pydantic import SecretStr

from sluiceway.llm.providers.base import Provider

DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}


def make_provider(
    kind: str, *, base_url: str | None, api_key: SecretStr | None, model: str | None
) -> Provider:
    """``local`` (the default, no key, no network), ``openai`` (any compatible API) or
    ``anthropic``."""
    key = api_key.get_secret_value() if api_key is not None else None
    if kind == "openai":
        from sluiceway.llm.providers.openai import OpenAIProvider

        return OpenAIProvider(
            base_url=base_url or "https://api.openai.com/v1",
            api_key=key,
            default_model=model or DEFAULT_MODELS["openai"],
        )
    if kind == "anthropic":
        from sluiceway.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            base_url=base_url or "https://api.anthropic.com",
            api_key=key,
            default_model=model or DEFAULT_MODELS["anthropic"],
        )
    if kind == "local":
        from sluiceway.llm.providers.local import LocalProvider

        return LocalProvider()
    raise ValueError(f"unknown provider {kind!r}: expected local, openai or anthropic")
