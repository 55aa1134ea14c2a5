"""Tests for sluiceway.sse: encoder rules, WHATWG parser rules, round-trip properties."""

from __future__ import annotations

import doctest
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluiceway import sse
from sluiceway.sse import (
    Event,
    Parser,
    SSEProtocolError,
    encode,
    encode_comment,
    encode_event,
    encode_retry,
)


def parse(*chunks: bytes) -> tuple[list[Event], Parser]:
    parser = Parser()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def msg(data: str, event: str = "message", id: str = "") -> Event:
    return Event(data=data, event=event, id=id)


def test_doctests() -> None:
    result = doctest.testmod(sse, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- encoder


def test_encode_data_only() -> None:
    assert encode_event("hello") == b"data: hello\n\n"
    assert encode(Event(data="hello")) == b"data: hello\n\n"


def test_encode_field_order() -> None:
    ev = Event(data="d", event="e", id="i", retry=5, comment="c")
    assert encode(ev) == b": c\nid: i\nevent: e\nretry: 5\ndata: d\n\n"


def test_encode_event_matches_encode() -> None:
    kwargs = {"event": "e", "id": "i", "retry": 5}
    assert encode_event("a\nb", **kwargs) == encode(Event(data="a\nb", **kwargs))


def test_encode_is_utf8() -> None:
    assert encode_event("é😀") == "data: é😀\n\n".encode()


@pytest.mark.parametrize("data", ["a\nb", "a\r\nb", "a\rb"])
def test_encode_data_splits_on_each_line_end(data: str) -> None:
    assert encode_event(data) == b"data: a\ndata: b\n\n"


def test_encode_data_crlf_is_one_break() -> None:
    assert encode_event("a\r\n\r\nb") == b"data: a\ndata: \ndata: b\n\n"
    assert encode_event("a\n\rb") == b"data: a\ndata: \ndata: b\n\n"


def test_encode_data_trailing_and_leading_breaks() -> None:
    assert encode_event("\na\n") == b"data: \ndata: a\ndata: \n\n"


@pytest.mark.parametrize("ch", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_encode_data_does_not_split_on_other_breaks(ch: str) -> None:
    assert encode_event(f"a{ch}b") == f"data: a{ch}b\n\n".encode()


def test_encode_empty_data_is_one_data_line() -> None:
    assert encode_event("") == b"data: \n\n"
    assert parse(encode_event(""))[0] == [msg("")]


def test_encode_keeps_leading_space_of_values() -> None:
    raw = encode_event(" d", event=" e", id=" i")
    assert raw == b"id:  i\nevent:  e\ndata:  d\n\n"
    assert parse(raw)[0] == [msg(" d", " e", " i")]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "a\0b", "\n", "\0"])
def test_encode_refuses_bad_id(bad: str) -> None:
    with pytest.raises(SSEProtocolError):
        encode_event("x", id=bad)
    with pytest.raises(SSEProtocolError):
        encode(Event(data="x", id=bad))


def test_encode_empty_id_allowed() -> None:
    assert encode_event(None, id="") == b"id: \n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "\r\n"])
def test_encode_refuses_bad_event(bad: str) -> None:
    with pytest.raises(SSEProtocolError):
        encode_event("x", event=bad)


def test_encode_event_allows_nul_in_event_type() -> None:
    raw = encode_event("x", event="a\0b")
    assert parse(raw)[0] == [msg("x", "a\0b")]


@pytest.mark.parametrize("bad", [-1, True, False, 1.5, "3000", None.__class__])
def test_encode_refuses_bad_retry(bad: object) -> None:
    with pytest.raises(SSEProtocolError):
        encode_event("x", retry=bad)  # type: ignore[arg-type]
    with pytest.raises(SSEProtocolError):
        encode_retry(bad)  # type: ignore[arg-type]


def test_encode_retry() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"
    assert encode(Event(retry=10)) == b"retry: 10\n\n"


def test_encode_comment() -> None:
    assert encode_comment() == b":\n\n"
    assert encode_comment("") == b":\n\n"
    assert encode_comment("ping") == b": ping\n\n"


def test_encode_comment_line_breaks() -> None:
    assert encode_comment("a\r\nb\rc\nd") == b": a\n: b\n: c\n: d\n\n"
    assert encode_comment("a\n") == b": a\n:\n\n"


def test_encode_comment_only_event() -> None:
    assert encode(Event(comment="hi")) == b": hi\n\n"
    assert encode(Event(comment="")) == b":\n\n"


