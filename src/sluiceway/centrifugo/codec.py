"""The two formats of Centrifugo's client protocol, as one interface: JSON in text frames (the
default) and Protobuf in binary frames (the ``centrifuge-protobuf`` WebSocket subprotocol, which
the official SDKs ask for when told to use Protobuf).

The protocol (:mod:`sluiceway.centrifugo.protocol`) builds every reply, push and publication
through the connection's :class:`Codec`, so both formats have the same semantics and limits.

>>> JSON.reply(1, "publish")
b'{"id":1,"publish":{}}'
>>> PROTOBUF.reply(1, "publish")
b'\\x04\\x08\\x01B\\x00'
>>> for_subprotocols(["centrifuge-protobuf"]).name
'protobuf'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.centrifugo import codes, frames, protobuf_frames
from sluiceway.centrifugo.frames import Command

#: The WebSocket subprotocol of the Protobuf format.
PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


@dataclass(frozen=True, slots=True)
class Codec:
    """How one format reads commands and writes replies, pushes and publications."""

    name: str
    #: Binary WebSocket frames (else text).
    binary: bool
    #: The server's ping.
    ping: bytes
    #: What joins several messages in one frame.
    separator: bytes
    parse_frame: Callable[[bytes], list[Command]]
    reply: Callable[[int, str, dict[str, Any] | None], bytes]
    error_reply: Callable[[int, codes.ReplyError], bytes]
    push: Callable[[str, str, dict[str, Any]], bytes]
    #: A Publication of stored text ``(offset, data, event type, tags)``.
    publication: Callable[[int, str, str | None, Mapping[str, str]], bytes]
    #: The push of an encoded Publication to a channel.
    publication_push: Callable[[str, bytes], bytes]
    #: An encoded Publication as a value inside a reply (history, recovery).
    encoded: Callable[[bytes], Any]
    #: Stored text as the bytes a client with deltas rebuilds (what deltas are made between).
    delta_data: Callable[[str], bytes]
    #: A Publication of a subscription with deltas ``(offset, payload, event type, tags,
    #: delta)``: the :attr:`delta_data`, or a fossil delta of it against the previous one's.
    delta_publication: Callable[[int, bytes, str | None, Mapping[str, str], bool], bytes]


def _json_publication(offset: int, data: str, event: str | None, tags: Mapping[str, str]) -> bytes:
    return frames.publication(offset, frames.json_data(data), event, tags)


def _json_delta_publication(
    offset: int, payload: bytes, event: str | None, tags: Mapping[str, str], delta: bool
) -> bytes:
    # With deltas Centrifugo's JSON format carries every publication's data as a JSON string
    # (the JSON text, or the delta): the SDKs rebuild the text, then parse it.
    return frames.publication(offset, orjson.dumps(payload.decode()), event, tags, delta=delta)


def _protobuf_delta_publication(
    offset: int, payload: bytes, event: str | None, tags: Mapping[str, str], delta: bool
) -> bytes:
    return protobuf_frames.delta_publication(offset, payload, event, tags, delta=delta)


def _json_frame(frame: bytes) -> list[Command]:
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        raise codes.BAD_REQUEST from None
    return frames.parse_frame(text)


JSON = Codec(
    name="json",
    binary=False,
    ping=frames.PING,
    separator=b"\n",
    parse_frame=_json_frame,
    reply=frames.reply,
    error_reply=frames.error_reply,
    push=frames.push,
    publication=_json_publication,
    publication_push=frames.publication_push,
    encoded=orjson.Fragment,
    delta_data=frames.json_data,
    delta_publication=_json_delta_publication,
)

PROTOBUF = Codec(
    name="protobuf",
    binary=True,
    ping=protobuf_frames.PING,
    separator=b"",
    parse_frame=protobuf_frames.parse_frame,
    reply=protobuf_frames.reply,
    error_reply=protobuf_frames.error_reply,
    push=protobuf_frames.push,
    publication=protobuf_frames.publication,
    publication_push=protobuf_frames.publication_push,
    encoded=protobuf_frames.Encoded,
    delta_data=str.encode,
    delta_publication=_protobuf_delta_publication,
)


def for_subprotocols(offered: list[str]) -> Codec:
    """The format a WebSocket handshake asks for (its ``Sec-WebSocket-Protocol`` list)."""
    return PROTOBUF if PROTOBUF_SUBPROTOCOL in offered else JSON
