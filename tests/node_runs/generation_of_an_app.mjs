// sluiceway.js's Generation against a FastAPI app of examples/ (its own URLs): run by
// tests/test_examples.py.
//
//   node generation_of_an_app.mjs <base url> <scenario> [options JSON]
//
// Prints one line of JSON: what the Generation saw.
import { Generation } from "../../src/sluiceway/web/sluiceway.js";

const [base, scenario, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");

class MemoryStorage {
  #items = new Map();
  getItem(key) {
    return this.#items.has(key) ? this.#items.get(key) : null;
  }
  setItem(key, value) {
    this.#items.set(key, String(value));
  }
  removeItem(key) {
    this.#items.delete(key);
  }
}

const urls = options.urls;
const body = options.body;
const ended = (g) =>
  new Promise((resolve) => {
    for (const type of ["done", "cancelled", "error"]) {
      g.addEventListener(type, (e) => resolve({ type, summary: e.summary ?? null, error: e.error ?? null }));
    }
  });
const tokens = (g, count) =>
  new Promise((resolve) => {
    let seen = 0;
    g.addEventListener("token", () => {
      if (++seen === count) resolve();
    });
  });

const scenarios = {
  // Start, leave after a few tokens (a page reload), resume from storage, read to the end.
  async reload() {
    const storage = new MemoryStorage();
    const first = Generation.start(body, { baseUrl: base, urls, storage });
    await tokens(first, options.leaveAfter ?? 3);
    const textBefore = first.text;
    const id = first.id;
    first.close();
    const again = Generation.resume({ baseUrl: base, storage });
    const end = await ended(again);
    return { id, resumedId: again.id, textBefore, text: again.text, state: again.state, end, stored: storage.getItem("sluiceway.generation") };
  },
  // Start, then stop(): the app cancels the run.
  async stop() {
    const g = Generation.start(body, { baseUrl: base, urls, storage: null });
    await tokens(g, 2);
    await g.stop();
    return { id: g.id, state: g.state, text: g.text };
  },
};

const result = await scenarios[scenario]();
console.log(JSON.stringify({ scenario, ...result }));
