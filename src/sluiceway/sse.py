"""Server-Sent Events (``text/event-stream``), sans-I/O.

This module implements the wire format of the WHATWG HTML Living Standard,
section 9.2 "Server-sent events" ("Parsing an event stream" and "Interpreting
an event stream"), in the style of h11: it never touches a socket or an event
loop.  The encoder turns values into ``bytes``; the :class:`Parser` turns
``bytes`` (in chunks of any size, split anywhere) into :class:`Event` objects.
Whoever owns the connection moves the bytes.

Encoder (server side)
    :func:`encode_event` is the hot path: the hub encodes every published event
    exactly once and fans the same ``bytes`` out to every subscriber, so it
    builds one ``str`` and calls ``.encode()`` once.  Everything it writes parses
    back to the same values, which is why it refuses (:class:`SSEProtocolError`)
    what the wire cannot carry: a line break inside ``id``/``event`` would start
    a new field, a NUL in ``id`` makes clients ignore the whole field, and
    ``retry`` has to be a plain decimal number.  Data is split into several
    ``data:`` lines on exactly the three line ends of the format (CRLF, LF, CR);
    ``str.splitlines`` would also split on ``\\v``, ``\\f``, ``\\x1c``, ``\\x85``,
    ``\\u2028``... which the format treats as ordinary characters.

Parser (client side)
    Follows the spec's algorithm step by step; the non-obvious rules:

    * The stream is always UTF-8, decoded with U+FFFD replacement by an
      incremental decoder, so a multi-byte character cut in two by the network
      decodes as one character.  Exactly one BOM is stripped, only at the very
      start of the stream (the "UTF-8 decode" algorithm does that, no more).
    * A line ends at CRLF, LF or a lone CR.  A CR is acted on at once (a server
      that ends lines with bare CR must not see its events delayed until the
      next chunk); if the *next* chunk then starts with LF, that LF is the
      second half of a CRLF and is skipped instead of being read as an empty
      line (which would dispatch).
    * ``id`` only sets a *buffer*; the parser's :attr:`Parser.last_event_id`
      is updated from it at the next blank line, even when that block has no
      data, and it persists across events: every dispatched event carries the
      id in effect at that moment.  The event type and data buffers, on the
      other hand, are reset at every blank line.
    * ``retry`` takes effect immediately (it is connection state, not part of
      an event) and only if the value is all ASCII digits.
    * A block that is not terminated by a blank line when the stream ends is
      never dispatched, so there is deliberately no ``close()``/``flush()``.

Comments are written by the encoder (keep-alives) but, as the spec says, ignored
by the parser.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "Event",
    "Parser",
    "SSEProtocolError",
    "encode",
    "encode_comment",
    "encode_event",
    "encode_retry",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One block of an event stream.

    For the encoder every field is optional; ``None`` means "no such line".
    Events produced by :class:`Parser` always have ``data`` (a ``str``),
    ``event`` (``"message"`` when the block had no or an empty ``event:``) and
    ``id`` (the last event ID in effect, ``""`` when none was ever set); their
    ``retry`` and ``comment`` are ``None`` (see :attr:`Parser.retry`).

    ``delta`` is Sluiceway's one field beyond the standard: ``"fossil"`` when ``data`` is not
    the event's data but a Fossil delta from the previous event's (a stream asked for with
    ``?delta=fossil``; :class:`sluiceway.client.EventSource` applies it). Standard clients
    ignore the line, as they ignore any field they do not know; the parser keeps it.

    >>> Event(data="hello", event="greeting", id="1")
    Event(data='hello', event='greeting', id='1', retry=None, comment=None, delta=None)
    """

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None
    delta: str | None = None

    def json(self) -> Any:
        """The data parsed as JSON (raises ``orjson.JSONDecodeError``, a ``ValueError``).

        >>> Event(data='{"n": 1}').json()
        {'n': 1}
        """
        if self.data is None:
            raise ValueError("this event has no data")
        return orjson.loads(self.data)


class SSEProtocolError(ValueError):
    """Raised by the encoder for values that cannot be put on the wire.

    >>> encode_event("x", id="a\\nb")
    Traceback (most recent call last):
      ...
    sluiceway.sse.SSEProtocolError: id must not contain CR, LF or NUL: 'a\\nb'
    """


#: The only three line ends of the format.  Not str.splitlines(): that also
#: splits on \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029, which are data here.
LINE_END = re.compile(r"\r\n|\r|\n")


