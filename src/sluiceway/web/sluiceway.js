// sluiceway.js: the browser client of Sluiceway. No dependencies, no build step; an ES module
// that runs in current browsers and in Node >= 20.
//
//   SSEParser    the WHATWG "event stream" parser, sans-I/O: text in, events out.
//   EventStream  SSE over fetch: GET or POST with a JSON body and any headers, reconnection
//                with Last-Event-ID, backoff with jitter, `retry:`, an idle timeout, the
//                hub's reset event surfaced as "reset" and its position event taken in as
//                `lastEventId`. Server events named like the stream's own ("open", "close",
//                "reconnecting", "reset") arrive as "server:<name>". With `delta: true`,
//                Fossil deltas (`?delta=fossil`) applied, so every event has its whole data.
//                Tabs of one origin share one connection per stream (a leader tab, elected
//                with Web Locks, holds it; the others get its events over BroadcastChannel).
//   applyFossilDelta  the Fossil delta decoder those deltas need.
//   Generation   an LLM generation of /v1/generations: tokens, Stop that really cancels, and
//                resumption after a page reload from what sessionStorage kept.
//
// Why not EventSource: it can only GET, cannot send Authorization or other headers, and gives
// no say over reconnection. Why not `fetch` + `split("\n")`: a chunk may end in the middle of a
// line, of a CRLF or of a UTF-8 character, and an event may have several `data:` lines.

/** The name of the hub's control event that says "I could not resume you exactly from there". */
export const RESET_EVENT = "sluiceway.reset";
/** The name of the hub's control event that starts a stream opened without an id: its id is
 * where the stream starts. It is not dispatched; its id becomes `lastEventId`, so that a
 * reconnect before the first event resumes exactly. */
export const POSITION_EVENT = "sluiceway.position";

// ------------------------------------------------------------------------------------ parser

/**
 * Incremental `text/event-stream` parser following the WHATWG HTML "Server-sent events" rules.
 * Feed it decoded text in chunks split anywhere; it returns the events the chunk completed.
 *
 * Rules that are easy to get wrong, and why they matter:
 * - A line ends at CRLF, LF or a lone CR. A CR is acted on at once (a server that ends lines
 *   with bare CR must not have its events held back until the next chunk); when the next
 *   chunk then starts with LF, that LF is the second half of a CRLF, not an empty line (which
 *   would dispatch an event early).
 * - One U+FEFF (BOM) is skipped only at the very start of the stream; later, it is data.
 * - `id:` only fills a buffer; the parser's `lastEventId` takes it at the next blank line,
 *   even when that block has no data, and keeps it for later events without `id:`.
 *   An id containing U+0000 is ignored (it could not be sent back as a header).
 * - `retry:` counts only when it is all ASCII digits.
 * - A block with no `data` dispatches nothing; an event not ended by a blank line when the
 *   stream ends is discarded (it may be truncated).
 */
export class SSEParser {
  #onRetry;
  #lastEventId;
  #idBuffer;
  #data = "";
  #hasData = false;
  #type = "";
  #delta = ""; // Sluiceway's `delta:` field (the format of a delta in `data`)
  #pending = ""; // the current line, not yet ended
  #atStart = true; // nothing seen yet: a U+FEFF now is the BOM
  #afterCR = false; // the previous chunk ended in CR: an LF now completes a CRLF

  /**
   * @param {{onRetry?: (ms: number) => void, lastEventId?: string}} [options]
   *   `lastEventId`: the id in effect before this stream (a reconnecting client passes the
   *   previous connection's, so that events without `id:` keep carrying it, as browsers do).
   */
  constructor(options = {}) {
    this.#onRetry = options.onRetry;
    this.#lastEventId = options.lastEventId ?? "";
    this.#idBuffer = this.#lastEventId;
  }

  /** The spec's "last event ID string": the id in effect after the last blank line. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /**
   * @param {string} text decoded text, any chunking
   * @returns {{type: string, data: string, lastEventId: string}[]} the events it completed
   */
  feed(text) {
    const events = [];
    if (!text) return events;
    if (this.#atStart) {
      this.#atStart = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let start = 0;
    if (this.#afterCR) {
      this.#afterCR = false;
      if (text.charCodeAt(0) === 10) start = 1;
    }
    // Line ends are found with indexOf (native code) rather than a loop over every character:
    // bench/js/parse_bench.mjs measured the difference. Most streams have no CR at all, so
    // after one search for it only LFs are looked for.
    const length = text.length;
    let lf = text.indexOf("\n", start);
    let cr = text.indexOf("\r", start);
    while (lf !== -1 || cr !== -1) {
      let end = lf;
      let next = lf + 1;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr + 1 === length) {
          this.#afterCR = true; // an LF starting the next chunk completes this CRLF
          next = length;
        } else {
          next = text.charCodeAt(cr + 1) === 10 ? cr + 2 : cr + 1;
        }
      }
      let event;
      if (this.#pending) {
        const line = this.#pending + text.slice(start, end);
        this.#pending = "";
        event = this.#line(line, 0, line.length);
      } else {
        event = this.#line(text, start, end); // no copy of the line: only of its value
      }
      start = next;
      if (event) events.push(event);
      if (lf !== -1 && lf < start) lf = text.indexOf("\n", start);
      if (cr !== -1 && cr < start) cr = text.indexOf("\r", start);
    }
    if (start < length) this.#pending += text.slice(start);
    return events;
  }

  /**
   * The stream ended: an event not ended by a blank line is discarded (with its `id:`), and
   * the parser is ready for a new stream. Always returns [] (the spec dispatches nothing here).
   * @returns {never[]}
   */
  end() {
    this.#pending = "";
    this.#data = "";
    this.#hasData = false;
    this.#type = "";
    this.#delta = "";
    this.#idBuffer = this.#lastEventId;
    this.#atStart = true;
    this.#afterCR = false;
    return [];
  }

  /** The line `text[start:end]` (no line end in it): a field, a comment, or a blank line. */
  #line(text, start, end) {
    if (start === end) return this.#dispatch();
    const first = text.charCodeAt(start);
    if (first === 58) return null; // ":" a comment (keep-alive pings)
    // The common fields first, compared in place (no slice for the field name).
    if (first === 100 && text.startsWith("data:", start)) {
      const value = text.slice(valueStart(text, start + 5), end);
      this.#data = this.#hasData ? `${this.#data}\n${value}` : value;
      this.#hasData = true;
      return null;
    }
    if (first === 101 && text.startsWith("event:", start)) {
      this.#type = text.slice(valueStart(text, start + 6), end);
      return null;
    }
    if (first === 105 && text.startsWith("id:", start)) {
      const id = text.slice(valueStart(text, start + 3), end);
      if (!id.includes("\0")) this.#idBuffer = id; // it could not be sent back as a header
      return null;
    }
    // The other lines are few (an id, an event name): slicing them first keeps the search
    // for the colon within the line.
    const line = text.slice(start, end);
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(valueStart(line, colon + 1));
    switch (field) {
      case "data": // "data" without a colon: an empty data line
        this.#data = this.#hasData ? `${this.#data}\n` : "";
        this.#hasData = true;
        break;
      case "event":
        this.#type = value;
        break;
      case "id":
        if (!value.includes("\0")) this.#idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.#onRetry?.(Number.parseInt(value, 10));
        break;
      case "delta": // Sluiceway's: `data` is a delta in this format (EventSource ignores it)
        this.#delta = value;
        break;
      default: // unknown fields are ignored
    }
    return null;
  }

  #dispatch() {
    this.#lastEventId = this.#idBuffer; // committed even when nothing is dispatched
    const type = this.#type || "message";
    const delta = this.#delta;
    this.#type = "";
    this.#delta = "";
    if (!this.#hasData) return null;
    const data = this.#data; // its lines joined with "\n": no trailing one to strip
    this.#data = "";
    this.#hasData = false;
    const event = { type, data, lastEventId: this.#lastEventId };
    if (delta) event.delta = delta;
    return event;
  }
}