def test_encode_control_only_blocks() -> None:
    assert encode(Event(id="5")) == b"id: 5\n\n"
    assert encode(Event(comment="c", id="5")) == b": c\nid: 5\n\n"


def test_the_delta_field_round_trips_and_belongs_to_its_event() -> None:
    """Sluiceway's one field beyond the standard: kept by the parser, for its event only."""
    raw = encode(Event(data="14\nJ@0,1;", id="2", delta="fossil")) + encode_event("b", id="3")
    assert raw.startswith(b"id: 2\ndelta: fossil\ndata: 14\ndata: J@0,1;\n\n")
    events, _ = parse(raw)
    assert [(e.data, e.delta) for e in events] == [("14\nJ@0,1;", "fossil"), ("b", None)]
    # A block without data dispatches nothing: its delta does not leak into the next event.
    assert [e.delta for e in parse(b"delta: fossil\n\ndata: c\n\n")[0]] == [None]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb"])
def test_encode_refuses_a_delta_with_line_breaks(bad: str) -> None:
    with pytest.raises(SSEProtocolError):
        encode_event("x", delta=bad)


def test_encode_refuses_empty_event() -> None:
    with pytest.raises(SSEProtocolError, match="empty event"):
        encode(Event())
    with pytest.raises(SSEProtocolError, match="empty event"):
        encode_event(None)


def test_encode_refuses_lone_surrogate() -> None:
    with pytest.raises(SSEProtocolError):
        encode_event("\ud800")
    with pytest.raises(SSEProtocolError):
        encode_comment("\udfff")


def test_sse_protocol_error_is_value_error() -> None:
    assert issubclass(SSEProtocolError, ValueError)


# --------------------------------------------------------------------------- parser


def test_parser_initial_state() -> None:
    parser = Parser()
    assert parser.last_event_id == ""
    assert parser.retry is None


def test_parse_simple_message() -> None:
    assert parse(b"data: hello\n\n")[0] == [msg("hello")]


def test_parse_event_type_defaults_to_message() -> None:
    assert parse(b"data: x\n\n")[0][0].event == "message"
    assert parse(b"event:\ndata: x\n\n")[0][0].event == "message"
    assert parse(b"event: add\ndata: x\n\n")[0][0].event == "add"


