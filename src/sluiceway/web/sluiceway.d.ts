// Type declarations for sluiceway.js, the browser client of Sluiceway (an ES module with no
// dependencies: `import { EventStream, Generation } from "/static/sluiceway.js"`).

/** The name of the hub's control event ("events were lost"); EventStream dispatches it as "reset". */
export declare const RESET_EVENT: "sluiceway.reset";
/** The name of the hub's event that starts a stream opened without an id: its id is where the
 * stream starts. EventStream does not dispatch it; its id becomes `lastEventId`. */
export declare const POSITION_EVENT: "sluiceway.position";

/** One dispatched server-sent event. */
export interface ServerSentEvent {
  /** The `event:` name, "message" when there was none. */
  type: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last event id in effect when it was dispatched (ids persist across events). */
  lastEventId: string;
  /** Sluiceway's `delta:` field, when the event had one: `data` is then a delta in that format
   * ("fossil") from the previous event's data. EventStream applies it. */
  delta?: string;
}

export interface SSEParserOptions {
  /** Called with the reconnection time (ms) of each valid (all ASCII digits) `retry:` line. */
  onRetry?: (ms: number) => void;
  /** The id in effect before this stream (a reconnecting client passes its previous one). */
  lastEventId?: string;
}

/**
 * Incremental `text/event-stream` parser (WHATWG HTML rules), sans-I/O: feed it decoded text in
 * chunks split anywhere (inside a CRLF too); it returns the events each chunk completed.
 * Decode bytes with `new TextDecoder("utf-8", { ignoreBOM: true })` in streaming mode: the
 * parser strips the one BOM the spec allows at the start of the stream itself.
 */
export declare class SSEParser {
  constructor(options?: SSEParserOptions);
  /** Consume decoded text, any chunking; the events it completed, in order. */
  feed(text: string): ServerSentEvent[];
  /** End of stream: an incomplete event (no blank line yet) is discarded; returns []. The
   * parser is then ready for a new stream. */
  end(): ServerSentEvent[];
  /** The spec's "last event ID string": updated at each blank line, even without data. */
  readonly lastEventId: string;
}

/** A Fossil delta that does not apply to its origin, or a damaged one. */
export declare class DeltaError extends Error {
  constructor(message: string);
}

/**
 * `origin` with a Fossil delta applied (the format Sluiceway's `?delta=fossil` streams and
 * Centrifugo's SDKs use); throws DeltaError when it does not apply.
 */
export declare function applyFossilDelta(origin: Uint8Array, delta: Uint8Array): Uint8Array;

/** Parse a whole stream of byte chunks (split anywhere, even inside a UTF-8 character). */
export declare function parseBytes(
  chunks: Iterable<Uint8Array>,
  options?: SSEParserOptions,
): ServerSentEvent[];

/**
 * The wait (ms) before reconnect attempt `attempt` (1-based): with d = min(max, base * 2^(attempt-1)),
 * uniform in [d/2, d]. `random` defaults to Math.random.
 */
export declare function backoffDelay(
  attempt: number,
  base: number,
  max: number,
  random?: () => number,
): number;

/** Milliseconds from a `Retry-After` value (delta-seconds or an HTTP date), or null. */
export declare function parseRetryAfter(value: string | null | undefined, now?: number): number | null;

/** The error of a connection that received no byte (not even a keep-alive) for `idleTimeout`. */
export declare class IdleTimeoutError extends Error {
  constructor(ms: number);
}

/** An HTTP error status, or a 2xx that was not `text/event-stream`. */
export declare class HTTPError extends Error {
  constructor(message: string, status: number);
  readonly status: number;
}

/** Headers to send: an object, or a function (sync or async) returning one, called before each
 * request (the first, every reconnect, Generation's cancel), so that a page can send a token
 * it refreshed meanwhile. A function that throws fails that attempt. */
export type HeadersOption =
  | Record<string, string>
  | (() => Record<string, string> | Promise<Record<string, string>>);