/** Where a field's value starts: after the colon and at most one space (more are data). */
function valueStart(text, afterColon) {
  return text.charCodeAt(afterColon) === 32 ? afterColon + 1 : afterColon;
}

/**
 * Parse a whole stream given as byte chunks (Uint8Array), split anywhere, even inside a UTF-8
 * character. A convenience for tests and for bodies read in one piece.
 * @param {Iterable<Uint8Array>} chunks
 * @param {{onRetry?: (ms: number) => void, lastEventId?: string}} [options]
 */
export function parseBytes(chunks, options) {
  const parser = new SSEParser(options);
  const decoder = newDecoder();
  const events = [];
  for (const chunk of chunks) events.push(...parser.feed(decoder.decode(chunk, { stream: true })));
  events.push(...parser.feed(decoder.decode()));
  parser.end();
  return events;
}

// ------------------------------------------------------------------------------ fossil deltas

/** A delta that does not apply to its origin (another origin, or a damaged delta). */
export class DeltaError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DeltaError";
  }
}

/** The largest data a delta may rebuild (far above what Sluiceway accepts in one event). */
const MAX_DELTA_TARGET = 64 * 1024 * 1024;
const FOSSIL_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
const FOSSIL_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < FOSSIL_DIGITS.length; i++) FOSSIL_VALUE[FOSSIL_DIGITS.charCodeAt(i)] = i;

/**
 * `origin` with a Fossil delta applied (the format of Fossil SCM, which Centrifugo's SDKs use):
 * the target's size, then `<n>@<offset>,` (copy n bytes of the origin) and `<n>:<bytes>`
 * (insert n bytes) commands, then the target's checksum, numbers in base 64. Throws
 * DeltaError when the delta does not apply (a wrong origin fails the checksum).
 * @param {Uint8Array} origin @param {Uint8Array} delta @returns {Uint8Array}
 */
export function applyFossilDelta(origin, delta) {
  let position = 0;
  const number = () => {
    const start = position;
    let value = 0;
    while (position < delta.length) {
      const byte = delta[position];
      const digit = byte < 128 ? FOSSIL_VALUE[byte] : -1;
      if (digit < 0) break;
      value = value * 64 + digit;
      position += 1;
    }
    if (position === start) throw new DeltaError(`a number was expected at ${start}`);
    return value;
  };
  const size = number();
  if (delta[position++] !== 10) throw new DeltaError("a line end was expected after the size");
  // The size is the server's word: bounded, so that a damaged one cannot allocate gigabytes.
  if (size > MAX_DELTA_TARGET) throw new DeltaError(`a target of ${size} bytes`);
  const out = new Uint8Array(size);
  let length = 0;
  const put = (bytes) => {
    if (length + bytes.length > out.length) throw new DeltaError("longer than it announced");
    out.set(bytes, length);
    length += bytes.length;
  };
  while (position < delta.length) {
    const count = number();
    const op = delta[position++];
    if (op === 64) { // "@": copy from the origin
      const offset = number();
      if (delta[position++] !== 44) throw new DeltaError(`"," was expected at ${position - 1}`);
      if (offset + count > origin.length) throw new DeltaError("a copy beyond the origin");
      put(origin.subarray(offset, offset + count));
    } else if (op === 58) { // ":": insert literal bytes
      if (position + count > delta.length) throw new DeltaError("an insert beyond the delta");
      put(delta.subarray(position, position + count));
      position += count;
    } else if (op === 59) { // ";": the checksum ends it
      if (length !== size || count !== fossilChecksum(out.subarray(0, length))) {
        throw new DeltaError("the size or the checksum does not match");
      }
      return out.subarray(0, length);
    } else {
      throw new DeltaError(`unknown command at ${position - 1}`);
    }
  }
  throw new DeltaError("no checksum at the end");
}

/** The sum of big-endian 32-bit words (the last zero-padded), mod 2^32. */
function fossilChecksum(bytes) {
  let sum = 0;
  const whole = bytes.length - (bytes.length % 4);
  for (let i = 0; i < whole; i += 4) {
    sum = (sum + ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3])) >>> 0;
  }
  let last = 0;
  for (let i = whole, shift = 24; i < bytes.length; i++, shift -= 8) last |= bytes[i] << shift;
  return (sum + last) >>> 0;
}

const utf8 = new TextEncoder();
const strictUTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The data an event with `delta: fossil` stands for, from the previous event's data. */
function undelta(base, event) {
  if (event.delta !== "fossil") throw new DeltaError(`unknown delta format ${JSON.stringify(event.delta)}`);
  if (base === null) throw new DeltaError("a delta with no event before it on this connection");
  try {
    return strictUTF8.decode(applyFossilDelta(utf8.encode(base), utf8.encode(event.data)));
  } catch (error) {
    throw error instanceof DeltaError ? error : new DeltaError(`not UTF-8 once applied: ${error}`);
  }
}

/** UTF-8 with U+FFFD for bad bytes. ignoreBOM keeps the BOM in the text: the parser strips
 * exactly one itself, so a stream that starts with two BOMs keeps the second, as the spec says. */
function newDecoder() {
  return new TextDecoder("utf-8", { ignoreBOM: true });
}

// -------------------------------------------------------------------------------- EventStream

/** The event class of everything this module dispatches: its fields are own properties. */
export class StreamEvent extends Event {
  /** @param {string} type @param {Record<string, unknown>} [fields] */
  constructor(type, fields = {}) {
    super(type);
    for (const [key, value] of Object.entries(fields)) {
      if (key !== "type") this[key] = value;
    }
  }
}

/**
 * The wait before reconnect attempt `attempt` (1, 2, ...): exponential, capped, with jitter.
 * d = min(max, base * 2^(attempt-1)); the delay is uniform in [d/2, d]. The jitter spreads out
 * the clients that lost the same server at the same moment, so they do not all return at once;
 * the lower half-bound keeps the server's `retry:` meaningful.
 * @param {number} attempt @param {number} base ms @param {number} max ms
 * @param {() => number} [random] in [0, 1)
 */