def test_parse_event_type_reset_after_dispatch() -> None:
    events, _ = parse(b"event: add\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["add", "message"]


def test_parse_event_type_reset_even_without_data() -> None:
    events, _ = parse(b"event: add\n\ndata: 2\n\n")
    assert events == [msg("2")]


def test_parse_multiple_data_lines_joined_with_lf() -> None:
    assert parse(b"data: a\ndata: b\n\n")[0] == [msg("a\nb")]


def test_parse_only_one_trailing_lf_stripped() -> None:
    assert parse(b"data: a\ndata:\n\n")[0] == [msg("a\n")]
    assert parse(b"data\ndata\n\n")[0] == [msg("\n")]


def test_parse_field_without_colon() -> None:
    # "data" alone appends an empty line: the buffer is "\n", so it dispatches "".
    assert parse(b"data\n\n")[0] == [msg("")]


def test_parse_one_leading_space_removed() -> None:
    assert parse(b"data:x\n\n")[0] == [msg("x")]
    assert parse(b"data: x\n\n")[0] == [msg("x")]
    assert parse(b"data:  x\n\n")[0] == [msg(" x")]
    assert parse(b"data:\tx\n\n")[0] == [msg("\tx")]


def test_parse_value_after_first_colon() -> None:
    assert parse(b"data: a: b:c\n\n")[0] == [msg("a: b:c")]


def test_parse_field_names_are_case_sensitive_and_exact() -> None:
    assert parse(b"Data: x\n\ndata : y\n\n data: z\n\n")[0] == []


def test_parse_comment_ignored() -> None:
    assert parse(b": hello\n:\n::x\ndata: x\n: bye\n\n")[0] == [msg("x")]


def test_parse_comment_only_block_dispatches_nothing() -> None:
    assert parse(b": keep-alive\n\n")[0] == []


def test_parse_unknown_fields_ignored() -> None:
    assert parse(b"foo: bar\nDATA: 1\ndata: x\nretryx: 5\n\n")[0] == [msg("x")]


def test_parse_empty_data_buffer_dispatches_nothing() -> None:
    assert parse(b"\n\n\nevent: x\n\n")[0] == []


def test_parse_id_sets_event_id() -> None:
    assert parse(b"id: 42\ndata: x\n\n")[0] == [msg("x", id="42")]


def test_parse_id_persists_across_events() -> None:
    events, parser = parse(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert events == [msg("a", id="1"), msg("b", id="1")]
    assert parser.last_event_id == "1"


def test_parse_id_only_block_updates_last_event_id() -> None:
    events, parser = parse(b"id: 7\n\n")
    assert events == []
    assert parser.last_event_id == "7"
    events = parser.feed(b"data: x\n\n")
    assert events == [msg("x", id="7")]


def test_parse_empty_id_resets() -> None:
    events, parser = parse(b"id: 1\ndata: a\n\nid\ndata: b\n\n")
    assert events == [msg("a", id="1"), msg("b", id="")]
    assert parser.last_event_id == ""


def test_parse_id_committed_only_at_blank_line() -> None:
    _, parser = parse(b"id: 1\n\nid: 2\ndata: x\n")
    assert parser.last_event_id == "1"  # the block with id 2 is not finished


def test_parse_id_with_nul_ignored() -> None:
    events, parser = parse(b"id: 1\n\nid: a\x00b\ndata: x\n\n")
    assert events == [msg("x", id="1")]
    assert parser.last_event_id == "1"


def test_parse_last_id_in_block_wins() -> None:
    assert parse(b"id: 1\nid: 2\ndata: x\n\n")[0] == [msg("x", id="2")]


def test_parse_retry() -> None:
    events, parser = parse(b"retry: 3000\n\n")
    assert events == []
    assert parser.retry == 3000


def test_parse_retry_takes_effect_immediately() -> None:
    _, parser = parse(b"retry: 10\n")
    assert parser.retry == 10


def test_parse_retry_leading_zeros() -> None:
    assert parse(b"retry: 007\n")[1].retry == 7
    assert parse(b"retry: 0\n")[1].retry == 0


@pytest.mark.parametrize(
    "value",
    [b"", b" 5", b"5 ", b"-5", b"+5", b"1.5", b"1e3", b"abc", b"3s", b"\xc2\xb2", b"\xd9\xa3"],
)
def test_parse_retry_non_digits_ignored(value: bytes) -> None:
    _, parser = parse(b"retry: 100\n\nretry: " + value + b"\n\n")
    assert parser.retry == 100


def test_parse_retry_huge_value() -> None:
    assert parse(b"retry: " + b"9" * 40 + b"\n")[1].retry == int("9" * 40)
    # Beyond int()'s digit limit the value is skipped instead of raising.
    assert parse(b"retry: 5\nretry: " + b"9" * 10_000 + b"\n")[1].retry == 5


def test_parse_data_containing_nul_and_other_breaks() -> None:
    raw = "data: a\0b\v\f\x1c\x85\u2028c\n\n".encode()
    assert parse(raw)[0] == [msg("a\0b\v\f\x1c\x85\u2028c")]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_parse_all_line_ends(eol: bytes) -> None:
    raw = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert parse(raw)[0] == [msg("a\nb", "e")]


def test_parse_mixed_line_ends() -> None:
    raw = b"data: a\rdata: b\r\ndata: c\n\r\n"
    assert parse(raw)[0] == [msg("a\nb\nc")]


def test_parse_lf_cr_is_two_line_ends() -> None:
    # LF then CR is not a pair: two line ends, so an empty line, so a dispatch.
    assert parse(b"data: a\n\rdata: b\n\n")[0] == [msg("a"), msg("b")]


def test_parse_cr_cr_dispatches() -> None:
    assert parse(b"data: a\r\r")[0] == [msg("a")]


def test_parse_cr_acted_on_at_once() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [msg("a")]


def test_parse_lone_cr_at_chunk_end_dispatches_without_waiting() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r\r") == [msg("a")]


def test_parse_crlf_split_across_feeds_is_one_line_end() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [msg("a\nb")]


def test_parse_crlf_split_then_blank_line() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r\n\r") == [msg("a")]
    assert parser.feed(b"\n") == []  # second half of the CRLF, not another blank line
    assert parser.feed(b"data: b\n\n") == [msg("b")]


def test_parse_skip_lf_survives_empty_decode() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [msg("a")]


def test_parse_cr_then_cr_lf_across_feeds() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r\n") == [msg("a")]


def test_parse_bom_stripped_at_start() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n")[0] == [msg("x")]


def test_parse_bom_split_across_feeds() -> None:
    assert parse(b"\xef", b"\xbb", b"\xbfdata: 1\n\n")[0] == [msg("1")]


def test_parse_bom_only_once() -> None:
    # The second BOM is part of the first field name, which is then unknown.
    events, _ = parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: 1\n\ndata: 2\n\n")
    assert events == [msg("2")]


def test_parse_bom_only_at_start() -> None:
    parser = Parser()
    assert parser.feed(b"data: 1\n\n") == [msg("1")]
    assert parser.feed(b"\xef\xbb\xbfdata: 2\n\ndata: 3\n\n") == [msg("3")]


def test_parse_bom_inside_data_kept() -> None:
    assert parse("data: \ufeffx\n\n".encode())[0] == [msg("\ufeffx")]


def test_parse_invalid_utf8_replaced() -> None:
    assert parse(b"data: a\xffb\xc3\n\n")[0] == [msg("a\ufffdb\ufffd")]


def test_parse_utf16_bom_not_honoured() -> None:
    # Always UTF-8: a UTF-16 BOM becomes U+FFFD U+FFFD in the first field name.
    assert parse(b"\xff\xfedata: 1\n\ndata: 2\n\n")[0] == [msg("2")]


def test_parse_multibyte_split_across_feeds() -> None:
    raw = "data: é😀\n\n".encode()
    for cut in range(len(raw) + 1):
        assert parse(raw[:cut], raw[cut:])[0] == [msg("é😀")], cut


def test_parse_truncated_multibyte_replaced() -> None:
    # A truncated 4-byte sequence followed by ASCII: one U+FFFD, even when split.
    assert parse(b"data: \xf0\x9f", b"x\n\n")[0] == [msg("\ufffdx")]


def test_parse_unterminated_block_never_dispatched() -> None:
    events, parser = parse(b"id: 1\ndata: x\n")
    assert events == []
    assert parser.last_event_id == ""
    events, _ = parse(b"data: x")
    assert events == []


def test_parse_line_split_across_many_feeds() -> None:
    assert parse(b"da", b"ta", b": h", b"el", b"", b"lo\n", b"\n")[0] == [msg("hello")]


def test_parse_returns_events_in_order_from_one_chunk() -> None:
    events, _ = parse(b"data: 1\n\ndata: 2\n\nevent: x\ndata: 3\n\n")
    assert events == [msg("1"), msg("2"), msg("3", "x")]


def test_parsed_event_has_no_retry_or_comment() -> None:
    (ev,), _ = parse(b": c\nretry: 5\ndata: x\n\n")
    assert ev.retry is None
    assert ev.comment is None


# ------------------------------------------------------------ spec-style vectors


def test_spec_vector_stock_updates() -> None:
    raw = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert parse(raw)[0] == [msg("YHOO\n+2\n10")]


def test_spec_vector_four_blocks() -> None:
    raw = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n"
    )
    events, parser = parse(raw)
    # The first block is only a comment; the fourth is never terminated.
    assert events == [msg("first event", id="1"), msg("second event", id="")]
    assert parser.last_event_id == ""


def test_spec_vector_two_events() -> None:
    raw = b"data\n\ndata\ndata\n\ndata:"
    assert parse(raw)[0] == [msg(""), msg("\n")]


def test_spec_vector_space_after_colon() -> None:
    raw = b"data:test\n\ndata: test\n\n"
    assert parse(raw)[0] == [msg("test"), msg("test")]


def test_spec_vector_event_types() -> None:
    raw = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    events, _ = parse(raw)
    assert [(e.event, e.data) for e in events] == [
        ("add", "73857293"),
        ("remove", "2153"),
        ("add", "113411"),
    ]


# --------------------------------------------------------------- reference parser


def reference_parse(raw: bytes) -> tuple[list[Event], str, int | None]:
    """The spec's algorithm, literally: whole-stream decode, char by char."""
    text = raw.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[Event] = []
    data_buf, type_buf, id_buf, last_id, retry = "", "", "", "", None
    lines: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\r":
            lines.append("".join(cur))
            cur = []
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif c == "\n":
            lines.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    for line in lines:  # `cur` is the unterminated last line: discarded
        if line == "":
            last_id = id_buf
            if data_buf == "":
                type_buf = ""
                continue
            if data_buf.endswith("\n"):
                data_buf = data_buf[:-1]
            events.append(Event(data=data_buf, event=type_buf or "message", id=last_id))
            data_buf, type_buf = "", ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            type_buf = value
        elif field == "data":
            data_buf += value + "\n"
        elif field == "id":
            if "\0" not in value:
                id_buf = value
        elif field == "retry" and value and all(ch in "0123456789" for ch in value):
            retry = int(value)
    return events, last_id, retry


# ------------------------------------------------------------------- properties

SPECIAL = ["\r", "\n", "\r\n", "\x00", "\u2028", "\ufeff", "\v", "\f", "\x1c", "\x85", ":", " "]
SPECIAL += ["😀", "é", "\U0010ffff", "data", "id", "event", "retry"]

any_text = st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=8)), max_size=12).map(
    "".join
)
event_names = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10)
event_ids = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=10)
retries = st.integers(min_value=0, max_value=10**15)

