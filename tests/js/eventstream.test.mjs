// EventStream of sluiceway.js against a real node:http server on 127.0.0.1.
import assert from "node:assert/strict";
import { after, afterEach, describe, test as nodeTest } from "node:test";

import { EventStream, IdleTimeoutError } from "../../src/sluiceway/web/sluiceway.js";
import { once, openStream, record, serve, sleep } from "./helpers.mjs";

const servers = [];
async function server(handler) {
  const s = await serve(handler);
  servers.push(s);
  return s;
}
after(() => Promise.all(servers.map((s) => s.close())));

// Every stream a test opens is closed after it, even when an assertion failed (a stream left
// reconnecting would keep the process alive); and no test may hang.
const streams = [];
const connect = (url, options) => {
  const stream = new EventStream(url, options);
  streams.push(stream);
  return stream;
};
afterEach(() => streams.splice(0).forEach((stream) => stream.close()));
const test = (name, fn) => nodeTest(name, { timeout: 8000 }, fn);

/** Every listener type EventStream dispatches by itself. */
const CONTROL = ["open", "message", "reset", "reconnecting", "error", "close"];

describe("EventStream", () => {
  test("POST with a JSON body and custom headers; events arrive; close() stops it", async () => {
    const s = await server((req, res) => {
      openStream(res);
      res.write("id: 1\ndata: hi\n\n");
      res.write("event: note\nid: 2\ndata: line 1\ndata: line 2\n\n");
    });
    const stream = connect(`${s.url}/start?x=1`, {
      method: "post",
      body: { messages: [{ role: "user", content: "héllo" }], n: 2 },
      headers: { Authorization: "Bearer secret", "X-Custom": "yes" },
    });
    const log = record(stream, [...CONTROL, "note"]);
    assert.equal(stream.readyState, "connecting");
    const note = await once(stream, "note");
    assert.equal(note.data, "line 1\nline 2");
    assert.equal(note.lastEventId, "2");
    assert.equal(stream.lastEventId, "2");
    assert.equal(stream.readyState, "open");
    stream.close();
    assert.equal(stream.readyState, "closed");
    stream.close(); // idempotent

    const [request] = s.requests;
    assert.equal(request.method, "POST");
    assert.equal(request.url, "/start?x=1");
    assert.deepEqual(JSON.parse(request.body), { messages: [{ role: "user", content: "héllo" }], n: 2 });
    assert.equal(request.headers["content-type"], "application/json");
    assert.equal(request.headers.authorization, "Bearer secret");
    assert.equal(request.headers["x-custom"], "yes");
    assert.equal(request.headers.accept, "text/event-stream");
    assert.equal(request.headers["cache-control"], "no-cache");
    assert.equal(request.headers["last-event-id"], undefined, "no id yet: no header");

    assert.deepEqual(log.map(([type]) => type), ["open", "message", "note", "close"]);
    const [, open] = log[0];
    assert.equal(open.reconnected, false);
    assert.equal(open.response.status, 200);
    assert.equal(stream.response, open.response);
    const [, message] = log[1];
    assert.equal(message.data, "hi");
    assert.equal(message.lastEventId, "1");
    assert.equal(log[3][1].reason, "closed");
    await sleep(50);
    assert.equal(s.requests.length, 1, "no reconnect after close()");
  });

  test("options.lastEventId is sent on the first request", async () => {
    const s = await server((req, res) => {
      openStream(res);
      res.end("id: 43\ndata: next\n\n");
    });
    const stream = connect(`${s.url}/`, { lastEventId: "42", reconnect: false });
    const message = await once(stream, "message");
    assert.equal(message.lastEventId, "43");
    assert.equal((await once(stream, "close")).reason, "done");
    assert.equal(s.requests[0].headers["last-event-id"], "42");
  });

  test("a response that ends is reconnected with Last-Event-ID, and resumes from there", async () => {
    const s = await server((req, res, n) => {
      openStream(res);
      if (n === 0) res.end("retry: 20\n\nid: e1\ndata: one\n\nid: e2\ndata: two\n\n");
      else if (n === 1) res.write("data: three\n\n"); // no id: keeps carrying e2
    });
    const stream = connect(`${s.url}/events`);
    const log = record(stream, CONTROL);
    const messages = [];
    stream.addEventListener("message", (e) => {
      messages.push([e.data, e.lastEventId]);
      if (messages.length === 3) stream.close();
    });
    await once(stream, "close");
    assert.deepEqual(messages, [["one", "e1"], ["two", "e2"], ["three", "e2"]]);
    assert.equal(s.requests.length, 2);
    assert.equal(s.requests[1].headers["last-event-id"], "e2");
    assert.equal(s.requests[1].url, "/events");
    assert.equal(stream.reconnects, 1);
    const opens = log.filter(([t]) => t === "open").map(([, e]) => e.reconnected);
    assert.deepEqual(opens, [false, true]);
    const [[, reconnecting]] = log.filter(([t]) => t === "reconnecting");
    assert.equal(reconnecting.error, null, "a clean end is not an error");
    assert.equal(reconnecting.attempt, 1);
    assert.ok(log.every(([t]) => t !== "error"));
  });

  test("resumeUrl: a POST that opened is followed by GETs elsewhere, without body", async () => {
    const s = await server((req, res, n) => {
      openStream(res);
      if (n === 0) res.end("retry: 10\nid: 5\ndata: a\n\n");
      else res.write("id: 6\ndata: b\n\n");
    });
    const stream = connect(`${s.url}/start`, {
      method: "POST",
      body: { go: true },
      resumeUrl: (id) => `${s.url}/follow?after=${id}`,
    });
    stream.addEventListener("message", (e) => e.data === "b" && stream.close());
    await once(stream, "close");
    const [first, second] = s.requests;
    assert.equal(first.method, "POST");
    assert.equal(second.method, "GET");
    assert.equal(second.url, "/follow?after=5");
    assert.equal(second.body, "");
    assert.equal(second.headers["content-type"], undefined);
    assert.equal(second.headers["last-event-id"], "5");
  });

  test("the server's retry: replaces the base delay (measured)", async () => {
    let ended = 0;
    const s = await server((req, res, n) => {
      openStream(res);
      if (n === 0) {
        res.end("retry: 300\n\nid: 1\ndata: a\n\n", () => (ended = performance.now()));
      } else res.write("data: b\n\n");
    });
    // A base of 10 s: if `retry: 300` were not honoured, the second request would not come.
    const stream = connect(s.url, { retry: 10000 });
    const reconnecting = once(stream, "reconnecting");
    const b = new Promise((resolve) => stream.addEventListener("message", (e) => e.data === "b" && resolve()));
    const { delay } = await reconnecting;
    assert.ok(delay >= 150 && delay <= 300, `delay ${delay} not in [150, 300]`);
    await b;
    stream.close();
    const waited = s.requests[1].at - ended;
    assert.ok(waited >= 140 && waited < 1500, `reconnected after ${waited} ms`);
  });

  test("the idle timeout aborts a silent connection and reconnects; pings keep it alive", async () => {
    const s = await server(async (req, res, n) => {
      openStream(res);
      if (n === 0) {
        res.write("id: 1\ndata: a\n\n");
        // Pings every 50 ms for 500 ms (idleTimeout 250 must not fire), then silence.
        for (let i = 0; i < 10; i++) {
          await sleep(50);
          res.write(": ping\n\n");
        }
      } else {
        res.write("data: b\n\n");
      }
    });
    const t0 = performance.now();
    const stream = connect(s.url, { idleTimeout: 250, retry: 10 });
    const log = record(stream, CONTROL);
    const reconnecting = await once(stream, "reconnecting");
    const elapsed = performance.now() - t0;
    assert.ok(reconnecting.error instanceof IdleTimeoutError, String(reconnecting.error));
    assert.ok(elapsed >= 700, `the idle timeout fired after ${elapsed} ms, despite the pings`);
    await new Promise((resolve) => stream.addEventListener("message", (e) => e.data === "b" && resolve()));
    stream.close();
    assert.equal(s.requests[1].headers["last-event-id"], "1");
    const error = log.find(([t]) => t === "error")[1];
    assert.equal(error.fatal, false);
    assert.equal(error.status, 0);
    assert.ok(error.error instanceof IdleTimeoutError);
  });

  test("the idle timeout also covers a server that never answers", async () => {
    const s = await server(async (req, res, n) => {
      if (n === 0) return; // never answers
      openStream(res);
      res.write("data: late\n\n");
    });
    const stream = connect(s.url, { idleTimeout: 150, retry: 10 });
    const reconnecting = await once(stream, "reconnecting");
    assert.ok(reconnecting.error instanceof IdleTimeoutError);
    assert.equal((await once(stream, "message")).data, "late");
    stream.close();
  });

  test("204 closes with reason done, without reconnecting", async () => {
    const s = await server((req, res) => {
      res.writeHead(204);
      res.end();
    });
    const stream = connect(s.url, { retry: 10 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "close")).reason, "done");
    await sleep(50);
    assert.deepEqual(log.map(([t]) => t), ["close"]);
    assert.equal(s.requests.length, 1);
    assert.equal(stream.readyState, "closed");
  });

  test("401 with a JSON error is fatal, with its body; no retry", async () => {
    const s = await server((req, res) => {
      res.writeHead(401, { "content-type": "application/json", "www-authenticate": "Bearer" });
      res.end(JSON.stringify({ error: "unauthorized", detail: "a token is required" }));
    });
    const stream = connect(s.url, { retry: 10 });
    const log = record(stream, CONTROL);
    await once(stream, "close");
    assert.deepEqual(log.map(([t]) => t), ["error", "close"]);
    const [[, error], [, close]] = log;
    assert.equal(error.fatal, true);
    assert.equal(error.status, 401);
    assert.deepEqual(error.body, { error: "unauthorized", detail: "a token is required" });
    assert.match(error.error.message, /401.*unauthorized/);
    assert.equal(error.data, undefined, "a transport error has no data (unlike a server event named error)");
    assert.equal(close.reason, "fatal");
    await sleep(50);
    assert.equal(s.requests.length, 1);
  });

  test("a 200 that is not text/event-stream is fatal", async () => {
    const s = await server((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<h1>login</h1>");
    });
    const stream = connect(s.url, { retry: 10 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "close")).reason, "fatal");
    assert.deepEqual(log.map(([t]) => t), ["error", "close"]);
    const [[, error]] = log;
    assert.equal(error.fatal, true);
    assert.equal(error.status, 200);
    assert.equal(error.body, "<h1>login</h1>");
    assert.match(error.error.message, /text\/event-stream/);
  });

  test("503 with Retry-After is retried, no sooner than it says", async () => {
    const s = await server((req, res, n) => {
      if (n === 0) {
        res.writeHead(503, { "retry-after": "1", "content-type": "application/json" });
        res.end(JSON.stringify({ error: "shutting_down", detail: "restarting" }));
        return;
      }
      openStream(res);
      res.write("data: back\n\n");
    });
    const stream = connect(s.url, { retry: 10 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "message")).data, "back");
    stream.close();
    assert.deepEqual(log.map(([t]) => t), ["error", "reconnecting", "open", "message", "close"]);
    const [[, error], [, reconnecting]] = log;
    assert.equal(error.fatal, false);
    assert.equal(error.status, 503);
    assert.deepEqual(error.body, { error: "shutting_down", detail: "restarting" });
    assert.ok(reconnecting.delay >= 1000, `delay ${reconnecting.delay}`);
    assert.equal(reconnecting.error, error.error);
    const waited = s.requests[1].at - s.requests[0].at;
    assert.ok(waited >= 990, `retried after ${waited} ms`);
  });

  test("429 without Retry-After and 5xx: exponential backoff with jitter; maxAttempts gives up", async () => {
    const statuses = [500, 429, 502, 408, 500];
    const s = await server((req, res, n) => {
      res.writeHead(statuses[n] ?? 500);
      res.end();
    });
    const stream = connect(s.url, { retry: 20, maxRetry: 600, maxAttempts: 5, random: () => 0.5 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "close")).reason, "gave_up");
    const waits = log.filter(([t]) => t === "reconnecting").map(([, e]) => [e.attempt, e.delay]);
    // After a failure the base is at least 250 ms (retry: 20 is less): d = min(600, 250 *
    // 2^(n-1)); random 0.5 gives 3/4 of d.
    assert.deepEqual(waits, [[1, 187.5], [2, 375], [3, 450], [4, 450]]);
    assert.deepEqual(log.filter(([t]) => t === "error").map(([, e]) => [e.status, e.fatal]), [
      [500, false], [429, false], [502, false], [408, false], [500, false],
    ]);
    assert.equal(s.requests.length, 5);
  });

  test("maxRetry caps the backoff", async () => {
    const s = await server((req, res) => {
      res.writeHead(500);
      res.end();
    });
    const stream = connect(s.url, { retry: 300, maxRetry: 700, maxAttempts: 4, random: () => 0 });
    const delays = [];
    stream.addEventListener("reconnecting", (e) => delays.push(e.delay));
    await once(stream, "close");
    assert.deepEqual(delays, [150, 300, 350]);
  });

  test("the attempt counter starts over after a connection that delivered an event", async () => {
    const s = await server((req, res, n) => {
      if (n === 2) {
        openStream(res);
        res.end("data: ok\n\n");
        return;
      }
      res.writeHead(500);
      res.end();
    });
    const stream = connect(s.url, { retry: 10, maxAttempts: 3, random: () => 0 });
    const attempts = [];
    stream.addEventListener("reconnecting", (e) => attempts.push(e.attempt));
    assert.equal((await once(stream, "close")).reason, "gave_up");
    // 500, 500, ok (reset, then its end counts 1), 500, 500 (3: give up)
    assert.deepEqual(attempts, [1, 2, 1, 2]);
    assert.equal(s.requests.length, 5);
  });

  test("a refused connection is retried; reconnect: false gives up at once", async () => {
    const s = await serve(() => {});
    const url = s.url;
    await s.close(); // nothing listens there now
    const stream = connect(url, { retry: 10, maxAttempts: 3 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "close")).reason, "gave_up");
    assert.deepEqual(log.map(([t]) => t), ["error", "reconnecting", "error", "reconnecting", "error", "close"]);
    assert.ok(log[0][1].error instanceof Error);
    assert.equal(log[0][1].status, 0);

    const once1 = connect(url, { reconnect: false });
    const log1 = record(once1, CONTROL);
    assert.equal((await once(once1, "close")).reason, "gave_up");
    assert.deepEqual(log1.map(([t]) => t), ["error", "close"]);
  });

  test("a connection cut mid-event: the partial event is dropped, and resumed after the last id", async () => {
    const s = await server(async (req, res, n) => {
      openStream(res);
      if (n === 0) {
        res.write("id: 1\ndata: whole\n\nid: 2\ndata: cut in th");
        await sleep(30);
        res.socket.destroy();
      } else {
        res.write(`id: 2\ndata: again ${req.headers["last-event-id"]}\n\n`);
      }
    });
    const stream = connect(s.url, { retry: 10 });
    const data = [];
    stream.addEventListener("message", (e) => {
      data.push(e.data);
      if (data.length === 2) stream.close();
    });
    const reconnecting = await once(stream, "reconnecting");
    assert.ok(reconnecting.error, "a cut connection is an error, not a clean end");
    await once(stream, "close");
    assert.deepEqual(data, ["whole", "again 1"]);
  });

  test("the hub's reset event is dispatched as reset, not under its name", async () => {
    const detail = {
      topics: [{ topic: "news", reason: "expired", requested: "a-3", earliest: "a-40", resumed_at: "a-57" }],
    };
    const s = await server((req, res) => {
      openStream(res);
      res.write(`event: sluiceway.reset\nid: a-57\ndata: ${JSON.stringify(detail)}\n\n`);
      res.write("id: a-58\ndata: fresh\n\n");
    });
    const stream = connect(s.url, { lastEventId: "a-3" });
    let named = 0;
    stream.addEventListener("sluiceway.reset", () => named++);
    const log = record(stream, ["reset", "message"]);
    await once(stream, "message");
    stream.close();
    assert.equal(named, 0);
    assert.deepEqual(log.map(([t]) => t), ["reset", "message"]);
    const [[, reset]] = log;
    assert.deepEqual(reset.detail, detail);
    assert.equal(reset.data, JSON.stringify(detail));
    assert.equal(reset.lastEventId, "a-57");
    assert.equal(stream.lastEventId, "a-58");
  });

  test("the hub's position event is not dispatched: its id is what a stream cut before its first event resumes from", async () => {
    const s = await server(async (req, res, n) => {
      openStream(res);
      if (n === 0) {
        res.write('id: e1-0\nevent: sluiceway.position\ndata: {"position":"e1-0"}\n\n');
        await sleep(30);
        res.socket.destroy(); // cut before any event
      } else {
        res.write(`id: e1-1\ndata: after ${req.headers["last-event-id"]}\n\n`);
      }
    });
    const stream = connect(s.url, { retry: 10 });
    let named = 0;
    stream.addEventListener("sluiceway.position", () => named++);
    const log = record(stream, CONTROL);
    const message = await once(stream, "message");
    stream.close();
    assert.equal(named, 0);
    assert.equal(message.data, "after e1-0");
    assert.equal(s.requests[1].headers["last-event-id"], "e1-0");
    assert.deepEqual(log.map(([t]) => t), ["open", "error", "reconnecting", "open", "message", "close"]);
    // A connection that brought only a position delivered nothing: the failure counts.
    assert.equal(log[2][1].attempt, 1);
    assert.equal(stream.lastEventId, "e1-1");
  });

  test("server events named open, close, reconnecting or reset arrive as server:<name>", async () => {
    const s = await server((req, res) => {
      openStream(res);
      for (const name of ["open", "close", "reconnecting", "reset", "error"]) {
        res.write(`event: ${name}\nid: ${name}-1\ndata: {"published":"${name}"}\n\n`);
      }
      res.write("id: last\ndata: still here\n\n");
    });
    const stream = connect(s.url, { retry: 10 });
    const renamed = ["server:open", "server:close", "server:reconnecting", "server:reset"];
    const log = record(stream, [...CONTROL, ...renamed]);
    await once(stream, "message");
    // The published "close" did not end anything: the stream is open, and saw one open.
    assert.equal(stream.readyState, "open");
    stream.close();
    assert.deepEqual(log.map(([t]) => t), ["open", ...renamed, "error", "message", "close"]);
    const [, open] = log[0];
    assert.ok(open.response, "the client's own open");
    for (const [type, event] of log.slice(1, 5)) {
      assert.equal(event.data, `{"published":"${type.slice(7)}"}`);
      assert.equal(event.lastEventId, `${type.slice(7)}-1`);
    }
    // A server event named "error" stays "error" (as with EventSource): it has data.
    const [, error] = log[5];
    assert.equal(error.data, '{"published":"error"}');
    assert.equal(error.fatal, undefined);
    assert.equal(log.at(-1)[1].reason, "closed", "the only close is close()");
  });

  test("a POST that fails before it opened is never repeated: fatal error, close fatal", async () => {
    const s = await server((req, res) => {
      res.writeHead(503, { "retry-after": "0", "content-type": "application/json" });
      res.end(JSON.stringify({ error: "shutting_down", detail: "restarting" }));
    });
    const stream = connect(s.url, { method: "POST", body: { go: 1 }, retry: 10 });
    const log = record(stream, CONTROL);
    assert.equal((await once(stream, "close", 2000)).reason, "fatal");
    assert.deepEqual(log.map(([t]) => t), ["error", "close"]);
    const [[, error]] = log;
    assert.equal(error.fatal, true);
    assert.equal(error.status, 503);
    assert.deepEqual(error.body, { error: "shutting_down", detail: "restarting" });
    await sleep(100);
    assert.equal(s.requests.length, 1, "the POST was sent once");

    // A network failure of a POST is fatal too (the server may have received it).
    const gone = await serve(() => {});
    await gone.close();
    const refused = connect(gone.url, { method: "POST", body: {}, retry: 10 });
    const log2 = record(refused, CONTROL);
    assert.equal((await once(refused, "close", 2000)).reason, "fatal");
    assert.deepEqual(log2.map(([t]) => t), ["error", "close"]);
    assert.equal(log2[0][1].fatal, true);
    assert.equal(log2[0][1].status, 0);
  });

  test("a POST may answer after the idle timeout: the idle timer starts with the headers", async () => {
    const s = await server(async (req, res, n) => {
      if (n === 0) await sleep(300); // a slow first token: Sluiceway answers the POST then
      openStream(res);
      res.write(`id: ${n + 1}\ndata: from ${req.method}\n\n`);
      // then silence: now the idle timeout applies
    });
    const stream = connect(`${s.url}/start`, {
      method: "POST",
      body: {},
      idleTimeout: 100,
      retry: 10,
      resumeUrl: `${s.url}/follow`,
    });
    const log = record(stream, CONTROL);
    const messages = [];
    stream.addEventListener("message", (e) => {
      messages.push(e.data);
      if (messages.length === 2) stream.close();
    });
    await once(stream, "close");
    assert.deepEqual(messages, ["from POST", "from GET"]);
    assert.deepEqual(s.requests.map((r) => [r.method, r.url]), [["POST", "/start"], ["GET", "/follow"]]);
    const [[, reconnecting]] = log.filter(([t]) => t === "reconnecting");
    assert.ok(reconnecting.error instanceof IdleTimeoutError, "the silence after the headers was timed");
    assert.equal(s.requests[1].headers["last-event-id"], "1");
  });

  test("after retry: 0, failed attempts stay spaced (a floor of 250 ms for the base)", async () => {
    const s = await server((req, res, n) => {
      if (n === 0) {
        openStream(res);
        res.end("retry: 0\n\nid: 1\ndata: a\n\n");
        return;
      }
      res.writeHead(503);
      res.end();
    });
    const stream = connect(s.url, { maxAttempts: 3, random: () => 0 });
    const delays = [];
    stream.addEventListener("reconnecting", (e) => delays.push(e.delay));
    assert.equal((await once(stream, "close")).reason, "gave_up");
    // A clean end after events: `retry: 0` as given. Then 503s: base 250, d = 250 * 2^(n-1).
    assert.deepEqual(delays, [0, 250]);
    assert.equal(s.requests.length, 3);
    const gap = s.requests[2].at - s.requests[1].at;
    assert.ok(gap >= 240, `the second failure was retried after ${gap} ms`);
  });

  test("huge Retry-After, retry and idleTimeout are clamped: no setTimeout overflow", async () => {
    const s = await server((req, res) => {
      res.writeHead(503, { "retry-after": "99999999999" });
      res.end();
    });
    const stream = connect(s.url, { retry: 10 });
    const reconnecting = await once(stream, "reconnecting");
    assert.equal(reconnecting.delay, 3_600_000, "Retry-After is honoured up to an hour");
    await sleep(100);
    assert.equal(s.requests.length, 1, "no early retry");
    stream.close();

    const s2 = await server((req, res) => {
      res.writeHead(500);
      res.end();
    });
    const stream2 = connect(s2.url, { retry: 1e12, maxRetry: Infinity });
    const { delay } = await once(stream2, "reconnecting");
    assert.ok(delay > 0 && delay <= 2 ** 31 - 1, `delay ${delay}`);
    await sleep(100);
    assert.equal(s2.requests.length, 1, "no early retry");
    stream2.close();

    const s3 = await server(async (req, res) => {
      openStream(res);
      res.write("data: a\n\n");
      await sleep(150);
      res.write("data: b\n\n");
    });
    const stream3 = connect(s3.url, { idleTimeout: 2 ** 32, retry: 10 });
    const log = record(stream3, CONTROL);
    await new Promise((resolve) => stream3.addEventListener("message", (e) => e.data === "b" && resolve()));
    stream3.close();
    assert.deepEqual(log.map(([t]) => t), ["open", "message", "message", "close"]);
  });

  test("headers may be a function, called for each request (a fresh token on reconnect)", async () => {
    const s = await server((req, res, n) => {
      openStream(res);
      if (n === 0) res.end("retry: 10\nid: 1\ndata: a\n\n");
      else res.write("id: 2\ndata: b\n\n");
    });
    let issued = 0;
    const stream = connect(s.url, { headers: () => ({ Authorization: `Bearer t${++issued}` }) });
    await new Promise((resolve) => stream.addEventListener("message", (e) => e.data === "b" && resolve()));
    stream.close();
    assert.deepEqual(s.requests.map((r) => r.headers.authorization), ["Bearer t1", "Bearer t2"]);

    // An async one too; one that throws fails that attempt (a GET: retried).
    let calls = 0;
    const stream2 = connect(s.url, {
      retry: 10,
      headers: async () => {
        if (++calls === 1) throw new Error("token refresh failed");
        return { Authorization: "Bearer async" };
      },
    });
    const reconnecting = await once(stream2, "reconnecting");
    assert.match(reconnecting.error.message, /token refresh failed/);
    await once(stream2, "message");
    stream2.close();
    assert.equal(s.requests.at(-1).headers.authorization, "Bearer async");
  });

  test("bytes split anywhere on the wire (CRLF and UTF-8 cut in two)", async () => {
    const bytes = new TextEncoder().encode("\uFEFFid: 1\r\ndata: 🌊 wave\r\n\r\n");
    const s = await server(async (req, res) => {
      openStream(res);
      for (const cut of [[0, 2], [2, 14], [14, 17], [17, 26], [26, 27], [27]]) {
        res.write(bytes.slice(...cut));
        await sleep(5);
      }
    });
    const stream = connect(s.url);
    const message = await once(stream, "message");
    stream.close();
    assert.equal(message.data, "🌊 wave");
    assert.equal(message.lastEventId, "1");
  });

  test("listeners attached right after construction see the first event; a fetch can be injected", async () => {
    const calls = [];
    const fakeFetch = async (url, init) => {
      calls.push([url, init.method, init.headers.get("last-event-id")]);
      return new Response("data: from fake\n\n", { headers: { "content-type": "text/event-stream" } });
    };
    const stream = connect("http://fake/x", { fetch: fakeFetch, reconnect: false, lastEventId: "7" });
    const log = record(stream, CONTROL);
    await once(stream, "close");
    assert.deepEqual(log.map(([t]) => t), ["open", "message", "close"]);
    assert.deepEqual(calls, [["http://fake/x", "GET", "7"]]);
  });
});
