"""The JSON format of Centrifugo's client protocol, sans I/O: frames in, bytes out.

A WebSocket text frame holds one or more JSON objects separated by ``\\n``: commands from the
client (``{"id": 1, "subscribe": {...}}``), replies and pushes from the server
(``{"id": 1, "subscribe": {...}}``, ``{"push": {"channel": ..., "pub": {...}}}``). An empty
object is a ping from the server and the pong that answers it.

Publication data is JSON. The hub stores text; an event whose data is valid JSON travels as
that JSON, any other text as a JSON string (so ``"123"`` published as text arrives as the
number 123 — publish JSON to avoid the ambiguity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.centrifugo import codes

#: The request fields a command may carry, one per command (the protocol's method names).
METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)
PING = b"{}"
_NO_TAGS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    method: str  # one of METHODS, or "" for a pong
    params: dict[str, Any]


def parse_frame(frame: str | bytes) -> list[Command]:
    """The commands of one frame. Raises :class:`codes.Disconnect` (3501) for a frame that is
    not newline-separated JSON objects; a command with an unknown method has ``method`` set to
    ``"?"`` so that its reply can say so."""
    commands: list[Command] = []
    for line in frame.splitlines():
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise codes.BAD_REQUEST from None
        if not isinstance(value, dict):
            raise codes.BAD_REQUEST
        commands.append(_command(value))
    return commands


def _command(value: dict[str, Any]) -> Command:
    command_id = value.get("id", 0)
    if not isinstance(command_id, int) or isinstance(command_id, bool) or command_id < 0:
        raise codes.BAD_REQUEST
    for method in METHODS:
        params = value.get(method)
        if params is not None:
            if not isinstance(params, dict):
                raise codes.BAD_REQUEST
            return Command(command_id, method, params)
    if command_id == 0:
        return Command(0, "", {})  # a pong (or an empty frame line)
    return Command(command_id, "?", {})


def json_data(data: str) -> bytes:
    """Hub event data as the JSON value a publication carries."""
    raw = data.encode()
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return orjson.dumps(data)
    return raw


def publication(
    offset: int,
    data: bytes,
    event: str | None,
    tags: Mapping[str, str] = _NO_TAGS,
    *,
    delta: bool = False,
) -> bytes:
    """A Publication object: its tags, and the event type, when there is one, as the tag
    ``event``; with ``delta``, ``data`` is a fossil delta against the previous publication's."""
    if event:
        tags = {**tags, "event": event}
    tags_json = b',"tags":' + orjson.dumps(tags) if tags else b""
    flag = b',"delta":true' if delta else b""
    return b'{"data":%b,"offset":%d%b%b}' % (data, offset, tags_json, flag)


def publication_push(channel: str, publication_json: bytes) -> bytes:
    return b'{"push":{"channel":%b,"pub":%b}}' % (orjson.dumps(channel), publication_json)


def reply(command_id: int, method: str, result: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"id": command_id, method: result or {}})


def reply_raw(command_id: int, method: str, result_json: bytes) -> bytes:
    """A reply whose result is already encoded (publications inside)."""
    return b'{"id":%d,"%b":%b}' % (command_id, method.encode(), result_json)


def error_reply(command_id: int, error: codes.ReplyError) -> bytes:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.temporary:
        body["temporary"] = True
    return orjson.dumps({"id": command_id, "error": body})


def push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"push": {"channel": channel, kind: body}})