events_to_encode = st.builds(
    Event,
    data=st.none() | any_text,
    event=st.none() | event_names,
    id=st.none() | event_ids,
    retry=st.none() | retries,
    comment=st.none() | any_text,
).filter(lambda e: any(v is not None for v in (e.data, e.event, e.id, e.retry, e.comment)))

GARBAGE_PIECES = [b"\r", b"\n", b"\r\n", b":", b" ", b"data", b"id", b"event", b"retry"]
GARBAGE_PIECES += [b"\x00", b"\xef\xbb\xbf", b"\xf0\x9f", b"\x98\x80", b"\xc3", b"\xff", b"1"]

garbage_bytes = st.lists(
    st.one_of(
        st.sampled_from(GARBAGE_PIECES),
        st.binary(max_size=6),
    ),
    max_size=30,
).map(b"".join)

_NORMALIZE = re.compile(r"\r\n|\r")


def expected_after(events: list[Event]) -> tuple[list[Event], str, int | None]:
    out: list[Event] = []
    last_id, retry = "", None
    for ev in events:
        if ev.id is not None:
            last_id = ev.id
        if ev.retry is not None:
            retry = ev.retry
        if ev.data is not None:
            data = _NORMALIZE.sub("\n", ev.data)
            out.append(Event(data=data, event=ev.event or "message", id=last_id))
    return out, last_id, retry


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(events_to_encode, max_size=6), data=st.data())
def test_roundtrip_any_chunking(events: list[Event], data: st.DataObject) -> None:
    raw = b"".join(encode(ev) for ev in events)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    parsed, parser = parse(*split_at(raw, cuts))
    want, last_id, retry = expected_after(events)
    assert parsed == want
    assert parser.last_event_id == last_id
    assert parser.retry == retry


