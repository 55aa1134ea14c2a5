// The SSE parser of sluiceway.js against the WHATWG "event stream" rules, and its small helpers.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  SSEParser,
  backoffDelay,
  parseBytes,
  parseRetryAfter,
} from "../../src/sluiceway/web/sluiceway.js";
import { prng } from "./helpers.mjs";

const utf8 = (text) => new TextEncoder().encode(text);
const ev = (data, type = "message", lastEventId = "") => ({ type, data, lastEventId });

/** Feed `chunks` (strings) to a fresh parser; every event, then end(). */
function parse(chunks, options) {
  const parser = new SSEParser(options);
  const events = [];
  for (const chunk of chunks) events.push(...parser.feed(chunk));
  assert.deepEqual(parser.end(), []);
  return events;
}

// A stream with every rule in it: BOM, comments, all three line ends, `retry:`, a named event
// with two data lines and non-ASCII text, an id-only block, an id with NUL, `data` without a
// colon, two spaces after a colon, a blank block, and an incomplete event at the end.
const SAMPLE =
  "\uFEFF: hello\r\n" +
  "retry: 1500\n" +
  "event: greet\r\n" +
  "data: héllo 🌊\r" +
  "data:second\r\n" +
  "\r\n" +
  "id: 7\n" +
  "data\n" +
  "\n" +
  "id: bad\0id\n" +
  "data: x\n" +
  "\n" +
  ": ping\n" +
  "\n" +
  "id: 8\r" +
  "\r" +
  "data: after id-only\n\n" +
  "event: e\n" +
  "data:  two spaces\n" +
  "\n" +
  "id: 99\n" +
  "data: lost";
const SAMPLE_EVENTS = [
  ev("héllo 🌊\nsecond", "greet"),
  ev("", "message", "7"),
  ev("x", "message", "7"),
  ev("after id-only", "message", "8"),
  ev(" two spaces", "e", "8"),
];

describe("SSEParser: chunking", () => {
  test("the sample stream in one piece", () => {
    const retries = [];
    const parser = new SSEParser({ onRetry: (ms) => retries.push(ms) });
    assert.deepEqual(parser.feed(SAMPLE), SAMPLE_EVENTS);
    assert.deepEqual(retries, [1500]);
    assert.equal(parser.lastEventId, "8", "the incomplete event's id is not committed");
    assert.deepEqual(parser.end(), []);
    assert.equal(parser.lastEventId, "8");
  });

  test("split in two at every point: the same events", () => {
    for (let i = 0; i <= SAMPLE.length; i++) {
      assert.deepEqual(parse([SAMPLE.slice(0, i), SAMPLE.slice(i)]), SAMPLE_EVENTS, `split at ${i}`);
    }
  });

  test("one character at a time", () => {
    assert.deepEqual(parse([...SAMPLE.split("")]), SAMPLE_EVENTS);
  });

  test("random chunkings (empty chunks included)", () => {
    const random = prng(42);
    for (let round = 0; round < 300; round++) {
      const chunks = [];
      for (let i = 0; i < SAMPLE.length; ) {
        const size = Math.floor(random() * 8); // 0..7: empty chunks too
        chunks.push(SAMPLE.slice(i, i + size));
        i += size;
      }
      assert.deepEqual(parse(chunks), SAMPLE_EVENTS, JSON.stringify(chunks));
    }
  });

  test("bytes split at every point, inside UTF-8 characters too", () => {
    const bytes = utf8(SAMPLE);
    for (let i = 0; i <= bytes.length; i++) {
      assert.deepEqual(parseBytes([bytes.slice(0, i), bytes.slice(i)]), SAMPLE_EVENTS, `split at byte ${i}`);
    }
    assert.deepEqual(parseBytes([...bytes].map((b) => Uint8Array.of(b))), SAMPLE_EVENTS);
  });

  test("a multi-byte character split across three chunks decodes as one", () => {
    const bytes = utf8("data: 🌊中é\n\n");
    const at = 6; // the 4-byte wave starts here
    const chunks = [bytes.slice(0, at + 1), bytes.slice(at + 1, at + 3), bytes.slice(at + 3)];
    assert.deepEqual(parseBytes(chunks), [ev("🌊中é")]);
  });

  test("invalid UTF-8 becomes U+FFFD, not an exception", () => {
    const bytes = Uint8Array.of(...utf8("data: a"), 0xff, ...utf8("b\n\n"));
    assert.deepEqual(parseBytes([bytes]), [ev("a\uFFFDb")]);
  });
});