export function backoffDelay(attempt, base, max, random = Math.random) {
  const n = Math.max(1, Math.floor(attempt));
  const d = Math.max(0, Math.min(max, base * 2 ** Math.min(n - 1, 52)));
  return d / 2 + random() * (d / 2);
}

/**
 * Milliseconds to wait from a `Retry-After` value (delta-seconds or an HTTP date), or null.
 * @param {string | null | undefined} value @param {number} [now]
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  value = value.trim();
  if (/^[0-9]+$/.test(value)) return Number(value) * 1000;
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, when - now);
}

/** What ended a connection because no byte arrived (not even a keep-alive comment) in time. */
export class IdleTimeoutError extends Error {
  constructor(ms) {
    super(`no data from the server for ${ms} ms`);
    this.name = "IdleTimeoutError";
  }
}

/** An HTTP status, or an answer that is not an event stream. */
export class HTTPError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "HTTPError";
    this.status = status;
  }
}

/** Statuses worth trying again: the server or something in front of it may recover. */
const retryable = (status) => status >= 500 || status === 408 || status === 429;

/** The longest delay setTimeout takes: a longer one fires after 1 ms (it overflows). */
const MAX_TIMEOUT = 2 ** 31 - 1;
/** The longest `Retry-After` (ms) honoured: a server asking for more is asking for an hour. */
const MAX_RETRY_AFTER = 3_600_000;
/** The smallest backoff base (ms) after a failed attempt, whatever `retry:` or options.retry
 * say: with `retry: 0` a server that fails would otherwise be asked again in a tight loop. */
const MIN_FAILURE_BASE = 250;
/** Event names of the stream's own lifecycle: a server event so named is dispatched as
 * "server:<name>", so that it cannot pass for the client's own (a published `close` event
 * must not look like the end of the stream). "error" is not renamed, as in EventSource. */
/** Event names that start so are the hub's control events (reset, position), not data. */
const CONTROL_PREFIX = "sluiceway.";
const OWN_EVENTS = new Set(["open", "close", "reconnecting", "reset"]);

/** `headers` of the options: an object, or a function (sync or async) returning one, called
 * for each request so that a page can send a fresh token on every reconnect. */
async function resolveHeaders(headers) {
  return (typeof headers === "function" ? await headers() : headers) ?? {};
}

/**
 * Server-sent events over `fetch`. Listeners: "open", "message" and each named event type,
 * "reset", "reconnecting", "error", "close" (see sluiceway.d.ts for their fields).
 *
 * A server event is dispatched under its `event:` name, except: the hub's "sluiceway.reset"
 * is dispatched as "reset", its "sluiceway.position" is not dispatched (its id becomes
 * `lastEventId`), and a server event named "open", "close", "reconnecting" or
 * "reset" as "server:open", "server:close", ... (those names are the client's own events). A
 * server event named "error" stays "error", as with EventSource: it has `data`, a transport
 * error has not.
 *
 * Reconnects like EventSource when a response ends, and with backoff after a failure, sending
 * `Last-Event-ID` so that a Sluiceway stream resumes exactly where it was. A request that is
 * not a GET is never repeated before it opened (it may have started something, e.g. a paid
 * generation): a failure then is fatal.
 *
 * Tabs share: over HTTP/1.1 a browser opens at most 6 connections per origin, for all its tabs
 * together, and a 7th tab's stream waits forever. So the GET streams of one URL, in every tab
 * of the origin, use one connection: the tab that holds a Web Lock named after the URL (the
 * leader) connects, and passes each event, with its id, to the others over a BroadcastChannel.
 * Each stream keeps its own `lastEventId`; when the leader closes, or goes silent for
 * `leaderTimeout` (a frozen tab), the next tab takes the lock and connects from its own
 * `lastEventId`: no event is lost or repeated (ids already dispatched are skipped). `share:
 * false` opts out; POST streams, streams given a `lastEventId` or `resumeUrl`, and pages
 * without Web Locks keep a connection of their own.
 */
export class EventStream extends EventTarget {
  /** @type {string} */ url;
  /** The id to resume from (sent as Last-Event-ID when not empty). */
  lastEventId;
  #options;
  #fetch;
  #base; // reconnection time (ms): options.retry, replaced by the server's `retry:`
  #state = "connecting";
  #opens = 0;
  #failures = 0;
  #response = null;
  #controller = null;
  #wake = null; // ends the current backoff wait early (close())
  #closed = false;
  #share = null; // the tab sharing of this stream (a TabShare), when it shares

  /** @param {string} url @param {import("./sluiceway.js").StreamOptions} [options] */
  constructor(url, options = {}) {
    super();
    this.url = String(url);
    this.#options = options;
    this.lastEventId = options.lastEventId ?? "";
    this.#base = options.retry ?? 1000;
    // Bound now: a `fetch` called as a method of this object would throw "Illegal invocation".
    const fetchFn = options.fetch ?? globalThis.fetch;
    this.#fetch = (...args) => fetchFn(...args);
    // A microtask, so that listeners attached right after `new` see every event.
    queueMicrotask(() => {
      this.#start().catch((error) => this.#fail(error, 0, null));
    });
  }

  async #start() {
    if (this.#closed) return;
    if (!this.#shareable()) return this.#run();
    const key = await shareKey(this.url, this.#options.headers);
    if (this.#closed) return;
    this.#share = new TabShare(this, key, this.#options, {
      lead: () => this.#run(),
      stop: () => this.#controller?.abort(),
      dispatch: (event) => this.#take(event),
      emit: (type, fields) => this.#emit(type, fields),
      state: (state) => {
        this.#state = state;
      },
      end: (reason, error, status, body) =>
        error ? this.#fail(error, status, body) : this.#finish(reason),
    });
  }

  /** Whether this stream may share a connection with the other tabs (see the class doc). */
  #shareable() {
    const o = this.#options;
    return (
      o.share !== false &&
      this.#firstMethod() === "GET" &&
      o.body === undefined &&
      o.resumeUrl == null &&
      !o.lastEventId &&
      o.fetch === undefined &&
      typeof BroadcastChannel === "function" &&
      typeof globalThis.navigator?.locks?.request === "function"
    );
  }

  /** "leader" (this tab holds the shared connection), "follower" (another tab does), or null
   * (the stream does not share: it has a connection of its own). */
  get sharing() {
    return this.#share?.role ?? null;
  }

  /** "connecting" (also while waiting to reconnect), "open" or "closed". */
  get readyState() {
    return this.#state;
  }
  /** Successful re-opens after the first. */
  get reconnects() {
    return Math.max(0, this.#opens - 1);
  }
  /** The latest response (null before the first). */
  get response() {
    return this.#response;
  }

  /** Abort the request and stop for good: no more reconnects; dispatches "close" ("closed").
   * A leader tab's close hands the connection to the next tab. */
  close() {
    this.#finish("closed");
  }

  #emit(type, fields) {
    this.dispatchEvent(new StreamEvent(type, fields));
  }

