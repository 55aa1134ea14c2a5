"""WebSockets that speak Centrifugo's bidirectional client protocol (JSON or Protobuf), over the
hub.

Maintained client SDKs (JavaScript, Python, Swift, Kotlin, Dart, Go) connect unchanged; their
channels are the hub's topics, with the same history, epoch and offsets as SSE.

>>> from sluiceway.centrifugo import CentrifugoEndpoint, CentrifugoOptions
>>> options = CentrifugoOptions(publish_channels=["chat:*"])
>>> endpoint = CentrifugoEndpoint(hub, options)  # doctest: +SKIP

The protocol itself is :mod:`sluiceway.centrifugo.protocol`, which does no I/O; the endpoint
and presence (asyncio, the hub, Redis) are imported when first named, so that importing the
protocol's modules does not import them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.options import CentrifugoOptions, Client, Hooks
from sluiceway.centrifugo.stats import EndpointStats

if TYPE_CHECKING:
    from sluiceway.centrifugo.endpoint import CentrifugoEndpoint
    from sluiceway.centrifugo.presence import MemoryPresence, Presence, RedisPresence

_LAZY = {
    "CentrifugoEndpoint": "sluiceway.centrifugo.endpoint",
    "MemoryPresence": "sluiceway.centrifugo.presence",
    "Presence": "sluiceway.centrifugo.presence",
    "RedisPresence": "sluiceway.centrifugo.presence",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CentrifugoEndpoint",
    "CentrifugoOptions",
    "Client",
    "Disconnect",
    "EndpointStats",
    "Hooks",
    "MemoryPresence",
    "Presence",
    "RedisPresence",
    "ReplyError",
]