@settings(max_examples=200, deadline=None)
@given(
    data=st.none() | any_text,
    event=st.none() | event_names,
    id=st.none() | event_ids,
    retry=st.none() | retries,
)
def test_encode_event_equals_encode(
    data: str | None, event: str | None, id: str | None, retry: int | None
) -> None:
    if data is None and event is None and id is None and retry is None:
        with pytest.raises(SSEProtocolError):
            encode_event(data, event=event, id=id, retry=retry)
        return
    ev = Event(data=data, event=event, id=id, retry=retry)
    assert encode_event(data, event=event, id=id, retry=retry) == encode(ev)


@settings(max_examples=100, deadline=None)
@given(events=st.lists(events_to_encode, min_size=1, max_size=4))
def test_roundtrip_every_single_cut(events: list[Event]) -> None:
    raw = b"".join(encode(ev) for ev in events)
    want = expected_after(events)[0]
    for cut in range(len(raw) + 1):
        assert parse(raw[:cut], raw[cut:])[0] == want


@settings(max_examples=300, deadline=None)
@given(raw=garbage_bytes)
def test_byte_by_byte_equals_all_at_once(raw: bytes) -> None:
    whole, p1 = parse(raw)
    single, p2 = parse(*(raw[i : i + 1] for i in range(len(raw))))
    assert single == whole
    assert (p2.last_event_id, p2.retry) == (p1.last_event_id, p1.retry)


@settings(max_examples=300, deadline=None)
@given(raw=garbage_bytes, data=st.data())
def test_matches_reference_parser(raw: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    events, parser = parse(*split_at(raw, cuts))
    ref_events, ref_last_id, ref_retry = reference_parse(raw)
    assert events == ref_events
    assert parser.last_event_id == ref_last_id
    assert parser.retry == ref_retry


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20))
def test_comment_never_produces_events(text: str) -> None:
    events, parser = parse(encode_comment(text) + encode_comment(text + "\r\n" + text))
    assert events == []
    assert (parser.last_event_id, parser.retry) == ("", None)
