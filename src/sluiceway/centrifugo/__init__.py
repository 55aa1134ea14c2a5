"""WebSockets that speak Centrifugo's bidirectional client protocol (JSON), over the hub.

Maintained client SDKs (JavaScript, Python, Swift, Kotlin, Dart, Go) connect unchanged; their
channels are the hub's topics, with the same history, epoch and offsets as SSE.

>>> from sluiceway.centrifugo import CentrifugoEndpoint, CentrifugoOptions
>>> options = CentrifugoOptions(publish_channels=["chat:*"])
>>> endpoint = CentrifugoEndpoint(hub, options)  # doctest: +SKIP
"""

from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.endpoint import CentrifugoEndpoint, EndpointStats
from sluiceway.centrifugo.options import CentrifugoOptions, Client, Hooks
from sluiceway.centrifugo.presence import MemoryPresence, Presence, RedisPresence

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