export interface StreamOptions {
  /** "GET" (default) or "POST". A request that is not a GET is never repeated before the
   * stream first opened (it may have started something): a failure then is fatal. */
  method?: string;
  /** Sent JSON-serialised, with `content-type: application/json` (unless headers set one). */
  body?: unknown;
  /** Sent with every request (e.g. Authorization); a function is called for each request. */
  headers?: HeadersOption;
  /** Resume from here on the first request (sent as `Last-Event-ID`). */
  lastEventId?: string;
  /** Ask a Sluiceway stream for Fossil deltas (adds `delta=fossil` to the URL): an event that
   * follows the one before comes as its difference from it, a few bytes for a small change to
   * a large state. They are applied here: every event dispatched has its whole data. A delta
   * that does not apply is an "error" (a DeltaError), and the stream resumes from the last good
   * event, whose successor then comes whole. */
  delta?: boolean;
  /** Base reconnect delay in ms (default 1000); a server `retry:` replaces it. After a failed
   * attempt (an error, or an end without any event) the base is at least 250 ms, so that
   * `retry: 0` cannot make a failing server spin the client; after a clean end that delivered
   * events, `retry:` is used as given (even 0). */
  retry?: number;
  /** Cap of the exponential backoff in ms (default 30000; it caps the 250 ms floor too). A
   * `Retry-After` is not capped by it, but by one hour. No delay exceeds 2^31-1 ms. */
  maxRetry?: number;
  /** Ms without any byte (keep-alive comments count) before the connection is aborted and
   * reconnected (default 45000, three of Sluiceway's default 15 s pings). It starts once the
   * response headers arrived; before them only a GET is timed (a POST may take as long as it
   * needs: Sluiceway answers POST /v1/generations after the first token). 0, Infinity or more
   * than 2^31-1: none. */
  idleTimeout?: number;
  /** Consecutive failed attempts before giving up with close("gave_up") (default Infinity).
   * A connection that delivered at least one event resets the count; one that ended cleanly
   * without any event counts as a failed attempt. */
  maxAttempts?: number;
  /** false: never reconnect; the stream closes with "done" (clean end) or "gave_up" (failure). */
  reconnect?: boolean;
  /** Where (GET, no body) to reconnect once the stream has opened once, e.g. a POST that started
   * something is followed elsewhere. A function gets the current last event id. Retries before
   * the first successful open repeat the original request (only a GET is retried then). */
  resumeUrl?: string | ((lastEventId: string) => string);
  /** The fetch to use (tests). A stream given one does not share. */
  fetch?: typeof fetch;
  /** Jitter source in [0, 1) (tests; default Math.random). */
  random?: () => number;
  /** false: this stream keeps a connection of its own instead of sharing one per URL with the
   * other tabs of the origin (see EventStream). Tabs that share a URL share the leader tab's
   * request, headers included: opt out where tabs follow one URL with different credentials. */
  share?: boolean;
  /** Ms of silence from the leader tab after which a follower takes the connection over (a
   * frozen or hung tab; default 30000, above Sluiceway's 15 s keep-alive, so that a leader in a
   * throttled background tab is not mistaken for a dead one). */
  leaderTimeout?: number;
}

/** Every event this module dispatches: a plain Event whose fields are own properties. */
export declare class StreamEvent extends Event {
  constructor(type: string, fields?: Record<string, unknown>);
  [field: string]: unknown;
}

export interface OpenEvent extends Event {
  readonly type: "open";
  /** null in a tab that follows another tab's connection. */
  response: Response | null;
  /** True for every open after the first. */
  reconnected: boolean;
  /** True in a tab that follows another tab's connection. */
  shared?: boolean;
}

/**
 * "message" and every named event from the server (its `event:` name is the type), except:
 * the hub's "sluiceway.reset" is dispatched as "reset" (ResetEvent), its "sluiceway.position"
 * is not dispatched (its id becomes the stream's `lastEventId`), and a server event named
 * "open", "close", "reconnecting" or "reset" is dispatched as "server:open", "server:close",
 * "server:reconnecting", "server:reset" (those names are the client's own lifecycle events: a
 * published `close` must not look like the end of the stream). A server event named "error"
 * keeps its name, as with EventSource (see StreamErrorEvent).
 */
