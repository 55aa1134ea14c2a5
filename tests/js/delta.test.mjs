// Fossil deltas in sluiceway.js: the decoder against deltas made by Sluiceway's encoder
// (sluiceway.fossil), the parser's `delta:` field, and EventStream applying deltas, with a
// delta that does not apply answered by resuming from the last good event.
import assert from "node:assert/strict";
import { after, afterEach, describe, test as nodeTest } from "node:test";

import {
  DeltaError,
  EventStream,
  SSEParser,
  applyFossilDelta,
} from "../../src/sluiceway/web/sluiceway.js";
import { once, openStream, serve } from "./helpers.mjs";

const test = (name, fn) => nodeTest(name, { timeout: 8000 }, fn);
const bytes = (text) => new TextEncoder().encode(text);
const text = (array) => new TextDecoder().decode(array);

const servers = [];
const streams = [];
after(() => Promise.all(servers.map((s) => s.close())));
afterEach(() => streams.splice(0).forEach((stream) => stream.close()));

// Made by sluiceway.fossil.create (Python) from these origins and targets.
const ORIGIN = '{"temperature": 21.5, "humidity": 40, "status": "ok", "room": "lab"}';
const TARGET = '{"temperature": 21.7, "humidity": 40, "status": "ok", "room": "lab"}';
const DELTA = "14\nJ@0,1:7l@K,2JdW5a;";
const UNICODE_ORIGIN = `${"a".repeat(20)}${"héllo wörld ☃ ".repeat(10)}`;
const UNICODE_TARGET = `${"a".repeat(20)}${"héllo wörld ☃ ".repeat(9)}changed ☃ end\n`;
const UNICODE_DELTA = "36\n2r@0,G:changed ☃ end\n2G6PJR;";

describe("applyFossilDelta", () => {
  test("rebuilds the targets Sluiceway's encoder made deltas for", () => {
    assert.equal(text(applyFossilDelta(bytes(ORIGIN), bytes(DELTA))), TARGET);
    assert.equal(text(applyFossilDelta(bytes(UNICODE_ORIGIN), bytes(UNICODE_DELTA))), UNICODE_TARGET);
    // A target longer than origin and delta together: the origin copied three times.
    const origin = "x".repeat(32);
    assert.equal(text(applyFossilDelta(bytes(origin), bytes("1W\nW@0,W@0,W@0,1BIpi0;"))), origin.repeat(3));
  });

  test("a delta for another origin, or a damaged one, throws DeltaError", () => {
    const bad = [
      "",
      "zz",
      DELTA.slice(0, -3),
      DELTA.replace("@", "!"),
      "5\n3@100,0;",
      "zzzzzzzz\n0;", // a size of gigabytes: refused before anything is allocated
    ];
    for (const delta of bad) {
      assert.throws(() => applyFossilDelta(bytes(ORIGIN), bytes(delta)), DeltaError, delta);
    }
    // The right delta on another origin fails the checksum.
    const other = ORIGIN.replace("lab", "LAB");
    assert.throws(() => applyFossilDelta(bytes(other), bytes(DELTA)), DeltaError);
  });
});

describe("SSEParser", () => {
  test("keeps the delta field of an event (and only of that event)", () => {
    const parser = new SSEParser();
    const events = parser.feed("id: 1\ndata: a\n\nid: 2\ndelta: fossil\ndata: 1\ndata: 0;\n\nid: 3\ndata: b\n\n");
    assert.deepEqual(events, [
      { type: "message", data: "a", lastEventId: "1" },
      { type: "message", data: "1\n0;", lastEventId: "2", delta: "fossil" },
      { type: "message", data: "b", lastEventId: "3" },
    ]);
  });
});

/** An SSE frame; `delta` adds the `delta:` line. */
function frame(id, data, delta) {
  const lines = data.split("\n").map((line) => `data: ${line}`).join("\n");
  return `id: ${id}\n${delta ? `delta: ${delta}\n` : ""}${lines}\n\n`;
}

describe("EventStream with delta: true", () => {
  test("asks for deltas and dispatches every event whole", async () => {
    const s = await serve((req, res) => {
      openStream(res);
      res.end(frame("e-1", ORIGIN) + frame("e-2", DELTA, "fossil"));
    });
    servers.push(s);
    const stream = new EventStream(`${s.url}/topics/dash`, { delta: true, reconnect: false });
    streams.push(stream);
    const data = [];
    stream.addEventListener("message", (event) => data.push(event.data));
    await once(stream, "close");
    assert.deepEqual(data, [ORIGIN, TARGET]);
    assert.equal(s.requests[0].url, "/topics/dash?delta=fossil");
  });

  test("a delta that does not apply: reconnects from the last good event, which goes on whole", async () => {
    const s = await serve((req, res, n) => {
      openStream(res);
      if (n === 0) {
        // e-3's delta is for another origin: it copies beyond this one.
        res.write(frame("e-1", ORIGIN) + frame("e-2", DELTA, "fossil") + frame("e-3", UNICODE_DELTA, "fossil"));
      } else {
        res.end(frame("e-3", `resumed after ${req.headers["last-event-id"]}`));
      }
    });
    servers.push(s);
    const stream = new EventStream(`${s.url}/topics/dash?x=1`, { delta: true, retry: 10 });
    streams.push(stream);
    const data = [];
    const errors = [];
    stream.addEventListener("message", (event) => {
      data.push(event.data);
      if (data.length === 3) stream.close();
    });
    stream.addEventListener("error", (event) => errors.push(event.error));
    await once(stream, "close");
    assert.deepEqual(data, [ORIGIN, TARGET, "resumed after e-2"]);
    assert.ok(errors[0] instanceof DeltaError, String(errors[0]));
    assert.equal(s.requests[1].url, "/topics/dash?x=1&delta=fossil");
  });

  test("a delta as the first event of a connection is not applied to the last one's", async () => {
    const s = await serve((req, res, n) => {
      openStream(res);
      if (n === 0) res.end(frame("e-1", ORIGIN));
      else if (n === 1) res.end(frame("e-2", DELTA, "fossil")); // no base on this connection
      else res.end(frame("e-2", TARGET));
    });
    servers.push(s);
    const stream = new EventStream(s.url, { delta: true, retry: 10 });
    streams.push(stream);
    const data = [];
    stream.addEventListener("message", (event) => {
      data.push(event.data);
      if (data.length === 2) stream.close();
    });
    await once(stream, "close");
    assert.deepEqual(data, [ORIGIN, TARGET]);
    assert.equal(s.requests[2].headers["last-event-id"], "e-1");
  });
});
