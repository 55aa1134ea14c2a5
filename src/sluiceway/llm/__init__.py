"""LLM token streams: providers, detached and resumable generations, OpenAI's wire format."""