export interface MessageStreamEvent extends Event {
  data: string;
  lastEventId: string;
}

export interface ResetDetail {
  topics: Array<{
    topic: string;
    /** "expired" (trimmed from history), "unknown_epoch" (a history that no longer exists),
     * "unknown_position" (ahead of anything published). */
    reason: string;
    requested: string;
    earliest: string;
    resumed_at: string;
  }>;
}

/** The hub could not resume exactly from the id sent: events were lost; the stream goes on
 * from `detail.topics[].resumed_at`. */
export interface ResetEvent extends Event {
  readonly type: "reset";
  data: string;
  /** `data` parsed, or null when it is not JSON. */
  detail: ResetDetail | null;
  lastEventId: string;
}

/** Generation's "reset": the server could not resume it exactly, so its text was dropped
 * ("") and it is replayed from its first event (the tokens come again): render `text` anew. */
export interface GenerationResetEvent extends ResetEvent {
  /** The text after the reset: "". */
  text: string;
}

export interface ReconnectingEvent extends Event {
  readonly type: "reconnecting";
  /** Consecutive failed attempts so far (1 after a working stream simply ended). */
  attempt: number;
  /** Ms until the next request. */
  delay: number;
  /** What ended the previous connection; null for a clean end of the response. */
  error: Error | null;
}

/**
 * A transport failure. Note: an event the *server* names "error" is dispatched as "error" too
 * (with `data` and `lastEventId` and none of these fields): tell them apart with
 * `typeof event.data === "string"`.
 */
export interface StreamErrorEvent extends Event {
  readonly type: "error";
  error: Error;
  /** The HTTP status, or 0 (network error, idle timeout). */
  status: number;
  /** The error response's body: parsed JSON (Sluiceway: {"error", "detail"}) or text, or null. */
  body: unknown;
  /** true: the stream closes ("fatal"); false: it will reconnect ("reconnecting" follows). */
  fatal: boolean;
}

export interface StreamCloseEvent extends Event {
  readonly type: "close";
  /** "closed" (close()), "done" (HTTP 204: nothing more), "fatal" (after a fatal error),
   * "gave_up" (maxAttempts reached, or a failure with reconnect: false). */
  reason: "closed" | "done" | "fatal" | "gave_up";
}

/**
 * Server-sent events over `fetch`: GET or POST with a JSON body and any headers, automatic
 * reconnection with `Last-Event-ID`, backoff with jitter, `retry:` honoured, an idle timeout.
 *
 * Statuses: 2xx `text/event-stream` opens; 204 closes ("done"); 408, 429 and 5xx are retried
 * (at least `Retry-After` later on 429/503); any other status, or a 2xx of another content
 * type, is fatal. A response that ends is reconnected, like EventSource.
 *
 * The GET streams of one URL share one connection across the tabs of the origin (over
 * HTTP/1.1 a browser opens at most 6 per origin, for all tabs together): the tab holding a
 * Web Lock named after the URL connects and passes every event on over a BroadcastChannel;
 * each stream keeps its own `lastEventId`, and when the leader tab closes, reloads or goes
 * silent for `leaderTimeout`, another takes over from its own position — no event lost or
 * repeated. See `sharing`; opt out with `share: false`.
 *
 * Starts connecting in a microtask: attach listeners right after `new`.
 */
export declare class EventStream extends EventTarget {
  constructor(url: string, options?: StreamOptions);
  readonly url: string;
  /** Sent as `Last-Event-ID` on the next request when not empty; updated by every event, the
   * hub's position event (which starts a stream opened without an id) included. */
  lastEventId: string;
  readonly readyState: "connecting" | "open" | "closed";
  /** Successful re-opens after the first. */
  readonly reconnects: number;
  /** The latest response (null before the first, and in a tab that follows another's). */
  readonly response: Response | null;
  /** "leader": this tab holds the connection the tabs of the origin share for this URL;
   * "follower": another tab does, and passes its events on; null: this stream does not share
   * (share: false, a POST, a lastEventId or resumeUrl of its own, no Web Locks). */
  readonly sharing: "leader" | "follower" | null;
  /** Abort the request, no more reconnects; dispatches "close" with reason "closed". A leader
   * tab's close hands the connection to the next tab. */
  close(): void;

