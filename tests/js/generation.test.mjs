// Generation of sluiceway.js against a node:http fake of Sluiceway's /v1/generations endpoints.
import assert from "node:assert/strict";
import { after, afterEach, describe, test as nodeTest } from "node:test";

import { Generation } from "../../src/sluiceway/web/sluiceway.js";
import { MemoryStorage, once, openStream, record, serve, sleep } from "./helpers.mjs";

const TOKENS = ["Once", " upon", " a", " time", ",", " a", " sluice", " way", " opened", "."];
const TEXT = TOKENS.join("");
const GEN_ID = "gen_0123abcd";
const frame = (id, event, data) => `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/**
 * A fake of the generation endpoints for one generation, GEN_ID:
 *   POST /v1/generations           answers (after `headerDelay`) with x-generation-id and its stream
 *   GET  /v1/generations/{id}/stream  replays after Last-Event-ID; 204 when nothing is left
 *   POST /v1/generations/{id}/cancel  ends it with `done` {finish_reason: "cancelled"}
 * Events: start (g-1), a token per TOKENS entry (g-2...), then `done` or `error` (`ending`).
 * `cutAfter`: the first connection is destroyed after that many events; `status`: the POST's
 * refusal; `streamStatus`: the status of every GET .../stream. `resetOnResume`: a GET with a
 * Last-Event-ID gets the hub's `sluiceway.reset` and then events from g-9 on (g-6 to g-8
 * lost), as when that id left the history; "always": every GET does, even without one.
 */
async function fakeServer({ cutAfter = null, headerDelay = 0, tokenDelay = 3, ending = "done", status = null, streamStatus = null, resetOnResume = false } = {}) {
  const events = [frame("g-1", "start", { id: GEN_ID, model: "fake-1", provider: "fake", created: 1 })];
  TOKENS.forEach((text, i) => events.push(frame(`g-${i + 2}`, "token", { text })));
  const last = `g-${TOKENS.length + 2}`;
  const endings = {
    done: frame(last, "done", { finish_reason: "stop", output_tokens: TOKENS.length, ttft_ms: 1.5 }),
    error: frame(last, "error", { error: "upstream_error", message: "the provider failed" }),
    cancelled_elsewhere: frame(last, "done", { finish_reason: "cancelled", output_tokens: 3 }),
  };
  const state = { cancelled: false, produced: 0, closedEarly: 0, connections: 0 };
  const idOf = (f) => f.slice(4, f.indexOf("\n"));

  async function stream(req, res, from, cut, prefix = "") {
    state.connections++;
    res.on("close", () => {
      if (!res.writableFinished) state.closedEarly++;
    });
    openStream(res, { "x-generation-id": GEN_ID });
    if (prefix) res.write(prefix);
    for (let i = from, sent = 0; ; i++, sent++) {
      if (cut !== null && sent === cut) return res.socket.destroy();
      if (state.cancelled && i >= state.produced) {
        if (!res.destroyed) res.end(frame(last, "done", { finish_reason: "cancelled", output_tokens: state.produced - 1 }));
        return;
      }
      if (ending === "cancelled_elsewhere" && i === 4) {
        return res.end(endings.cancelled_elsewhere);
      }
      if (i === events.length) return res.end(endings[ending]);
      if (res.destroyed) return;
      res.write(events[i]);
      state.produced = Math.max(state.produced, i + 1);
      await sleep(tokenDelay);
    }
  }

  const s = await serve(async (req, res, n) => {
    const path = new URL(req.url, "http://x").pathname;
    if (req.method === "POST" && path === "/v1/generations") {
      await sleep(headerDelay);
      if (status) {
        res.writeHead(status, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: "invalid_body", detail: "messages: field required" }));
      }
      return stream(req, res, 0, cutAfter);
    }
    if (req.method === "GET" && path === `/v1/generations/${GEN_ID}/stream`) {
      if (streamStatus) {
        res.writeHead(streamStatus);
        return res.end();
      }
      const after = req.headers["last-event-id"];
      if (resetOnResume === "always" || (resetOnResume && after)) {
        const detail = { topics: [{ topic: `gen.${GEN_ID}`, reason: "expired", requested: after ?? "", earliest: "g-9", resumed_at: "g-8" }] };
        return stream(req, res, 8, null, frame("g-8", "sluiceway.reset", detail));
      }
      const from = after ? events.findIndex((f) => idOf(f) === after) + 1 : 0;
      if (after === last) {
        res.writeHead(204);
        return res.end();
      }
      return stream(req, res, from, null);
    }
    if (req.method === "POST" && path === `/v1/generations/${GEN_ID}/cancel`) {
      state.cancelAuthorization = req.headers.authorization;
      state.cancelled = true;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ id: GEN_ID, state: "cancelled" }));
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "unknown_generation", detail: "no such generation (or its retention ended)" }));
  });
  servers.push(s);
  return Object.assign(s, { state, last, idOf, events });
}

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

// Every generation a test follows is closed after it, even when an assertion failed.
const followed = [];
const track = (g) => (g && followed.push(g), g);
const startGen = (...args) => track(Generation.start(...args));
const resumeGen = (...args) => track(Generation.resume(...args));
afterEach(() => followed.splice(0).forEach((g) => g.close()));
const test = (name, fn) => nodeTest(name, { timeout: 8000 }, fn);

/** The text a record with this lastEventId must hold: the tokens up to that event. */
const textAt = (id) => (id === "" || id === "g-1" ? "" : TOKENS.slice(0, Number(id.slice(2)) - 1).join(""));

/** A MemoryStorage that also keeps every record written, parsed, with when it was written. */
class SpyStorage extends MemoryStorage {
  writes = [];
  setItem(key, value) {
    this.writes.push({ ...JSON.parse(value), at: performance.now() });
    super.setItem(key, value);
  }
}

const BODY = { messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 50 };
const TYPES = ["start", "token", "done", "cancelled", "error", "reconnecting", "state", "reset"];

describe("Generation", () => {
  test("start: POSTs the body, streams the text, ends done; storage pairs text and id", async () => {
    const s = await fakeServer();
    const storage = new SpyStorage();
    const g = startGen(BODY, {
      baseUrl: s.url,
      storage,
      headers: { Authorization: "Bearer t" },
      meta: { prompt: "Tell me a story" },
    });
    assert.equal(g.state, "starting");
    assert.equal(g.id, null);
    const log = record(g, TYPES);
    const done = await once(g, "done");

    assert.equal(g.text, TEXT);
    assert.equal(g.state, "done");
    assert.equal(g.id, GEN_ID);
    assert.equal(g.model, "fake-1");
    assert.equal(done.summary.finish_reason, "stop");
    assert.deepEqual(g.summary, done.summary);
    const [request] = s.requests;
    assert.equal(request.method, "POST");
    assert.equal(request.url, "/v1/generations");
    assert.deepEqual(JSON.parse(request.body), BODY);
    assert.equal(request.headers.authorization, "Bearer t");

    const types = log.map(([t]) => t);
    assert.deepEqual(types.filter((t) => t !== "token"), ["state", "start", "done", "state"]);
    assert.deepEqual(log.filter(([t]) => t === "state").map(([, e]) => e.state), ["streaming", "done"]);
    const tokens = log.filter(([t]) => t === "token").map(([, e]) => e);
    assert.deepEqual(tokens.map((e) => e.text), TOKENS);
    assert.equal(tokens.at(-1).total, TEXT);
    const [[, start]] = log.filter(([t]) => t === "start");
    assert.equal(start.id, GEN_ID);
    assert.equal(start.model, "fake-1");

    // Every record written paired a text with the id of its last token.
    assert.ok(storage.writes.length >= 1);
    for (const stored of storage.writes) {
      assert.equal(stored.text, textAt(stored.lastEventId));
      assert.equal(stored.id, GEN_ID);
      assert.equal(stored.baseUrl, s.url);
      assert.deepEqual(stored.meta, { prompt: "Tell me a story" });
    }
    assert.equal(storage.getItem("sluiceway.generation"), null, "removed once done");
    assert.equal(s.requests.length, 1);
  });

  test("a connection cut mid-way resumes from Last-Event-ID, without duplicated text", async () => {
    const s = await fakeServer({ cutAfter: 5 }); // start + 4 tokens, then the socket dies
    const g = startGen(BODY, { baseUrl: s.url, storage: null, retry: 10 });
    const log = record(g, TYPES);
    await once(g, "done");
    assert.equal(g.text, TEXT);
    const tokens = log.filter(([t]) => t === "token").map(([, e]) => e.text);
    assert.deepEqual(tokens, TOKENS, "each token exactly once");
    assert.equal(log.filter(([t]) => t === "reconnecting").length, 1);
    assert.equal(s.requests.length, 2);
    const resume = s.requests[1];
    assert.equal(resume.method, "GET");
    assert.equal(resume.url, `/v1/generations/${GEN_ID}/stream`);
    assert.equal(resume.headers["last-event-id"], "g-5");
    assert.equal(resume.body, "");
  });

  test("stop() aborts the stream and calls the cancel endpoint; idempotent", async () => {
    const s = await fakeServer({ tokenDelay: 40 });
    const storage = new MemoryStorage();
    const g = startGen(BODY, { baseUrl: s.url, storage, headers: { Authorization: "Bearer t" } });
    const log = record(g, TYPES);
    await new Promise((resolve) => g.addEventListener("token", () => g.text.split(" ").length > 2 && resolve()));
    const textAtStop = g.text;
    const stopping = g.stop();
    assert.equal(g.state, "cancelled", "at once");
    assert.equal(g.stop(), stopping, "the same promise");
    await stopping;
    await sleep(120); // three more token periods: nothing more may arrive
    assert.equal(g.text, textAtStop);
    const cancels = s.requests.filter((r) => r.url.endsWith("/cancel"));
    assert.equal(cancels.length, 1);
    assert.equal(cancels[0].method, "POST");
    assert.equal(cancels[0].url, `/v1/generations/${GEN_ID}/cancel`);
    assert.equal(cancels[0].headers.authorization, "Bearer t");
    assert.equal(s.state.closedEarly, 1, "the stream's connection was aborted");
    assert.equal(s.requests.filter((r) => r.url.endsWith("/stream")).length, 0, "no reconnect");
    const types = log.map(([t]) => t).filter((t) => t !== "token");
    assert.deepEqual(types, ["state", "start", "cancelled", "state"]);
    assert.equal(log.find(([t]) => t === "cancelled")[1].summary, null);
    assert.equal(storage.getItem("sluiceway.generation"), null);
    await g.stop();
    assert.equal(s.requests.filter((r) => r.url.endsWith("/cancel")).length, 1);
  });

  test("stop() before the server answered waits for the id, then cancels it", async () => {
    const s = await fakeServer({ headerDelay: 150 });
    const g = startGen(BODY, { baseUrl: s.url, storage: null });
    const tokens = [];
    g.addEventListener("token", (e) => tokens.push(e.text));
    const stopping = g.stop();
    assert.equal(g.state, "cancelled");
    await stopping;
    assert.equal(g.id, GEN_ID);
    const cancels = s.requests.filter((r) => r.url === `/v1/generations/${GEN_ID}/cancel`);
    assert.equal(cancels.length, 1);
    assert.deepEqual(tokens, [], "no token reported after stop()");
    assert.equal(g.text, "");
  });

  test("storage round trip: close() keeps it; resumeGen() continues with the stored text", async () => {
    const s = await fakeServer({ tokenDelay: 15 });
    const storage = new MemoryStorage();
    const first = startGen(BODY, { baseUrl: s.url, storage, meta: { messages: BODY.messages } });
    await new Promise((resolve) => first.addEventListener("token", () => first.text === "Once upon a" && resolve()));
    first.close(); // a page unload: no cancel
    const stored = JSON.parse(storage.getItem("sluiceway.generation"));
    assert.deepEqual(stored, {
      id: GEN_ID,
      lastEventId: "g-4",
      text: "Once upon a",
      meta: { messages: BODY.messages },
      baseUrl: s.url,
      urls: {
        start: "/v1/generations",
        events: "/v1/generations/{id}/stream",
        cancel: "/v1/generations/{id}/cancel",
      },
      model: "fake-1",
    });
    await sleep(30);
    assert.equal(s.requests.filter((r) => r.url.endsWith("/cancel")).length, 0);

    const g = resumeGen({ storage });
    assert.ok(g);
    assert.equal(g.id, GEN_ID);
    assert.equal(g.text, "Once upon a");
    assert.deepEqual(g.meta, { messages: BODY.messages });
    const tokens = [];
    g.addEventListener("token", (e) => tokens.push(e.text));
    await once(g, "done");
    assert.equal(g.text, TEXT);
    assert.deepEqual(tokens, TOKENS.slice(3));
    const resume = s.requests.at(-1);
    assert.equal(resume.method, "GET");
    assert.equal(resume.url, `/v1/generations/${GEN_ID}/stream`);
    assert.equal(resume.headers["last-event-id"], "g-4");
    assert.equal(storage.getItem("sluiceway.generation"), null);
    assert.equal(resumeGen({ storage }), null, "nothing left to resume");
  });

  test("resumeGen(): null without storage, with garbage, or with another key", () => {
    const storage = new MemoryStorage();
    assert.equal(resumeGen({ storage }), null);
    assert.equal(resumeGen({ storage: null }), null);
    assert.equal(resumeGen(), null, "Node has no sessionStorage");
    storage.setItem("sluiceway.generation", "{not json");
    assert.equal(resumeGen({ storage }), null);
    storage.setItem("sluiceway.generation", JSON.stringify({ text: "no id" }));
    assert.equal(resumeGen({ storage }), null);
    storage.setItem("other", JSON.stringify({ id: "gen_x", lastEventId: "", text: "" }));
    assert.equal(resumeGen({ storage }), null);
  });

  test("a storageKey keeps generations apart; a resumed one follows its stored baseUrl", async () => {
    const s = await fakeServer();
    const storage = new MemoryStorage();
    storage.setItem("tab-2", JSON.stringify({ id: GEN_ID, lastEventId: "g-9", text: "Once upon a time, a sluice way", meta: {}, baseUrl: s.url }));
    const g = resumeGen({ storage, storageKey: "tab-2" });
    await once(g, "done");
    assert.equal(g.text, TEXT);
    assert.equal(storage.getItem("tab-2"), null);
  });

  test("the server's error event ends it in state error", async () => {
    const s = await fakeServer({ ending: "error" });
    const storage = new MemoryStorage();
    const g = startGen(BODY, { baseUrl: s.url, storage });
    const error = await once(g, "error");
    assert.equal(error.error, "upstream_error");
    assert.equal(error.message, "the provider failed");
    assert.equal(g.state, "error");
    assert.equal(g.text, TEXT);
    assert.equal(storage.getItem("sluiceway.generation"), null);
    await sleep(30);
    assert.equal(s.requests.length, 1, "an ended generation is not reconnected");
  });

  test("cancelled elsewhere: done with finish_reason cancelled becomes a cancelled event", async () => {
    const s = await fakeServer({ ending: "cancelled_elsewhere" });
    const g = startGen(BODY, { baseUrl: s.url, storage: null });
    const log = record(g, TYPES);
    const cancelled = await once(g, "cancelled");
    assert.equal(cancelled.summary.finish_reason, "cancelled");
    assert.equal(g.state, "cancelled");
    assert.equal(g.text, TOKENS.slice(0, 3).join(""));
    assert.ok(!log.some(([t]) => t === "done"));
  });

  test("resuming a generation whose last event was already here: 204 means done", async () => {
    const s = await fakeServer();
    const storage = new MemoryStorage();
    storage.setItem("sluiceway.generation", JSON.stringify({ id: GEN_ID, lastEventId: s.last, text: TEXT, meta: {}, baseUrl: s.url }));
    const g = resumeGen({ storage });
    const done = await once(g, "done");
    assert.equal(done.summary, null);
    assert.equal(g.state, "done");
    assert.equal(g.text, TEXT);
    assert.equal(storage.getItem("sluiceway.generation"), null);
  });

  test("resuming an unknown generation (404) is an error, and storage forgets it", async () => {
    const s = await fakeServer();
    const storage = new MemoryStorage();
    storage.setItem("sluiceway.generation", JSON.stringify({ id: "gen_gone", lastEventId: "g-3", text: "Once upon", meta: {}, baseUrl: s.url }));
    const g = resumeGen({ storage });
    const error = await once(g, "error");
    assert.equal(error.status, 404);
    assert.equal(error.error, "unknown_generation");
    assert.match(error.message, /no such generation/);
    assert.equal(g.state, "error");
    assert.equal(storage.getItem("sluiceway.generation"), null);
  });

  test("a refused start (422) is an error with the server's code, not retried", async () => {
    const s = await fakeServer({ status: 422 });
    const g = startGen({ messages: [] }, { baseUrl: s.url, storage: null, retry: 10 });
    const error = await once(g, "error");
    assert.equal(error.status, 422);
    assert.equal(error.error, "invalid_body");
    assert.equal(error.message, "messages: field required");
    await sleep(50);
    assert.equal(s.requests.length, 1);
  });

  test("gave up reconnecting: error gave_up, storage kept for a reload; stop() still cancels", async () => {
    const s = await fakeServer({ cutAfter: 4, streamStatus: 500 });
    const storage = new MemoryStorage();
    const g = startGen(BODY, { baseUrl: s.url, storage, retry: 5, maxAttempts: 2 });
    const error = await once(g, "error");
    assert.equal(error.error, "gave_up");
    assert.equal(g.state, "error");
    const stored = JSON.parse(storage.getItem("sluiceway.generation"));
    assert.deepEqual([stored.text, stored.lastEventId], ["Once upon a", "g-4"]);
    assert.deepEqual(s.requests.map((r) => r.method), ["POST", "GET"]);
    await g.stop();
    assert.equal(g.state, "cancelled");
    assert.equal(s.requests.at(-1).url, `/v1/generations/${GEN_ID}/cancel`);
    assert.equal(storage.getItem("sluiceway.generation"), null);
  });
  test("a start POST that fails is never repeated: one POST, then error", async () => {
    const s = await fakeServer({ status: 503 });
    const g = startGen(BODY, { baseUrl: s.url, storage: null, retry: 10 });
    const error = await once(g, "error", 2000);
    assert.equal(error.status, 503);
    assert.equal(g.state, "error");
    await sleep(100);
    assert.deepEqual(s.requests.map((r) => r.method), ["POST"], "one generation started, not several");
  });

  test("a slow first token (headers later than idleTimeout) does not start the generation again", async () => {
    const s = await fakeServer({ headerDelay: 300 });
    const g = startGen(BODY, { baseUrl: s.url, storage: null, idleTimeout: 100, retry: 10 });
    await once(g, "done");
    assert.equal(g.text, TEXT);
    assert.deepEqual(s.requests.map((r) => r.method), ["POST"]);
  });

  test("a reset on resume drops the text and replays the generation from its first event", async () => {
    const s = await fakeServer({ cutAfter: 5, resetOnResume: true });
    const storage = new SpyStorage();
    const g = startGen(BODY, { baseUrl: s.url, storage, retry: 10 });
    const log = record(g, TYPES);
    let textAtReset = null;
    g.addEventListener("reset", () => (textAtReset = g.text));
    await once(g, "done");
    assert.equal(g.text, TEXT, "the server's text, without a gap");
    assert.equal(textAtReset, "", "the text was dropped before the replay");
    const [[, reset]] = log.filter(([t]) => t === "reset");
    assert.equal(reset.detail.topics[0].reason, "expired");
    assert.equal(reset.text, "");
    // Tokens: 4 before the cut, then all of them again from the start.
    const afterReset = log.slice(log.findIndex(([t]) => t === "reset")).filter(([t]) => t === "token");
    assert.deepEqual(afterReset.map(([, e]) => e.text), TOKENS);
    assert.equal(afterReset.at(-1)[1].total, TEXT);
    const gets = s.requests.filter((r) => r.method === "GET");
    assert.deepEqual(gets.map((r) => r.headers["last-event-id"]), ["g-5", undefined]);
    assert.ok(gets.every((r) => r.url === `/v1/generations/${GEN_ID}/stream`));
    for (const stored of storage.writes) assert.equal(stored.text, textAt(stored.lastEventId));
    assert.equal(storage.getItem("sluiceway.generation"), null);
    assert.equal(g.state, "done");
  });

  test("a reset even when replaying from the start ends in error (no loop, no gap)", async () => {
    const s = await fakeServer({ resetOnResume: "always" });
    const storage = new MemoryStorage();
    storage.setItem("sluiceway.generation", JSON.stringify({ id: GEN_ID, lastEventId: "g-4", text: "Once upon a", meta: {}, baseUrl: s.url }));
    const g = resumeGen({ storage, retry: 10 });
    const log = record(g, TYPES);
    const error = await once(g, "error");
    assert.equal(error.error, "reset");
    assert.equal(g.state, "error");
    await sleep(50);
    assert.deepEqual(s.requests.map((r) => r.headers["last-event-id"]), ["g-4", undefined]);
    assert.equal(log.filter(([t]) => t === "reset").length, 1);
    assert.ok(!log.some(([t]) => t === "done"));
  });

  test("401/403 on a reconnect: a fatal error, but storage keeps the generation for a reload", async () => {
    for (const status of [401, 403]) {
      const s = await fakeServer({ streamStatus: status });
      const storage = new MemoryStorage();
      const record0 = JSON.stringify({ id: GEN_ID, lastEventId: "g-4", text: "Once upon a", meta: { a: 1 }, baseUrl: s.url, model: "fake-1" });
      storage.setItem("sluiceway.generation", record0);
      const g = resumeGen({ storage, retry: 10 });
      const error = await once(g, "error");
      assert.equal(error.status, status);
      assert.equal(g.state, "error");
      assert.equal(storage.getItem("sluiceway.generation"), record0, "kept as it was");
      await sleep(30);
      assert.equal(s.requests.length, 1, "not retried");
      // A reload (with a fresh token) follows it again.
      const again = resumeGen({ storage, retry: 10 });
      assert.equal(again?.text, "Once upon a");
      again.close();
    }
  });

  test("headers may be an (async) function: called for the POST, each reconnect and the cancel", async () => {
    const s = await fakeServer({ cutAfter: 5, tokenDelay: 20 });
    let issued = 0;
    const headers = async () => ({ Authorization: `Bearer t${++issued}` });
    const g = startGen(BODY, { baseUrl: s.url, storage: null, retry: 10, headers });
    await new Promise((resolve) => g.addEventListener("token", () => g.text.length > 20 && resolve()));
    await g.stop();
    assert.deepEqual(s.requests.map((r) => [r.method, r.headers.authorization]), [
      ["POST", "Bearer t1"],
      ["GET", "Bearer t2"],
      ["POST", "Bearer t3"],
    ]);
    assert.equal(s.state.cancelAuthorization, "Bearer t3");
  });

  test("storage writes are throttled (at most one per 250 ms), always pairing text and id", async () => {
    const fast = await fakeServer({ tokenDelay: 1 });
    const storage = new SpyStorage();
    const g = startGen(BODY, { baseUrl: fast.url, storage });
    await once(g, "done");
    assert.ok(storage.writes.length <= 2, `${storage.writes.length} writes for a 30 ms generation`);

    const slow = await fakeServer({ tokenDelay: 60 }); // about 700 ms
    const storage2 = new SpyStorage();
    const g2 = startGen(BODY, { baseUrl: slow.url, storage: storage2 });
    await once(g2, "done");
    const writes = storage2.writes;
    assert.ok(writes.length >= 2 && writes.length <= 4, `${writes.length} writes`);
    for (let i = 1; i < writes.length; i++) {
      const gap = writes[i].at - writes[i - 1].at;
      assert.ok(gap >= 245, `writes ${gap} ms apart`);
    }
    for (const stored of writes) assert.equal(stored.text, textAt(stored.lastEventId));
    assert.ok(writes.some((w) => w.text.length > 0), "the text was kept on the way");
    assert.equal(storage2.getItem("sluiceway.generation"), null);
  });

  test("pagehide writes the record at once", async () => {
    const page = new EventTarget();
    globalThis.addEventListener = page.addEventListener.bind(page);
    globalThis.removeEventListener = page.removeEventListener.bind(page);
    try {
      const s = await fakeServer({ tokenDelay: 20 });
      const storage = new SpyStorage();
      const g = startGen(BODY, { baseUrl: s.url, storage });
      await new Promise((resolve) => g.addEventListener("token", () => g.text === "Once upon a time" && resolve()));
      page.dispatchEvent(new Event("pagehide"));
      const stored = JSON.parse(storage.getItem("sluiceway.generation"));
      assert.equal(stored.text, "Once upon a time");
      assert.equal(stored.lastEventId, "g-5");
      await once(g, "done");
      const writes = storage.writes.length;
      page.dispatchEvent(new Event("pagehide")); // its listener is gone with the generation
      assert.equal(storage.writes.length, writes);
    } finally {
      delete globalThis.addEventListener;
      delete globalThis.removeEventListener;
    }
  });

  test("Generation.forget() removes the stored record (New chat)", () => {
    const storage = new MemoryStorage();
    storage.setItem("sluiceway.generation", JSON.stringify({ id: GEN_ID, lastEventId: "g-4", text: "x", meta: {} }));
    storage.setItem("tab-2", JSON.stringify({ id: GEN_ID, lastEventId: "g-4", text: "x", meta: {} }));
    Generation.forget({ storage });
    assert.equal(storage.getItem("sluiceway.generation"), null);
    assert.equal(resumeGen({ storage }), null);
    assert.notEqual(storage.getItem("tab-2"), null, "another key is left alone");
    Generation.forget({ storage, storageKey: "tab-2" });
    assert.equal(storage.getItem("tab-2"), null);
    Generation.forget(); // Node has no sessionStorage: nothing to do, no error
    Generation.forget({ storage: null });
  });
});
