// Helpers for the sluiceway.js tests: a loopback HTTP server that records what it received.
import http from "node:http";

/**
 * Start a server on 127.0.0.1, port 0. `handler(req, res, n)` gets each request with
 * `req.body` (its text, read in full) and `n`, the request's index (0, 1, ...).
 * Returns {url, requests, close()}; `requests` holds {method, url, headers, body, at} in order.
 */
export async function serve(handler) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const piece of req) body += piece;
    req.body = body;
    const n = requests.length;
    requests.push({ method: req.method, url: req.url, headers: req.headers, body, at: performance.now() });
    try {
      await handler(req, res, n);
    } catch (error) {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(error));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Begin an event-stream response. */
export function openStream(res, headers = {}) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...headers });
  res.flushHeaders();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve with the first event of `type` on `target` (reject after `ms`). */
export function once(target, type, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${type}" event within ${ms} ms`)), ms);
    target.addEventListener(
      type,
      (event) => {
        clearTimeout(timer);
        resolve(event);
      },
      { once: true },
    );
  });
}

/** Record every event of the given types on `target`, in order, as [type, event]. */
export function record(target, types) {
  const log = [];
  for (const type of types) target.addEventListener(type, (event) => log.push([type, event]));
  return log;
}

/** A Storage backed by a Map (what sessionStorage offers, minus events). */
export class MemoryStorage {
  #map = new Map();
  get length() {
    return this.#map.size;
  }
  key(i) {
    return [...this.#map.keys()][i] ?? null;
  }
  getItem(key) {
    return this.#map.has(key) ? this.#map.get(key) : null;
  }
  setItem(key, value) {
    this.#map.set(key, String(value));
  }
  removeItem(key) {
    this.#map.delete(key);
  }
  clear() {
    this.#map.clear();
  }
}

/** A small deterministic PRNG (mulberry32), for reproducible random chunkings. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
