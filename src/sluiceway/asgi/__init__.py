"""ASGI building blocks: the SSE response and its shutdown handling."""

from sluiceway.asgi.eventstream import SSE_HEADERS, EventStreamResponse, encode_item
from sluiceway.asgi.shutdown import (
    close_all_streams,
    end_streams_on_uvicorn_exit,
    open_stream_count,
    stop_first,
)

__all__ = [
    "SSE_HEADERS",
    "EventStreamResponse",
    "close_all_streams",
    "encode_item",
    "end_streams_on_uvicorn_exit",
    "open_stream_count",
    "stop_first",
]
