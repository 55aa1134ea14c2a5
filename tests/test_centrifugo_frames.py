"""The sans-I/O protocol module: any frame either parses or is refused with 3501 — never another
exception — and what the server encodes is valid JSON of the protocol's shape."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluiceway.centrifugo import codes, frames

# What orjson parses from a client (it reads integers beyond 64 bits as floats).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_any_frame_parses_or_is_refused(frame: str) -> None:
    try:
        commands = frames.parse_frame(frame)
    except codes.Disconnect as refused:
        assert refused == codes.BAD_REQUEST
    else:
        for command in commands:
            assert command.method in (*frames.METHODS, "", "?")


@given(st.dictionaries(st.sampled_from(["id", *frames.METHODS, "other"]), json_values))
def test_any_json_object_parses_or_is_refused(value: dict[str, object]) -> None:
    try:
        (command,) = frames.parse_frame(json.dumps(value))
    except codes.Disconnect as refused:
        assert refused == codes.BAD_REQUEST
    else:
        assert isinstance(command.id, int) and isinstance(command.params, dict)


def test_several_commands_in_one_frame() -> None:
    frame = '{"id":1,"connect":{}}\n\n{"id":2,"subscribe":{"channel":"a"}}\r\n{}'
    commands = frames.parse_frame(frame)
    assert [(c.id, c.method) for c in commands] == [(1, "connect"), (2, "subscribe"), (0, "")]
    assert frames.parse_frame('{"id": 7, "nope": {}}')[0].method == "?"


@pytest.mark.parametrize(
    ("stored", "sent"),
    [('{"a":1}', {"a": 1}), ("plain text", "plain text"), ('"quoted"', "quoted"), ("123", 123)],
)
def test_hub_data_becomes_json(stored: str, sent: object) -> None:
    assert orjson.loads(frames.json_data(stored)) == sent


@given(st.text(min_size=1, max_size=50), st.integers(1, 2**53), json_values, st.text() | st.none())
def test_publication_push_is_valid_json(
    channel: str, offset: int, data: object, event: str | None
) -> None:
    encoded = frames.publication(offset, orjson.dumps(data), event or None)
    push = json.loads(frames.publication_push(channel, encoded))
    assert push["push"]["channel"] == channel
    assert push["push"]["pub"]["offset"] == offset
    assert push["push"]["pub"]["data"] == json.loads(orjson.dumps(data))
    assert push["push"]["pub"].get("tags") == ({"event": event} if event else None)


def test_error_reply_shape() -> None:
    reply = json.loads(frames.error_reply(3, codes.too_many_requests()))
    assert reply == {
        "id": 3,
        "error": {"code": 111, "message": "too many requests", "temporary": True},
    }