def _check_retry(retry: object) -> str:
    # bool is an int subclass, but "retry: True" is not a number on the wire.
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise SSEProtocolError(f"retry must be an int >= 0: {retry!r}")
    return str(int(retry))  # int() so an IntEnum still writes its digits


def _comment_lines(text: str) -> str:
    # A bare ":" for an empty (part of a) comment, ": text" otherwise.
    if "\r" not in text and "\n" not in text:
        return f": {text}\n" if text else ":\n"
    return "".join(f": {line}\n" if line else ":\n" for line in LINE_END.split(text))


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
        raise SSEProtocolError(f"value is not encodable as UTF-8: {exc}") from exc


def encode_event(
    data: str | None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    delta: str | None = None,
) -> bytes:
    """Encode one event block; same output as :func:`encode` without building an Event.

    >>> encode_event("hello")
    b'data: hello\\n\\n'
    >>> encode_event("a\\r\\nb", event="add", id="7", retry=3000)
    b'id: 7\\nevent: add\\nretry: 3000\\ndata: a\\ndata: b\\n\\n'
    >>> encode_event(None, id="")  # only resets the client's last event ID
    b'id: \\n\\n'
    """
    head = ""
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise SSEProtocolError(f"id must not contain CR, LF or NUL: {id!r}")
        head = f"id: {id}\n"
    if event is not None:
        if "\n" in event or "\r" in event:
            raise SSEProtocolError(f"event must not contain CR or LF: {event!r}")
        head += f"event: {event}\n"
    if delta is not None:
        if "\n" in delta or "\r" in delta:
            raise SSEProtocolError(f"delta must not contain CR or LF: {delta!r}")
        head += f"delta: {delta}\n"
    if retry is not None:
        head += f"retry: {_check_retry(retry)}\n"
    if data is None:
        if not head:
            raise SSEProtocolError("empty event")
        return _to_bytes(head + "\n")
    if "\n" in data or "\r" in data:
        # Every line end (CRLF, CR or LF) starts a new data: line; the parser
        # joins them back with LF.
        data = LINE_END.sub("\ndata: ", data)
    return _to_bytes(f"{head}data: {data}\n\n")


def encode(event: Event) -> bytes:
    """Encode an :class:`Event` as one complete block ending in a blank line.

    Lines come in the order comment, ``id``, ``event``, ``delta``, ``retry``, ``data``.

    >>> encode(Event(data="x", id="1", comment="hi"))
    b': hi\\nid: 1\\ndata: x\\n\\n'
    >>> encode(Event(comment="keep-alive"))
    b': keep-alive\\n\\n'
    """
    fields = (event.data, event.event, event.id, event.retry, event.delta)
    if event.comment is None or any(value is not None for value in fields):
        block = encode_event(
            event.data, event=event.event, id=event.id, retry=event.retry, delta=event.delta
        )
    else:
        block = b"\n"  # the comment alone
    if event.comment is None:
        return block
    return _to_bytes(_comment_lines(event.comment)) + block


def encode_comment(text: str = "") -> bytes:
    """Encode a comment-only block, e.g. a keep-alive; line breaks give several lines.

    >>> encode_comment()
    b':\\n\\n'
    >>> encode_comment("ping")
    b': ping\\n\\n'
    >>> encode_comment("a\\nb")
    b': a\\n: b\\n\\n'
    """
    return _to_bytes(_comment_lines(text) + "\n")


def encode_retry(ms: int) -> bytes:
    """Encode a block that only sets the client's reconnection time.

    >>> encode_retry(3000)
    b'retry: 3000\\n\\n'
    """
    return f"retry: {_check_retry(ms)}\n\n".encode()