describe("SSEParser: line ends", () => {
  for (const [name, eol] of [["LF", "\n"], ["CR", "\r"], ["CRLF", "\r\n"]]) {
    test(`${name} line ends`, () => {
      const text = ["id: 1", "event: a", "data: one", "data: two", "", "data: three", "", ""].join(eol);
      assert.deepEqual(parse([text]), [ev("one\ntwo", "a", "1"), ev("three", "message", "1")]);
    });
  }

  test("mixed line ends in one stream", () => {
    assert.deepEqual(parse(["data: a\rdata: b\ndata: c\r\n\r\ndata: d\n\r"]), [ev("a\nb\nc"), ev("d")]);
  });

  test("a CR ending one chunk and an LF starting the next are ONE line end", () => {
    const parser = new SSEParser();
    assert.deepEqual(parser.feed("data: a\r"), []);
    // Were the LF a second line end, it would be a blank line dispatching "a" alone.
    assert.deepEqual(parser.feed("\ndata: b\r"), []);
    assert.deepEqual(parser.feed("\n\r"), [ev("a\nb")]);
    assert.deepEqual(parser.feed("\n"), [], "the LF completing that CRLF is not another line");
  });

  test("an empty chunk between the CR and the LF changes nothing", () => {
    assert.deepEqual(parse(["data: a\r", "", "\n", "data: b\r", "", "\n\r\n"]), [ev("a\nb")]);
  });

  test("a lone CR dispatches at once, without waiting for the next chunk", () => {
    const parser = new SSEParser();
    assert.deepEqual(parser.feed("data: now\r\r"), [ev("now")]);
  });

  test("two CRs are two line ends; LF CR is two line ends", () => {
    assert.deepEqual(parse(["data: a\r\rdata: b\n\rdata: c\n\n"]), [ev("a"), ev("b"), ev("c")]);
  });
});

describe("SSEParser: BOM", () => {
  test("a BOM at the very start is skipped", () => {
    assert.deepEqual(parse(["\uFEFFdata: a\n\n"]), [ev("a")]);
  });

  test("a BOM alone in the first chunk is skipped", () => {
    assert.deepEqual(parse(["\uFEFF", "data: a\n\n"]), [ev("a")]);
  });

  test("an empty first chunk does not use up the start", () => {
    assert.deepEqual(parse(["", "\uFEFFdata: a\n\n"]), [ev("a")]);
  });

  test("only one BOM: a second one is part of the first field name", () => {
    // "\uFEFFdata" is an unknown field: ignored, so nothing is dispatched.
    assert.deepEqual(parse(["\uFEFF\uFEFFdata: a\n\n"]), []);
  });

  test("a BOM later in the stream is data (or part of a field name)", () => {
    assert.deepEqual(parse(["data: a\n\n\uFEFFdata: b\n\ndata: \uFEFFc\n\n"]), [ev("a"), ev("\uFEFFc")]);
  });

  test("a BOM as bytes, split between chunks, is skipped once", () => {
    const bytes = utf8("\uFEFF\uFEFFx\ndata: a\n\n"); // the second BOM starts an ignored field
    assert.deepEqual(parseBytes([bytes.slice(0, 1), bytes.slice(1, 2), bytes.slice(2)]), [ev("a")]);
    assert.deepEqual(parseBytes([utf8("\uFEFFdata: \uFEFF\n\n")]), [ev("\uFEFF")]);
  });
});

