"""The Protobuf format of Centrifugo's client protocol (the ``centrifuge-protobuf`` WebSocket
subprotocol), sans I/O: frames in, bytes out.

A binary frame holds one or more messages, each prefixed by its length as a varint: ``Command``
messages from the client, ``Reply`` messages from the server (a push is a reply without id).
An empty message is a ping from the server and the pong that answers it.

The semantics are the JSON format's (:mod:`sluiceway.centrifugo.frames`): a command's request
becomes the same ``params`` the JSON format gives (field names are the protocol's in both), so
:class:`~sluiceway.centrifugo.protocol.CentrifugoProtocol` runs both the same way.  Two
differences, both the protocol's own: ``bytes`` fields (a publication's or a hook's ``data``)
arrive as :class:`RawData`, and publication data goes out as the published text's UTF-8 bytes
(a JSON subscriber of the same channel gets it as JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from sluiceway.centrifugo import codes
from sluiceway.centrifugo.frames import METHODS, Command
from sluiceway.centrifugo.wire import client_pb2 as pb

#: A ping (and the pong): an empty message.
PING = b"\x00"
_NO_TAGS: Mapping[str, str] = {}
#: Deeper than any message of the protocol nests (a filter's nodes): refused, not recursed.
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class RawData:
    """A ``bytes`` field of a command: the client's payload as it sent it."""

    data: bytes

    def text(self) -> str:
        """The payload as text (the hub stores text); refused with 107 unless UTF-8."""
        try:
            return self.data.decode()
        except UnicodeDecodeError:
            raise codes.bad_request("data must be UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A Publication already encoded, inside a reply (history, recovery)."""

    message: bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(message: bytes) -> bytes:
    """``message`` prefixed with its length, as frames hold it."""
    return _varint(len(message)) + message


def split(frame: bytes) -> list[bytes]:
    """The length-prefixed messages of a frame.  Raises :class:`codes.Disconnect` (3501) when
    the lengths do not add up to the frame.

    >>> split(b"\\x02\\x08\\x01\\x00")
    [b'\\x08\\x01', b'']
    """
    messages: list[bytes] = []
    position, end = 0, len(frame)
    while position < end:
        length, shift = 0, 0
        while True:
            if position >= end or shift > 28:  # cut short, or longer than a frame can be
                raise codes.BAD_REQUEST
            byte = frame[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if position + length > end:
            raise codes.BAD_REQUEST
        messages.append(frame[position : position + length])
        position += length
    return messages


def parse_frame(frame: bytes) -> list[Command]:
    """The commands of one binary frame.  Raises :class:`codes.Disconnect` (3501) for a frame
    that is not length-prefixed ``Command`` messages."""
    commands: list[Command] = []
    for raw in split(frame):
        try:
            message = pb.Command.FromString(raw)
        except DecodeError:
            raise codes.BAD_REQUEST from None
        commands.append(_command(message))
    return commands


def _command(message: pb.Command) -> Command:
    for method in METHODS:
        if message.HasField(method):
            return Command(message.id, method, _values(getattr(message, method), 0))
    if message.id == 0:
        return Command(0, "", {})  # a pong
    return Command(message.id, "?", {})


def _values(message: Message, depth: int) -> dict[str, Any]:
    """A message as the JSON format's params: its set fields by name."""
    if depth > MAX_DEPTH:
        raise codes.BAD_REQUEST
    return {field.name: _value(field, value, depth + 1) for field, value in message.ListFields()}


def _value(field: Any, value: Any, depth: int) -> Any:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        entry = message_type.fields_by_name["value"]
        return {key: _single(entry, item, depth) for key, item in value.items()}
    if _repeated(field):
        return [_single(field, item, depth) for item in value]
    return _single(field, value, depth)


def _single(field: Any, value: Any, depth: int) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _values(value, depth)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return RawData(value)
    return value


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # newer protobuf; ``label`` before
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == 3)  # LABEL_REPEATED


# -- output --------------------------------------------------------------------------------------


def _fill(message: Message, values: dict[str, Any]) -> None:
    """Set ``message``'s fields from a JSON format result (``bytes`` fields from JSON values,
    publications from :class:`Encoded`)."""
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        field = fields[name]
        target = getattr(message, name)
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            entry = message_type.fields_by_name["value"]
            for key, item in value.items():
                if entry.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(target[key], item)
                else:
                    target[key] = _scalar(entry, item)
        elif _repeated(field):
            for item in value:
                if isinstance(item, Encoded):
                    target.add().MergeFromString(item.message)
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(target.add(), item)
                else:
                    target.append(_scalar(field, item))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.SetInParent()
            _fill(target, value)
        else:
            setattr(message, name, _scalar(field, value))


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES and not isinstance(value, bytes):
        return orjson.dumps(value)  # a JSON value (a hook's data, a token's info)
    return value


def reply(command_id: int, method: str, result: dict[str, Any] | None = None) -> bytes:
    message = pb.Reply(id=command_id)
    body = getattr(message, method)
    body.SetInParent()
    if result:
        _fill(body, result)
    return delimited(message.SerializeToString())


def error_reply(command_id: int, error: codes.ReplyError) -> bytes:
    message = pb.Reply(
        id=command_id,
        error=pb.Error(code=error.code, message=error.message, temporary=error.temporary),
    )
    return delimited(message.SerializeToString())


def push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    message = pb.Reply()
    message.push.channel = channel
    target = getattr(message.push, kind)
    target.SetInParent()
    _fill(target, body)
    return delimited(message.SerializeToString())


def publication(
    offset: int, data: str, event: str | None, tags: Mapping[str, str] = _NO_TAGS
) -> bytes:
    """A Publication message (not length-prefixed): its tags, and the event type as the tag
    ``event``."""
    return delta_publication(offset, data.encode(), event, tags, delta=False)


def delta_publication(
    offset: int,
    payload: bytes,
    event: str | None,
    tags: Mapping[str, str] = _NO_TAGS,
    *,
    delta: bool,
) -> bytes:
    """A Publication of a subscription with deltas: ``payload`` is the data, or with ``delta``
    a fossil delta against the previous publication's."""
    message = pb.Publication(data=payload, offset=offset, delta=delta)
    if tags:
        message.tags.update(tags)
    if event:
        message.tags["event"] = event
    return message.SerializeToString()


def publication_push(channel: str, publication_message: bytes) -> bytes:
    message = pb.Reply()
    message.push.channel = channel
    message.push.pub.MergeFromString(publication_message)
    return delimited(message.SerializeToString())
