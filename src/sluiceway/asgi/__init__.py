"""ASGI building blocks: the SSE response, its shutdown handling, and the hub's errors as
answers (:func:`install_error_handlers`)."""

from sluiceway.asgi.errors import EXCEPTION_HANDLERS, HUB_ERRORS, install_error_handlers
from sluiceway.asgi.eventstream import SSE_HEADERS, EventStreamResponse, encode_item
from sluiceway.asgi.shutdown import (
    close_all_streams,
    end_streams_on_uvicorn_exit,
    open_stream_count,
    stop_first,
)

__all__ = [
    "EXCEPTION_HANDLERS",
    "HUB_ERRORS",
    "SSE_HEADERS",
    "EventStreamResponse",
    "close_all_streams",
    "encode_item",
    "end_streams_on_uvicorn_exit",
    "install_error_handlers",
    "open_stream_count",
    "stop_first",
]