  /** Server events named "open", "close", "reconnecting" or "reset" arrive under these. */
  addEventListener(type: "server:open" | "server:close" | "server:reconnecting" | "server:reset", listener: (event: MessageStreamEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "open", listener: (event: OpenEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "reset", listener: (event: ResetEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "reconnecting", listener: (event: ReconnectingEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "error", listener: (event: StreamErrorEvent | MessageStreamEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "close", listener: (event: StreamCloseEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: (event: MessageStreamEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export interface GenerationOptions {
  /** Default "" (same origin). */
  baseUrl?: string;
  /** Where the runs are, below baseUrl; `{id}` is the run's id. Default: Sluiceway's
   * /v1/generations ({start: "/v1/generations", events: "/v1/generations/{id}/stream",
   * cancel: "/v1/generations/{id}/cancel"}). For your own FastAPI endpoint and a
   * `runs.router(prefix="/answers")`: {start: "/chat", events: "/answers/{id}/events",
   * cancel: "/answers/{id}/cancel"}. */
  urls?: { start?: string; events?: string; cancel?: string };
  /** The run's own event types (items that are not LLM chunks), dispatched as "item" events.
   * Default ["message"] (a str or a dict the producer yielded). */
  itemEvents?: string[];
  /** Sent with every request (e.g. Authorization), the cancel included; a function is called
   * for each request (a refreshed token then reaches every reconnect). */
  headers?: HeadersOption;
  /** Where the unfinished generation is kept; default globalThis.sessionStorage when present;
   * null: not kept. */
  storage?: Storage | null;
  /** Default "sluiceway.generation". */
  storageKey?: string;
  /** Generation.start only: kept with it in storage (e.g. the prompt), given back by resume(). */
  meta?: Record<string, unknown>;
  /** Passed to the EventStream (so is idleTimeout: it does not time the wait for the POST's
   * answer, which comes with the first token). */
  fetch?: typeof fetch;
  retry?: number;
  maxRetry?: number;
  idleTimeout?: number;
  maxAttempts?: number;
}

/** What storage holds (JSON under `storageKey`) while a generation is unfinished. Written at
 * most every 250 ms while events arrive, at once by close() and on `pagehide` (when
 * globalThis.addEventListener exists); text and lastEventId are always written together (the
 * text is that of the events up to lastEventId). Removed when the generation ends, except
 * after "gave_up" or a 401/403 on a reconnect (a reload may follow it again); removed by
 * stop() and by Generation.forget(). */
export interface StoredGeneration {
  id: string;
  lastEventId: string;
  text: string;
  meta: Record<string, unknown>;
  baseUrl: string;
  urls: { start: string; events: string; cancel: string };
  model: string | null;
}

export type GenerationState = "starting" | "streaming" | "done" | "cancelled" | "error";

/** The `done` payload of the server. */
export interface GenerationSummary {
  finish_reason: string;
  usage: { prompt_tokens: number | null; completion_tokens: number; total_tokens: number | null };
  ttft_ms: number | null;
  tokens_per_s: number | null;
  duration_ms: number;
  output_tokens: number;
  [k: string]: unknown;
}

export interface GenerationStartEvent extends Event { id: string | null; model: string | null; provider?: string; created?: number }
/** `text`: this token; `total`: the whole text so far (== generation.text). */
export interface GenerationTokenEvent extends Event { text: string; total: string }
/** The generation ended normally; `summary` is null when the server answered 204 (it had ended
 * and everything was already here). finish_reason may be "length", "abandoned", "time_limit". */
export interface GenerationDoneEvent extends Event { summary: GenerationSummary | null }
/** Cancelled: by stop() (`summary` null) or by someone else (`summary`: the server's `done`
 * with finish_reason "cancelled"). */
export interface GenerationCancelledEvent extends Event { summary: GenerationSummary | null }
/** It failed: the server's `error` event (`error`: its kind, e.g. "timeout", "upstream_error"),
 * an HTTP refusal (`error`: the body's code, e.g. "invalid_body", "unknown_generation", else
 * "http_<status>"; `status`), a start POST that got no answer ("network_error", status 0: it
 * is never sent again), "gave_up" (maxAttempts reached), or "reset" (even a replay from the
 * first event was not exact: the text cannot be complete). After "gave_up" and after a 401 or
 * 403 on a reconnect, storage keeps the generation so that a reload can try again (with fresh
 * headers), and stop() still cancels it. */
export interface GenerationErrorEvent extends Event { error: string; message: string; status: number; body?: unknown }
export interface GenerationReconnectingEvent extends Event { attempt: number; delay: number; error: Error | null }
export interface GenerationStateEvent extends Event { state: GenerationState }
export interface GenerationToolCallEvent extends Event { call: unknown; data: string }
export interface GenerationPartialEvent extends Event { value: unknown; data: string }
/** What a tool returned (an agent loop): {id, output}. */
export interface GenerationToolResultEvent extends Event { result: unknown; data: string }
/** A new model call begins (after tool results): {step, finish_reason}. */
export interface GenerationStepEvent extends Event { step: unknown; data: string }
/** One of the run's own items: `type` is its event type, `value` its data parsed as JSON
 * (null when it is not JSON). */
export interface GenerationItemEvent extends Event { type: string; data: string; value: unknown }

/**
 * A generation of `/v1/generations`, or a run of your own endpoint (the `urls` option), followed across dropped connections (resumed without
 * duplicates through Last-Event-ID) and page reloads (resume() from storage).
 *
 * Events: "start", "token", "tool_call", "tool_result", "step", "item", "partial", "done",
 * "cancelled", "error", "reset", "reconnecting", and "state" after every change of `state`. On "reset" (the hub could not
 * resume it exactly) `text` is dropped and the generation is replayed from its first event
 * (GET .../stream without Last-Event-ID): its tokens come again, and the final text is the
 * server's.
 */
export declare class Generation extends EventTarget {
  private constructor();
  /** POST {baseUrl}{urls.start} with `body`; the id comes from the `x-run-id` (or
   * `x-generation-id`) response header, or the `start` event; reconnects GET
   * {baseUrl}{urls.events} with Last-Event-ID. */
  static start(
    body: { messages: Array<{ role: string; content: string }>; [k: string]: unknown },
    options?: GenerationOptions,
  ): Generation;
  /** The unfinished generation kept in storage, followed again from its stored last event id
   * with its stored text; null when there is none. */
  static resume(options?: GenerationOptions): Generation | null;
  /** Remove the record storage keeps under `storageKey` (e.g. "New chat": a reload must not
   * resume the old answer). close() or stop() a generation still followed in this page first. */
  static forget(options?: Pick<GenerationOptions, "storage" | "storageKey">): void;
  readonly id: string | null;
  readonly model: string | null;
  /** Everything received so far. */
  readonly text: string;
  readonly state: GenerationState;
  readonly meta: Record<string, unknown>;
  readonly summary: GenerationSummary | null;
  readonly lastEventId: string;
  /** Abort the request AND POST {baseUrl}{urls.cancel} (removing the stored
   * record); state becomes
   * "cancelled" at once. Idempotent. When called before the server's first answer, waits for
   * it (the id comes with it) before cancelling. Also cancels after a "gave_up" error (the
   * generation may still run on the server). Resolves even if the cancel request fails. */
  stop(): Promise<void>;
  /** Stop reading without cancelling (e.g. page unload); storage keeps it, written now, for
   * resume(). */
  close(): void;

  addEventListener(type: "start", listener: (event: GenerationStartEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "token", listener: (event: GenerationTokenEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "done", listener: (event: GenerationDoneEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "cancelled", listener: (event: GenerationCancelledEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "error", listener: (event: GenerationErrorEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "reconnecting", listener: (event: GenerationReconnectingEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "state", listener: (event: GenerationStateEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "reset", listener: (event: GenerationResetEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "tool_call", listener: (event: GenerationToolCallEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "partial", listener: (event: GenerationPartialEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "tool_result", listener: (event: GenerationToolResultEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "step", listener: (event: GenerationStepEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "item", listener: (event: GenerationItemEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
