"""The LLM gateway of ``sluiceway serve``: generations started by the server itself from a chat
request (``POST /v1/generations``, the OpenAI, Anthropic, Responses and AI SDK endpoints),
detached, resumable and cancellable. It is built on :mod:`sluiceway.runs`, as a user's own
streams are; the wire formats and providers it speaks are :mod:`sluiceway.llm`'s.
"""