class Parser:
    """Incremental ``text/event-stream`` parser: feed bytes, get dispatched events.

    One parser per connection.  On reconnect, send :attr:`last_event_id` as the
    ``Last-Event-ID`` header (when non-empty) and wait :attr:`retry` ms.

    >>> p = Parser()
    >>> p.feed(b"id: 1\\ndata: hel")
    []
    >>> p.feed(b"lo\\n\\n")
    [Event(data='hello', event='message', id='1', retry=None, comment=None, delta=None)]
    >>> p.last_event_id
    '1'
    """

    __slots__ = (
        "_bom_pending",
        "_data",
        "_decoder",
        "_delta",
        "_event_type",
        "_id_buffer",
        "_partial",
        "_skip_lf",
        "last_event_id",
        "retry",
    )

    def __init__(self, last_event_id: str = "") -> None:
        #: The spec's "last event ID string": "" until a block with ``id:`` ends.  A client
        #: that reconnects passes the previous connection's, so events without ``id:``
        #: keep carrying it, as the spec's EventSource does.
        self.last_event_id: str = last_event_id
        #: Reconnection time in ms from the last valid ``retry:`` line, else None.
        self.retry: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._bom_pending = True  # nothing decoded yet: a U+FEFF now is the BOM
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes CRLF
        self._partial: list[str] = []  # pieces of the current unterminated line
        self._data: list[str] = []  # data lines of the current block
        self._event_type = ""
        self._delta: str | None = None  # the block's delta field (Sluiceway's, see Event)
        self._id_buffer = last_event_id

    def feed(self, data: bytes) -> list[Event]:
        """Consume a chunk of the stream; return the events it completed, in order."""
        text = self._decoder.decode(data)
        if not text:  # e.g. only the first bytes of a multi-byte character
            return []
        if self._bom_pending:
            self._bom_pending = False
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            lines = LINE_END.split(text)
            # A trailing CR has already ended its line (the split consumed it);
            # remember it so that an LF opening the next chunk is not a 2nd line end.
            self._skip_lf = text[-1] == "\r"
        else:
            lines = text.split("\n")  # fast path: the usual LF-only stream
        if len(lines) == 1:  # no line end in this chunk: keep accumulating
            if text:
                self._partial.append(text)
            return []
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial.clear()
        tail = lines.pop()  # after the last line end: unterminated (maybe "")
        if tail:
            self._partial.append(tail)
        return self._process(lines)

    def _process(self, lines: list[str]) -> list[Event]:
        # The hot loop of every client: buffers live in locals, written back once.
        events: list[Event] = []
        data = self._data
        event_type = self._event_type
        id_buffer = self._id_buffer
        for line in lines:
            if not line:
                # Blank line: dispatch.  The last event ID is committed even if
                # nothing is dispatched, so an id-only block still counts.
                self.last_event_id = id_buffer
                if data:
                    # Each data line appended value + LF; the join drops the last LF.
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    event = _dispatched(text, event_type or "message", id_buffer)
                    if self._delta is not None:
                        _set_delta(event, self._delta)
                    events.append(event)
                    data.clear()
                event_type = ""
                self._delta = None
                continue
            if line[0] == ":":  # comment
                continue
            colon = line.find(":")
            if colon < 0:  # no colon: the whole line is the field name
                field, value = line, ""
            else:
                field = line[:colon]
                # Exactly one leading space is syntax.
                start = colon + 2 if line[colon + 1 : colon + 2] == " " else colon + 1
                value = line[start:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event_type = value
            elif field == "id":
                # A NUL would make the header unsendable: ignore the whole field.
                if "\0" not in value:
                    id_buffer = value
            # isdigit() alone also accepts e.g. "²" and "٣"; the spec wants ASCII.
            elif field == "retry" and value.isascii() and value.isdigit():
                # Leading zeros are fine ("0003000" is 3000).  int() only refuses
                # thousands of significant digits (its DoS guard,
                # sys.get_int_max_str_digits); such a delay is meaningless.
                with contextlib.suppress(ValueError):
                    self.retry = int(value.lstrip("0") or "0")
            elif field == "delta":
                self._delta = value
            # Any other field name is ignored.
        self._event_type = event_type
        self._id_buffer = id_buffer
        return events


# A frozen dataclass's __init__ goes through object.__setattr__ once per field, which is
# most of the parser's cost per event; the slots' own descriptors set the same fields in
# half the time (measured: 0.50 vs 1.12 us per event).
_new_event = object.__new__
_set_data, _set_event, _set_id, _set_retry, _set_comment, _set_delta = (
    Event.__dict__[name].__set__ for name in ("data", "event", "id", "retry", "comment", "delta")
)


def _dispatched(data: str, event: str, id: str) -> Event:
    """``Event(data=data, event=event, id=id)``, built faster."""
    made = _new_event(Event)
    _set_data(made, data)
    _set_event(made, event)
    _set_id(made, id)
    _set_retry(made, None)
    _set_comment(made, None)
    _set_delta(made, None)
    return made
