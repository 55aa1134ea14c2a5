"""The Protobuf format, sans I/O: any binary frame either parses or is refused with 3501 (never
another exception), commands read as the JSON format reads them, and what the server encodes
decodes with the protocol's own messages."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf.json_format import ParseDict
from hypothesis import given
from hypothesis import strategies as st

from sluiceway.centrifugo import codes, frames, protobuf_frames
from sluiceway.centrifugo.codec import JSON, PROTOBUF, for_subprotocols
from sluiceway.centrifugo.options import CentrifugoOptions
from sluiceway.centrifugo.protobuf_frames import Encoded, RawData
from sluiceway.centrifugo.protocol import CentrifugoProtocol
from sluiceway.centrifugo.wire import client_pb2 as pb


def delimited(*messages: bytes) -> bytes:
    return b"".join(protobuf_frames.delimited(m) for m in messages)


def command(**fields: object) -> bytes:
    return ParseDict(fields, pb.Command()).SerializeToString()


def replies(frame: bytes) -> list[pb.Reply]:
    """The Reply messages of a frame the server wrote."""
    return [pb.Reply.FromString(message) for message in protobuf_frames.split(frame)]


@given(st.binary(max_size=300))
def test_any_frame_parses_or_is_refused(frame: bytes) -> None:
    try:
        commands = protobuf_frames.parse_frame(frame)
    except codes.Disconnect as refused:
        assert refused == codes.BAD_REQUEST
    else:
        for parsed in commands:
            assert parsed.method in (*frames.METHODS, "", "?")
            assert isinstance(parsed.params, dict)


@given(st.lists(st.binary(max_size=40), max_size=5))
def test_any_length_prefixed_messages_parse_or_are_refused(messages: list[bytes]) -> None:
    """Valid framing around arbitrary message bytes: refused only with 3501."""
    try:
        protobuf_frames.parse_frame(delimited(*messages))
    except codes.Disconnect as refused:
        assert refused == codes.BAD_REQUEST


def test_commands_read_as_the_json_format_reads_them() -> None:
    frame = delimited(
        command(id=1, connect={"token": "t", "subs": {"a": {"recover": True, "offset": 3}}}),
        command(id=2, subscribe={"channel": "chat", "recover": True, "epoch": "e", "offset": 7}),
        command(id=3, publish={"channel": "chat", "data": "eyJ4IjoxfQ=="}),  # {"x":1}
        command(id=4, history={"channel": "chat", "limit": 2, "since": {"offset": 1}}),
        b"",  # an empty message: the pong
        command(id=5),  # an id without a request: an unknown method
    )
    parsed = protobuf_frames.parse_frame(frame)
    assert [(c.id, c.method) for c in parsed] == [
        (1, "connect"),
        (2, "subscribe"),
        (3, "publish"),
        (4, "history"),
        (0, ""),
        (5, "?"),
    ]
    assert parsed[0].params == {"token": "t", "subs": {"a": {"recover": True, "offset": 3}}}
    assert parsed[1].params == {"channel": "chat", "recover": True, "epoch": "e", "offset": 7}
    assert parsed[2].params == {"channel": "chat", "data": RawData(b'{"x":1}')}
    assert parsed[3].params == {"channel": "chat", "limit": 2, "since": {"offset": 1}}


@pytest.mark.parametrize(
    "frame",
    [
        b"\x80",  # a varint cut short
        b"\xff\xff\xff\xff\xff\x01",  # a length longer than any frame
        b"\x05\x08\x01",  # a length beyond the frame's end
        b"\x02\xff\xff",  # not a Command message
    ],
)
def test_broken_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(codes.Disconnect) as refused:
        protobuf_frames.parse_frame(frame)
    assert refused.value == codes.BAD_REQUEST


def test_replies_pushes_and_publications_decode_with_the_protocols_messages() -> None:
    publication = PROTOBUF.publication(7, '{"a":1}', "token")
    (history,) = replies(
        PROTOBUF.reply(
            3,
            "history",
            {"publications": [Encoded(publication)], "epoch": "ep", "offset": 7},
        )
    )
    assert history.id == 3 and history.history.epoch == "ep" and history.history.offset == 7
    (pub,) = history.history.publications
    assert (pub.data, pub.offset, dict(pub.tags)) == (b'{"a":1}', 7, {"event": "token"})

    (connect,) = replies(
        PROTOBUF.reply(1, "connect", {"client": "c", "data": {"hook": True}, "ping": 25})
    )
    assert connect.connect.client == "c" and orjson.loads(connect.connect.data) == {"hook": True}

    (pushed,) = replies(PROTOBUF.publication_push("chat", publication))
    assert pushed.id == 0 and pushed.push.channel == "chat" and pushed.push.pub.offset == 7

    (unsubscribed,) = replies(PROTOBUF.push("chat", "unsubscribe", {"code": 2000, "reason": "x"}))
    assert unsubscribed.push.unsubscribe.code == 2000

    (error,) = replies(PROTOBUF.error_reply(9, codes.too_many_requests()))
    assert (error.id, error.error.code, error.error.temporary) == (9, 111, True)
    assert replies(PROTOBUF.ping) == [pb.Reply()]


def test_the_format_follows_the_handshake() -> None:
    assert for_subprotocols(["centrifuge-protobuf"]) is PROTOBUF
    assert for_subprotocols(["centrifuge-json"]) is JSON
    assert for_subprotocols([]) is JSON


def run(protocol: CentrifugoProtocol, *messages: bytes) -> list[pb.Reply]:
    protocol.receive_bytes(delimited(*messages), 0.0)
    return [reply for frame in protocol.data_to_send() for reply in replies(frame)]


def test_a_protobuf_connection_refuses_text_frames() -> None:
    protocol = CentrifugoProtocol(CentrifugoOptions(), 0.0, codec=PROTOBUF)
    protocol.receive_text('{"id":1,"connect":{}}', 0.0)
    assert protocol.disconnect == codes.BAD_REQUEST


def test_publish_data_must_be_text() -> None:
    """The hub stores text: a payload that is not UTF-8 is refused (107), nothing published."""
    protocol = CentrifugoProtocol(CentrifugoOptions(publish_channels=["chat"]), 0.0, codec=PROTOBUF)
    (connected,) = run(protocol, command(id=1, connect={}))
    assert connected.connect.client
    (refused,) = run(protocol, command(id=2, publish={"channel": "chat", "data": "/w=="}))
    assert (refused.id, refused.error.code) == (2, 107)
    assert protocol.next_request() is None  # no Publish was asked for
    (unknown,) = run(protocol, command(id=3))
    assert (unknown.id, unknown.error.code) == (3, 104)  # method not found