  #finish(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#state = "closed";
    this.#controller?.abort();
    this.#wake?.();
    this.#share?.closed(reason);
    this.#emit("close", { reason });
  }

  #fail(error, status, body) {
    if (this.#closed) return;
    this.#share?.failed(error, status, body);
    this.#emit("error", { error, status, body, fatal: true });
    this.#finish("fatal");
  }

  async #run() {
    const options = this.#options;
    const maxAttempts = options.maxAttempts ?? Infinity;
    const leading = () => !this.#closed && (this.#share === null || this.#share.role === "leader");
    while (leading()) {
      const outcome = await this.#connect();
      if (!leading()) return;
      if (outcome.kind === "done") return this.#finish("done");
      if (outcome.kind === "fatal") return this.#fail(outcome.error, outcome.status, outcome.body);
      // Before the first open, a request that is not a GET is never repeated: it may have
      // started something (POST /v1/generations starts a paid generation) whose answer was
      // lost on the way. Fatal, so that the caller decides.
      if (outcome.error && this.#opens === 0 && this.#firstMethod() !== "GET") {
        return this.#fail(outcome.error, outcome.status ?? 0, outcome.body ?? null);
      }
      if (outcome.delivered) this.#failures = 0; // that connection worked: start over
      this.#failures += 1;
      if (outcome.error) {
        const { error, status = 0, body = null } = outcome;
        this.#emit("error", { error, status, body, fatal: false });
        if (this.#closed) return;
      }
      if (options.reconnect === false) return this.#finish(outcome.error ? "gave_up" : "done");
      if (this.#failures >= maxAttempts) return this.#finish("gave_up");
      // A failed attempt (an error, or an end without any event) waits at least a floor, so
      // that `retry: 0` cannot make a failing server spin the client; a clean end after
      // events reconnects after `retry:` as given (attempts still count up if it repeats).
      let base = Number.isFinite(this.#base) ? this.#base : 1000;
      if (outcome.error || !outcome.delivered) base = Math.max(base, MIN_FAILURE_BASE);
      let delay = backoffDelay(this.#failures, base, options.maxRetry ?? 30000, options.random);
      // The server said when to come back: wait at least that long (not capped by maxRetry,
      // but by an hour).
      if (outcome.retryAfter != null) delay = Math.max(delay, Math.min(outcome.retryAfter, MAX_RETRY_AFTER));
      delay = Math.min(delay, MAX_TIMEOUT); // a longer setTimeout would fire at once
      this.#state = "connecting";
      this.#share?.status("connecting", { attempt: this.#failures, delay });
      this.#emit("reconnecting", { attempt: this.#failures, delay, error: outcome.error ?? null });
      if (!leading()) return;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** The method of the requests before the first open. */
  #firstMethod() {
    return (this.#options.method ?? "GET").toUpperCase();
  }

  /** The request of the next attempt: after the stream first opened, `resumeUrl` (GET). */
  async #request() {
    const options = this.#options;
    const resume = this.#opens > 0 && options.resumeUrl != null;
    let url = this.url;
    if (resume) {
      const target = options.resumeUrl;
      url = typeof target === "function" ? target(this.lastEventId) : target;
    }
    if (options.delta) url += `${url.includes("?") ? "&" : "?"}delta=fossil`;
    const headers = new Headers(await resolveHeaders(options.headers));
    if (!headers.has("accept")) headers.set("accept", "text/event-stream");
    // Some proxies and caches hold on to GET responses otherwise.
    if (!headers.has("cache-control")) headers.set("cache-control", "no-cache");
    if (this.lastEventId) headers.set("last-event-id", this.lastEventId);
    const init = { method: resume ? "GET" : this.#firstMethod(), headers };
    if (!resume && options.body !== undefined) {
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
      init.body = JSON.stringify(options.body);
    }
    return { url, init };
  }

  /** One connection, start to end: what ended it, and whether it delivered any event. */
  async #connect() {
    const controller = new AbortController();
    this.#controller = controller;
    const idleTimeout = this.#options.idleTimeout ?? 45000;
    let idle = false;
    let timer = null;
    // Any byte re-arms it (Sluiceway sends a comment every ping_interval, 15 s by default): a
    // connection that went silent (a sleeping laptop, a dead proxy) never errors by itself.
    // Over MAX_TIMEOUT it would fire at once: that long means none.
    const arm = () => {
      clearTimeout(timer);
      if (idleTimeout > 0 && idleTimeout <= MAX_TIMEOUT) {
        timer = setTimeout(() => {
          idle = true;
          controller.abort(new IdleTimeoutError(idleTimeout));
        }, idleTimeout);
      }
    };
    let delivered = false;
    try {
      const { url, init } = await this.#request();
      // The idle timeout times the silence of a response: it starts once its headers are
      // here. Before, only a GET is timed (a server that never answers; a GET is safe to
      // repeat, and Sluiceway answers one at once). Other requests wait as long as their
      // answer takes: POST /v1/generations answers after the first token, which may take
      // longer than the idle timeout, and such a request is not repeated anyway.
      if (init.method === "GET") arm();
      const response = await this.#fetch(url, { ...init, signal: controller.signal });
      arm();
      this.#response = response;
      const status = response.status;
      if (status === 204) {
        await response.body?.cancel().catch(() => {});
        return { kind: "done" };
      }
      if (!response.ok) {
        const body = await readBody(response);
        const error = new HTTPError(`HTTP ${status}${describe(body)}`, status);
        if (!retryable(status)) return { kind: "fatal", error, status, body };
        let retryAfter = null;
        if (status === 429 || status === 503) {
          retryAfter = parseRetryAfter(response.headers.get("retry-after"));
          // Sluiceway's JSON errors may carry it too ({"retry_after": seconds}).
          const seconds = body?.retry_after;
          if (retryAfter == null && Number.isFinite(seconds) && seconds >= 0) retryAfter = seconds * 1000;
        }
        return { kind: "error", error, status, body, retryAfter };
      }
      const type = (response.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (type !== "text/event-stream") {
        const body = await readBody(response);
        const error = new HTTPError(`expected text/event-stream, got ${type || "no content type"}`, status);
        return { kind: "fatal", error, status, body };
      }
      this.#opens += 1;
      const wasOpen = this.#state === "open"; // a follower taking over was open already
      this.#state = "open";
      this.#share?.status("open", {});
      if (!wasOpen) this.#emit("open", { response, reconnected: this.#opens > 1 });
      if (this.#closed || !response.body) return { kind: "end", delivered };

      const parser = new SSEParser({
        lastEventId: this.lastEventId,
        onRetry: (ms) => {
          this.#base = ms;
        },
      });
      const decoder = newDecoder();
      const reader = response.body.getReader();
      let deltaBase = null; // the data of this connection's last event: what a delta applies to
      const deliver = (events) => {
        for (const event of events) {
          if (this.#share !== null && this.#share.role !== "leader") return; // deposed
          // A delta that does not apply throws before lastEventId moves: the reconnect
          // resumes from the last good event, and the server sends the next one whole.
          if (event.delta !== undefined) event.data = undelta(deltaBase, event);
          if (!event.type.startsWith(CONTROL_PREFIX)) deltaBase = event.data;
          const { type, data, lastEventId } = event;
          if (this.#take({ type, data, lastEventId })) delivered = true;
          this.#share?.send({ type, data, lastEventId });
          if (this.#closed) return;
        }
        if (this.lastEventId !== parser.lastEventId) {
          this.lastEventId = parser.lastEventId; // an id-only block counts too
          this.#share?.send({ type: "", data: "", lastEventId: this.lastEventId });
        }
      };
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        arm();
        this.#share?.alive();
        deliver(parser.feed(decoder.decode(value, { stream: true })));
        if (this.#closed) return { kind: "closed" };
      }
      deliver(parser.feed(decoder.decode()));
      parser.end();
      return { kind: "end", delivered };
    } catch (error) {
      if (this.#closed) return { kind: "closed" };
      if (error?.fatal) return { kind: "fatal", error, status: 0, body: null };
      return { kind: "error", error: idle ? new IdleTimeoutError(idleTimeout) : error, delivered };
    } finally {
      clearTimeout(timer);
      if (this.#controller === controller) this.#controller = null;
      controller.abort(); // releases the connection whatever happened
    }
  }

  /** Take one event in (from this tab's connection or from the leader tab's): its id becomes
   * `lastEventId`, and it is dispatched unless it is only a position (or an id-only block,
   * type ""). Whether it was dispatched. */
  #take(event) {
    this.lastEventId = event.lastEventId;
    if (event.type === POSITION_EVENT || event.type === "") return false; // its id is all it carries
    this.#share?.remember(event.lastEventId);
    this.#dispatchServerEvent(event);
    return true;
  }

  #dispatchServerEvent({ type, data, lastEventId }) {
    if (type === RESET_EVENT) {
      let detail = null;
      try {
        detail = JSON.parse(data);
      } catch {
        // not JSON: `data` still says it
      }
      this.#emit("reset", { data, detail, lastEventId });
    } else {
      // A server event named like one of ours must not pass for it: "server:close", ...
      this.#emit(OWN_EVENTS.has(type) ? `server:${type}` : type, { data, lastEventId });
    }
  }
}

// ---------------------------------------------------------------------------- tab sharing

/**
 * The Web Lock and BroadcastChannel name of the streams of `url` in every tab of the origin
 * that sends the same credentials: the leader's request, its Authorization header included,
 * serves every tab of the group, so a tab signed in as someone else (or not at all) is in
 * another group. Header and URL go in as a hash: lock names show in developer tools.
 */
async function shareKey(url, headers) {
  const authorization = new Headers(await resolveHeaders(headers)).get("authorization") ?? "";
  // The URL may carry a token too (?access_token=): the whole key goes in hashed.
  const absolute = new URL(url, globalThis.location?.href).href;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(`${authorization}\n${absolute}`)));
  return `sluiceway.stream ${Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/** How many ids a stream remembers having dispatched, to skip them when a new leader (or the
 * leader it was, deposed while frozen) sends them again. */
const RECENT_IDS = 256;

/**
 * One EventStream's part in the sharing of its URL between tabs: as a follower it waits in the
 * Web Lock's queue and takes the leader's events from the BroadcastChannel; holding the lock,
 * it leads: `hooks.lead()` runs the stream's own connection, whose events go to the channel.
 *
 * Messages: {kind: "hello"} (a follower asks who leads), {kind: "leader", term, lastEventId,
 * state} (the answer, and what a new leader says first), {kind: "event", term, event},
 * {kind: "status", term, state, fields}, {kind: "alive", term}, {kind: "end", term, reason,
 * error, status, body} (the stream ended for good: every tab's ends). A term is a random id
 * each leadership starts with: what a deposed leader still sends is ignored.
 */
class TabShare {
  role = "follower";
  #stream;
  #key;
  #hooks;
  #channel;
  #term = null; // the current leader's
  #ownTerm = null; // ours, while we lead
  #joined = false;
  #heard = 0; // performance.now() of the leader's last message
  #leaderTimeout;
  #queued = null; // aborts our waiting (not stealing) lock request
  #release = null; // ends our leadership (resolves the held lock's promise)
  #stealing = false;
  #recent = new Set();
  #timers = [];
  #lastAlive = 0;

  constructor(stream, key, options, hooks) {
    this.#stream = stream;
    this.#key = key;
    this.#hooks = hooks;
    this.#leaderTimeout = options.leaderTimeout ?? 30000;
    this.#channel = new BroadcastChannel(key);
    this.#channel.onmessage = (message) => this.#receive(message.data);
    this.#heard = performance.now();
    this.#post({ kind: "hello" });
    this.#queue(false);
    const every = Math.max(100, Math.min(1000, this.#leaderTimeout / 4));
    this.#timers.push(setInterval(() => this.#watch(), every));
  }

  /** The lock, waited for in turn or (`steal`) taken from a leader that went silent. */
  #queue(steal) {
    const controller = new AbortController();
    if (!steal) this.#queued = controller;
    const options = steal ? { steal: true } : { signal: controller.signal };
    navigator.locks
      .request(this.#key, options, () => this.#lead())
      .catch(() => {
        // Our waiting request was aborted (we steal instead, or we closed), or our lock was
        // stolen: a frozen leader that wakes up follows the new one.
        if (this.role === "leader") this.#demote();
      });
  }

  async #lead() {
    if (this.#stream.readyState === "closed") return;
    this.#queued?.abort(); // granted: a queued request of ours must not wait on
    this.#queued = null;
    this.#stealing = false;
    this.role = "leader";
    this.#ownTerm = this.#term = crypto.randomUUID();
    this.#joined = true;
    const held = new Promise((resolve) => {
      this.#release = resolve;
    });
    this.#post({ kind: "leader", term: this.#ownTerm, lastEventId: this.#stream.lastEventId, state: this.#stream.readyState });
    const beat = setInterval(() => this.#post({ kind: "alive", term: this.#ownTerm }), Math.max(100, this.#leaderTimeout / 10));
    this.#hooks
      .lead()
      .catch((error) => this.#hooks.end("fatal", error, 0, null))
      .finally(() => {
        if (this.role === "leader") this.#release?.();
      });
    await held; // the lock is ours until the stream closes or we are deposed
    clearInterval(beat);
  }

  #demote() {
    this.role = "follower";
    this.#ownTerm = null;
    this.#release?.(); // the lock is gone already: let its callback end
    this.#hooks.stop(); // our connection ends; its loop sees we no longer lead
    this.#hooks.state("open");
    this.#heard = performance.now();
    this.#queue(false);
  }

  #watch() {
    if (this.role !== "follower" || this.#stealing) return;
    if (performance.now() - this.#heard < this.#leaderTimeout) return;
    // The leader holds the lock but says nothing (a frozen tab): take it over, after a random
    // wait, so that of several followers one steals and the others hear the new leader first.
    this.#stealing = true;
    setTimeout(() => {
      if (this.role !== "follower" || this.#stream.readyState === "closed") return;
      if (performance.now() - this.#heard < this.#leaderTimeout) {
        this.#stealing = false;
        return;
      }
      this.#queued?.abort();
      this.#queued = null;
      this.#queue(true);
    }, Math.random() * 500);
  }

  #receive(message) {
    if (this.#stream.readyState === "closed") return;
    if (message.kind === "hello") {
      if (this.role === "leader") {
        this.#post({ kind: "leader", term: this.#ownTerm, lastEventId: this.#stream.lastEventId, state: this.#stream.readyState });
      }
      return;
    }
    if (message.kind === "leader") {
      // Another tab leads while we think we do: it took the lock from us while this tab was
      // frozen. Follow it now, before its events (what we already have is skipped by id).
      if (this.role === "leader") this.#demote();
      this.#term = message.term;
      this.#heard = performance.now();
      this.#stealing = false;
      if (!this.#joined) {
        // Our stream starts where the leader's is: everything after comes to us too.
        this.#joined = true;
        this.#stream.lastEventId = message.lastEventId;
        this.#status(message.state, {});
      }
      return;
    }
    if (this.role !== "follower" || message.term !== this.#term || !this.#joined) return;
    this.#heard = performance.now();
    if (message.kind === "event") {
      const { lastEventId } = message.event;
      if (lastEventId && this.#recent.has(lastEventId)) return; // we have it already
      this.#hooks.dispatch(message.event);
    } else if (message.kind === "status") {
      this.#status(message.state, message.fields);
    } else if (message.kind === "end") {
      this.#hooks.end(message.reason, message.error, message.status, message.body);
    }
  }

  #status(state, fields) {
    const before = this.#stream.readyState;
    this.#hooks.state(state);
    if (state === "open" && before !== "open") this.#hooks.emit("open", { response: null, reconnected: false, shared: true });
    // The leader's own first connect is no reconnect: only a retry of its has an attempt.
    if (state === "connecting" && fields.attempt !== undefined) {
      this.#hooks.emit("reconnecting", { ...fields, error: null, shared: true });
    }
  }

  #post(message) {
    try {
      this.#channel.postMessage(message);
    } catch {
      // a value that cannot be cloned (an unusual error object): the others miss only that
    }
  }

  /** The leader took an event in: to the other tabs. */
  send(event) {
    if (this.role !== "leader") return;
    this.#lastAlive = performance.now();
    this.#post({ kind: "event", term: this.#ownTerm, event });
  }

  /** The leader's connection read bytes (a keep-alive too): it is not frozen. */
  alive() {
    const now = performance.now();
    if (this.role !== "leader" || now - this.#lastAlive < 250) return;
    this.#lastAlive = now;
    this.#post({ kind: "alive", term: this.#ownTerm });
  }

  status(state, fields) {
    if (this.role === "leader") this.#post({ kind: "status", term: this.#ownTerm, state, fields });
  }

  remember(id) {
    if (!id) return;
    this.#recent.add(id);
    if (this.#recent.size > RECENT_IDS) this.#recent.delete(this.#recent.values().next().value);
  }

  /** The stream failed for good (fatal): the other tabs' streams fail with it. */
  failed(error, status, body) {
    if (this.role === "leader") this.#post({ kind: "end", term: this.#ownTerm, reason: "fatal", error, status, body });
  }

  /** The stream closed: "closed" (this tab closed it) hands the connection on; "done" or
   * "gave_up" ends every tab's. */
  closed(reason) {
    if (this.role === "leader" && reason !== "closed" && reason !== "fatal") {
      this.#post({ kind: "end", term: this.#ownTerm, reason, error: null, status: 0, body: null });
    }
    this.#timers.forEach(clearInterval);
    this.#queued?.abort();
    this.#release?.();
    this.role = this.role === "leader" ? "follower" : this.role;
    this.#channel.close();
  }
}

/** An error body: parsed JSON when it is JSON, else its text; null when empty or unreadable. */
async function readBody(response) {
  let text;
  try {
    text = await response.text();
  } catch {
    return null;
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function describe(body) {
  if (body && typeof body === "object") {
    const what = [body.error, body.detail ?? body.message].filter((x) => typeof x === "string");
    return what.length ? `: ${what.join(": ")}` : "";
  }
  return typeof body === "string" && body ? `: ${body.slice(0, 200)}` : "";
}

// --------------------------------------------------------------------------------- Generation

const INTERNAL = Symbol("sluiceway.Generation");
const ENDED = new Set(["done", "cancelled", "error"]);
const STORAGE_KEY = "sluiceway.generation";
/** Storage is written at most this often (ms) while tokens arrive: each write serialises the
 * whole text, so one write per token would cost O(n²) over a generation. */
const SAVE_INTERVAL = 250;

/** `globalThis.sessionStorage`, or null: reading it throws in sandboxed frames and is absent in Node. */
function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}

const storageOf = (options) => (options.storage === undefined ? defaultStorage() : options.storage);
const trimSlash = (url) => String(url).replace(/\/+$/, "");
/** The endpoints of Sluiceway's own /v1/generations; a FastAPI app's runs are elsewhere
 * (`urls` option: e.g. {start: "/chat", events: "/answers/{id}/events", cancel: "/answers/{id}/cancel"}). */
const GENERATION_URLS = {
  start: "/v1/generations",
  events: "/v1/generations/{id}/stream",
  cancel: "/v1/generations/{id}/cancel",
};
const urlsOf = (urls) => ({ ...GENERATION_URLS, ...(urls ?? {}) });
/** A URL template with its run id put in (encoded). */
const fill = (template, id) => String(template).replaceAll("{id}", encodeURIComponent(id));
const now = () => globalThis.performance?.now() ?? Date.now();

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * A generation of `/v1/generations`, or a run of your own endpoint (the `urls` option), followed to its end across dropped connections and page
 * reloads. Create one with `Generation.start()` or `Generation.resume()`.
 *
 * Events: "start", "token", "tool_call", "tool_result", "step", "item", "partial", "done",
 * "cancelled", "error", "reset", "reconnecting", "state" (see sluiceway.d.ts). On "reset" (the server could not resume it
 * exactly) the text was dropped and the generation is replayed from its first event: render
 * `text` again.
 */
export class Generation extends EventTarget {
  #id = null;
  #model = null;
  #text = "";
  #state = "starting";
  #meta;
  #summary = null;
  #lastEventId;
  #baseUrl;
  #urls;
  #headers;
  #options;
  #storage;
  #storageKey;
  #stream = null;
  #openedFrom = ""; // the Last-Event-ID the current connection was opened with
  #stopping = null;
  #idWaiters = [];
  // State "error" but the generation may still run on the server (reconnecting gave up, or a
  // reconnect was refused with 401/403): storage keeps it for a reload, stop() still cancels.
  #detached = false;
  #dirty = false; // text or lastEventId changed since the last write to storage
  #savedAt = -Infinity;
  #saveTimer = null;
  #onPageHide = null;

  /** Not for direct use: call Generation.start() or Generation.resume(). */
  constructor(token, init) {
    if (token !== INTERNAL) throw new TypeError("use Generation.start() or Generation.resume()");
    super();
    const options = init.options;
    this.#options = options;
    this.#baseUrl = init.baseUrl;
    this.#urls = urlsOf(init.urls ?? options.urls);
    this.#headers = options.headers ?? {};
    this.#storage = storageOf(options);
    this.#storageKey = options.storageKey ?? STORAGE_KEY;
    this.#meta = init.meta ?? {};
    this.#id = init.id ?? null;
    this.#model = init.model ?? null;
    this.#text = init.text ?? "";
    this.#lastEventId = init.lastEventId ?? "";
    if (this.#storage && typeof globalThis.addEventListener === "function") {
      // The page is going away (reload, navigation, bfcache): write what a throttled save
      // still holds back, so that resume() continues from the very last token.
      this.#onPageHide = () => this.#flush();
      globalThis.addEventListener("pagehide", this.#onPageHide);
    }
  }

  /**
   * POST {baseUrl}{urls.start} (/v1/generations) with `body` and follow the answer;
   * reconnects go to GET {baseUrl}{urls.events} (/v1/generations/{id}/stream) with
   * Last-Event-ID. The POST is never repeated:
   * if it fails before its answer, the generation ends with "error".
   * @param {{messages: Array<{role: string, content: string}>, [k: string]: unknown}} body
   * @param {import("./sluiceway.js").GenerationOptions} [options]
   */
  static start(body, options = {}) {
    const baseUrl = trimSlash(options.baseUrl ?? "");
    const generation = new Generation(INTERNAL, { options, baseUrl, meta: options.meta });
    generation.#follow(`${baseUrl}${generation.#urls.start}`, { method: "POST", body });
    return generation;
  }

  /**
   * The unfinished generation that storage kept (e.g. before a page reload), followed again
   * from its last event id, with the text received until then; null when there is none.
   * @param {import("./sluiceway.js").GenerationOptions} [options]
   */
  static resume(options = {}) {
    const storage = storageOf(options);
    const key = options.storageKey ?? STORAGE_KEY;
    if (!storage) return null;
    let record;
    try {
      record = JSON.parse(storage.getItem(key) ?? "null");
    } catch {
      return null;
    }
    if (!record || typeof record.id !== "string" || !record.id) return null;
    const baseUrl = trimSlash(options.baseUrl ?? record.baseUrl ?? "");
    const generation = new Generation(INTERNAL, {
      options,
      baseUrl,
      urls: options.urls ?? record.urls,
      id: record.id,
      model: record.model,
      meta: record.meta,
      text: typeof record.text === "string" ? record.text : "",
      lastEventId: typeof record.lastEventId === "string" ? record.lastEventId : "",
    });
    generation.#follow(generation.#streamUrl(), { lastEventId: generation.#lastEventId });
    return generation;
  }

  /**
   * Remove the record storage keeps of an unfinished generation (e.g. "New chat": a reload
   * must not resume the old answer). Close or stop a generation still followed in this page
   * first, or its next save writes the record again.
   * @param {{storage?: Storage | null, storageKey?: string}} [options]
   */
  static forget(options = {}) {
    try {
      storageOf(options)?.removeItem(options.storageKey ?? STORAGE_KEY);
    } catch {
      // storage disabled
    }
  }

  /** The generation's id: null until the server's first answer (x-generation-id). */
  get id() {
    return this.#id;
  }
  get model() {
    return this.#model;
  }
  /** Everything received so far. */
  get text() {
    return this.#text;
  }
  /** "starting", "streaming", "done", "cancelled" or "error". */
  get state() {
    return this.#state;
  }
  /** What the caller stored with it (Generation.start's `meta`), restored by resume(). */
  get meta() {
    return this.#meta;
  }
  /** The `done` payload once done (or cancelled by the server), else null. */
  get summary() {
    return this.#summary;
  }
  get lastEventId() {
    return this.#lastEventId;
  }

  /**
   * Stop it for real: abort the request AND ask the server to cancel, so that the provider
   * stops producing (and billing) tokens. Idempotent; resolves once the cancel was answered
   * (a failed cancel request is not an error here: the server also cancels generations that
   * nobody watches, after a grace period).
   * @returns {Promise<void>}
   */
  stop() {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  /** Stop reading without cancelling (e.g. page unload): storage keeps it for resume(). */
  close() {
    this.#flush();
    this.#unwatchPage();
    this.#stream?.close();
    this.#resolveId();
  }

  async #stop() {
    if (ENDED.has(this.#state) && !this.#detached) return;
    this.#end("cancelled", { summary: null }, { closeStream: false });
    let id = this.#id;
    if (id === null && this.#stream && this.#stream.readyState !== "closed") {
      // The POST has not answered yet, and its answer (sent once the first token exists) is
      // the only place the id comes from: wait for it, so that the cancel can name it.
      id = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(this.#id), 15000);
        this.#idWaiters.push((value) => {
          clearTimeout(timer);
          resolve(value);
        });
      });
    }
    this.#stream?.close();
    if (!id) return;
    try {
      const response = await (this.#options.fetch ?? globalThis.fetch)(
        `${this.#baseUrl}${fill(this.#urls.cancel, id)}`,
        // keepalive: the cancel still goes out when stop() runs as the page is closing.
        { method: "POST", headers: await resolveHeaders(this.#headers), keepalive: true },
      );
      await response.body?.cancel().catch(() => {});
    } catch {
      // the network is gone (or the headers function failed): the server's abandon policy
      // will end it
    }
  }

  #streamUrl() {
    if (this.#id === null) {
      const error = new Error("the server did not say the generation's id (x-run-id)");
      error.fatal = true; // no way to resume without it
      throw error;
    }
    return `${this.#baseUrl}${fill(this.#urls.events, this.#id)}`;
  }

  #follow(url, extra) {
    const o = this.#options;
    const stream = new EventStream(url, {
      headers: this.#headers, // a function stays one: called for each request
      resumeUrl: () => this.#streamUrl(),
      fetch: o.fetch,
      retry: o.retry,
      maxRetry: o.maxRetry,
      idleTimeout: o.idleTimeout,
      maxAttempts: o.maxAttempts,
      share: false, // a generation is this tab's own: its Stop, its cursor in sessionStorage
      ...extra,
    });
    this.#stream = stream;
    // Only the current stream's events count (after a reset, the previous one is left).
    const on = (type, handler) =>
      stream.addEventListener(type, (event) => {
        if (stream !== this.#stream) return;
        if (event.lastEventId !== undefined && !ENDED.has(this.#state)) this.#lastEventId = event.lastEventId;
        handler(event);
      });
    on("open", (e) => {
      this.#openedFrom = stream.lastEventId; // what this connection sent as Last-Event-ID
      const headers = e.response.headers;
      this.#id ??= headers.get("x-run-id") || headers.get("x-generation-id") || null;
      this.#resolveId();
      if (ENDED.has(this.#state)) return;
      this.#setState("streaming");
      this.#save();
    });
    on("start", (e) => {
      const d = parseJSON(e.data) ?? {};
      if (typeof d.id === "string") this.#id ??= d.id;
      this.#resolveId();
      if (ENDED.has(this.#state)) return;
      this.#model = d.model ?? this.#model;
      this.#save();
      this.#emit("start", { id: this.#id, model: this.#model, provider: d.provider, created: d.created });
    });
    on("token", (e) => {
      if (ENDED.has(this.#state)) return;
      const delta = parseJSON(e.data)?.text ?? "";
      this.#text += delta;
      this.#save(); // throttled; a write always pairs the text with this token's id
      this.#emit("token", { text: delta, total: this.#text });
    });
    on("tool_call", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#save();
      this.#emit("tool_call", { call: parseJSON(e.data), data: e.data });
    });
    on("tool_result", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#save();
      this.#emit("tool_result", { result: parseJSON(e.data), data: e.data });
    });
    on("step", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#emit("step", { step: parseJSON(e.data), data: e.data });
    });
    // The run's own items (a str, a dict, an Event of the app's type): "item" events.
    for (const type of this.#options.itemEvents ?? ["message"]) {
      on(type, (e) => {
        if (ENDED.has(this.#state)) return;
        this.#save();
        this.#emit("item", { type, data: e.data, value: parseJSON(e.data) });
      });
    }
    on("partial", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#save();
      this.#emit("partial", { value: parseJSON(e.data)?.value, data: e.data });
    });
    on("done", (e) => {
      const summary = parseJSON(e.data) ?? {};
      // A cancelled generation (by anyone) ends with `done` and finish_reason "cancelled".
      if (summary.finish_reason === "cancelled") this.#end("cancelled", { summary });
      else this.#end("done", { summary });
    });
    on("error", (e) => {
      if (typeof e.data === "string") {
        const d = parseJSON(e.data) ?? {};
        this.#end("error", { error: d.error ?? "error", message: d.message ?? e.data, status: 0 });
      } else if (e.fatal) {
        const body = e.body && typeof e.body === "object" ? e.body : null;
        const status = e.status || 0;
        // Refused for its credentials (an expired token, say): the generation itself may be
        // fine, and a reload (with fresh headers) can follow it again; storage keeps it.
        const keep = (status === 401 || status === 403) && this.#id !== null;
        this.#end(
          "error",
          {
            error: body?.error ?? (status ? `http_${status}` : "network_error"),
            message: body?.detail ?? body?.message ?? e.error?.message ?? String(e.error),
            status,
            body: e.body,
          },
          { keep },
        );
      }
    });
    on("reset", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#replay(e);
    });
    on("reconnecting", (e) => {
      if (ENDED.has(this.#state)) return;
      this.#emit("reconnecting", { attempt: e.attempt, delay: e.delay, error: e.error });
    });
    on("close", (e) => {
      this.#resolveId();
      if (e.reason === "done") {
        // 204: the server has nothing more (its last event was already here).
        this.#end("done", { summary: this.#summary });
      } else if (e.reason === "gave_up" && !ENDED.has(this.#state)) {
        // Not removed from storage: the generation may well still be running; a reload
        // retries, and stop() still cancels it.
        this.#end(
          "error",
          { error: "gave_up", message: "could not reconnect to the generation", status: 0 },
          { keep: true },
        );
      }
    });
  }

  /**
   * The hub could not resume from our last event id (events were lost): a text with a gap
   * would look whole, so drop it and replay the generation from its first event (its topic
   * keeps every event for its retention). Listeners get "reset" and render `text` anew.
   */
  #replay(e) {
    const fields = { data: e.data, detail: e.detail, lastEventId: e.lastEventId };
    if (this.#openedFrom === "" || this.#id === null) {
      // Even a replay from the start was not exact: the start itself is gone; say so rather
      // than loop, or show a text with a hole.
      this.#end("error", {
        error: "reset",
        message: "the generation's events are no longer all kept: its text cannot be complete",
        status: 0,
        ...fields,
      });
      return;
    }
    const previous = this.#stream;
    this.#stream = null; // first: its "close" is not ours to handle
    previous?.close();
    this.#text = "";
    this.#lastEventId = "";
    this.#save(); // "" with "": a reload now replays from the start too
    this.#follow(this.#streamUrl(), { lastEventId: "" });
    this.#emit("reset", { ...fields, text: "" });
  }

  #resolveId() {
    const waiters = this.#idWaiters;
    this.#idWaiters = [];
    for (const resolve of waiters) resolve(this.#id);
  }

  #emit(type, fields) {
    this.dispatchEvent(new StreamEvent(type, fields));
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit("state", { state });
  }

  /**
   * The end of the generation, once: state, storage, the stream, then its event. `keep`: the
   * generation may still run on the server: its record is written now and kept (a reload
   * follows it again), and stop() may still cancel it.
   */
  #end(state, fields, { closeStream = true, keep = false } = {}) {
    if (ENDED.has(this.#state) && !this.#detached) return;
    if (fields.summary) this.#summary = fields.summary;
    this.#state = state;
    if (keep) this.#flush();
    else this.#forget();
    this.#detached = keep;
    this.#unwatchPage();
    if (closeStream) this.#stream?.close();
    this.#emit(state, fields);
    this.#emit("state", { state });
  }

  /** Mark the record changed; write it now, or at most SAVE_INTERVAL after the last write. */
  #save() {
    if (!this.#storage || this.#id === null) return;
    this.#dirty = true;
    if (this.#saveTimer !== null) return; // a write is already due
    const wait = this.#savedAt + SAVE_INTERVAL - now();
    if (wait <= 0) {
      this.#flush();
    } else {
      this.#saveTimer = setTimeout(() => {
        this.#saveTimer = null;
        this.#flush();
      }, wait);
    }
  }

  /** Write the record now if it changed. Text and lastEventId are read together, here: a
   * record always pairs a text with the id of its last token. */
  #flush() {
    clearTimeout(this.#saveTimer);
    this.#saveTimer = null;
    if (!this.#dirty || !this.#storage || this.#id === null) return;
    this.#dirty = false;
    this.#savedAt = now();
    const record = {
      id: this.#id,
      lastEventId: this.#lastEventId,
      text: this.#text,
      meta: this.#meta,
      baseUrl: this.#baseUrl,
      urls: this.#urls,
      model: this.#model,
    };
    try {
      this.#storage.setItem(this.#storageKey, JSON.stringify(record));
    } catch {
      // quota exceeded or storage disabled: the generation itself goes on
    }
  }

  #forget() {
    clearTimeout(this.#saveTimer);
    this.#saveTimer = null;
    this.#dirty = false;
    if (!this.#storage || this.#id === null) return;
    try {
      // Only our own record: another generation may have been started since.
      const record = parseJSON(this.#storage.getItem(this.#storageKey));
      if (!record || record.id === this.#id) this.#storage.removeItem(this.#storageKey);
    } catch {
      // storage disabled
    }
  }

  #unwatchPage() {
    if (this.#onPageHide) globalThis.removeEventListener?.("pagehide", this.#onPageHide);
    this.#onPageHide = null;
  }
}