describe("SSEParser: fields", () => {
  test("multi-line data is joined with LF; the last LF is dropped", () => {
    assert.deepEqual(parse(["data: a\ndata:\ndata: b\ndata\n\n"]), [ev("a\n\nb\n")]);
  });

  test("comments are ignored, wherever they are", () => {
    assert.deepEqual(parse([": x\ndata: a\n:data: no\n: \n:\ndata: b\n\n"]), [ev("a\nb")]);
  });

  test("`data` without a colon is an empty value", () => {
    assert.deepEqual(parse(["data\n\n"]), [ev("")]);
    assert.deepEqual(parse(["data\ndata\n\n"]), [ev("\n")]);
  });

  test("exactly one space after the colon is removed", () => {
    assert.deepEqual(parse(["data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\n"]), [
      ev("x"),
      ev("x"),
      ev(" x"),
      ev("\tx"),
    ]);
  });

  test("the value is split at the FIRST colon", () => {
    assert.deepEqual(parse(["data: a: b:c\n\nevent: x:y\ndata\n\n"]), [ev("a: b:c"), ev("", "x:y")]);
  });

  test("field names are exact: case, spaces and unknown names are ignored", () => {
    assert.deepEqual(parse(["Data: a\ndata : b\n data: c\nfoo: d\nDATA\n\n"]), []);
  });

  test("event sets the type for one event only; empty event means message", () => {
    assert.deepEqual(parse(["event: a\ndata: 1\n\ndata: 2\n\nevent: b\nevent:\ndata: 3\n\n"]), [
      ev("1", "a"),
      ev("2"),
      ev("3"),
    ]);
  });

  test("a block with no data dispatches nothing and resets the type", () => {
    assert.deepEqual(parse(["event: x\n\ndata: y\n\n"]), [ev("y")]);
    assert.deepEqual(parse(["event: x\nid: 3\n\n\n\n"]), []);
  });

  test("ids persist across events until changed; an empty id resets", () => {
    const parser = new SSEParser();
    assert.deepEqual(parser.feed("data: a\n\nid: 1\ndata: b\n\ndata: c\n\nid\ndata: d\n\nid: 2\ndata: e\n\nid:\ndata: f\n\n"), [
      ev("a"),
      ev("b", "message", "1"),
      ev("c", "message", "1"),
      ev("d"),
      ev("e", "message", "2"),
      ev("f"),
    ]);
  });

  test("an id-only block updates lastEventId without dispatching", () => {
    const parser = new SSEParser();
    assert.deepEqual(parser.feed("id: 5\n\n"), []);
    assert.equal(parser.lastEventId, "5");
    assert.deepEqual(parser.feed("data: x\n\n"), [ev("x", "message", "5")]);
  });

  test("lastEventId changes at the blank line, not at the id line", () => {
    const parser = new SSEParser();
    parser.feed("id: 5\ndata: x\n");
    assert.equal(parser.lastEventId, "");
    parser.feed("\n");
    assert.equal(parser.lastEventId, "5");
  });

  test("an id with U+0000 is ignored (the previous id stays)", () => {
    assert.deepEqual(parse(["id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid: \0\ndata: c\n\n"]), [
      ev("a", "message", "1"),
      ev("b", "message", "1"),
      ev("c", "message", "1"),
    ]);
  });

  test("the last id wins within a block", () => {
    assert.deepEqual(parse(["id: 1\nid: 2\ndata: a\n\n"]), [ev("a", "message", "2")]);
  });

  test("retry only when all ASCII digits", () => {
    const retries = [];
    const lines = ["123", "0", "007", "12a", "-1", "1.5", "", " 5", "٣", "1e3", "+4", "9999999"];
    parse([lines.map((value) => `retry: ${value}\n`).join("") + "retry\n"], { onRetry: (ms) => retries.push(ms) });
    assert.deepEqual(retries, [123, 0, 7, 9999999]);
  });

  test("retry takes effect at once, even in an event never dispatched", () => {
    const retries = [];
    const parser = new SSEParser({ onRetry: (ms) => retries.push(ms) });
    parser.feed("retry: 10\ndata: incomplete");
    assert.deepEqual(retries, [10]);
    assert.deepEqual(parser.end(), []);
  });

  test("an incomplete final event is discarded, with its id", () => {
    const parser = new SSEParser();
    assert.deepEqual(parser.feed("data: a\n\nid: 9\nevent: x\ndata: b\n"), [ev("a")]);
    assert.deepEqual(parser.end(), []);
    assert.equal(parser.lastEventId, "");
    // The parser is ready for a new stream: the discarded block leaves nothing behind.
    assert.deepEqual(parser.feed("\uFEFFdata: c\n\n"), [ev("c")]);
  });

  test("an unterminated last line is discarded too", () => {
    assert.deepEqual(parse(["data: a\n\ndata: b"]), [ev("a")]);
    assert.deepEqual(parseBytes([utf8("data: a\n\ndata: b\n")]), [ev("a")]);
  });

  test("a parser seeded with an id carries it until the stream sends another", () => {
    assert.deepEqual(parse(["data: a\n\nid: 2\ndata: b\n\n"], { lastEventId: "1" }), [
      ev("a", "message", "1"),
      ev("b", "message", "2"),
    ]);
  });

  test("long lines fed in tiny pieces", () => {
    const long = "x".repeat(100_000);
    const text = `data: ${long}\n\n`;
    const chunks = [];
    for (let i = 0; i < text.length; i += 7) chunks.push(text.slice(i, i + 7));
    assert.deepEqual(parse(chunks), [ev(long)]);
  });
});

describe("helpers", () => {
  test("backoffDelay: uniform in [d/2, d], d = min(max, base * 2^(n-1))", () => {
    assert.equal(backoffDelay(1, 1000, 30000, () => 0), 500);
    assert.equal(backoffDelay(1, 1000, 30000, () => 0.5), 750);
    assert.equal(backoffDelay(3, 1000, 30000, () => 0), 2000);
    assert.equal(backoffDelay(10, 1000, 30000, () => 0), 15000, "capped");
    assert.equal(backoffDelay(10, 1000, 30000, () => 1 - Number.EPSILON) < 30000, true);
    assert.equal(backoffDelay(2000, 1000, 30000, () => 0), 15000, "no overflow to Infinity/NaN");
    assert.equal(backoffDelay(4, 0, 30000), 0, "retry: 0 reconnects at once");
    const random = prng(7);
    for (let n = 1; n <= 12; n++) {
      const d = Math.min(30000, 250 * 2 ** (n - 1));
      for (let i = 0; i < 200; i++) {
        const delay = backoffDelay(n, 250, 30000, random);
        assert.ok(delay >= d / 2 && delay <= d, `attempt ${n}: ${delay} not in [${d / 2}, ${d}]`);
      }
    }
    // With Math.random: spread, not a constant.
    const seen = new Set(Array.from({ length: 20 }, () => backoffDelay(3, 1000, 30000)));
    assert.ok(seen.size > 1);
  });

  test("parseRetryAfter: seconds or an HTTP date", () => {
    assert.equal(parseRetryAfter("3"), 3000);
    assert.equal(parseRetryAfter(" 0 "), 0);
    assert.equal(parseRetryAfter(null), null);
    assert.equal(parseRetryAfter("soon"), null);
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", now), 5000);
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", now), 0, "a past date: now");
  });
});
