// The browser client's SSE parser side by side with the peers a browser app would otherwise
// use, on the same pre-decoded chunks, in one run:
//
//   sluiceway           SSEParser of src/sluiceway/web/sluiceway.js
//   eventsource-parser  createParser() of the npm package (the Vercel AI SDK's parser)
//   tutorial            buffer += chunk; split("\n\n"); split("\n") — the copied snippet
//                       (right with LF line ends, wrong with CRLF: its "correct" column)
//
// Three workloads: LLM-token-shaped events (small JSON, an id and an event name each, pings
// between), the same with CRLF line ends, and large events (4 KiB of JSON data on several
// lines). The bytes are cut into
// chunks of random sizes (1 B to 16 KiB, a fixed seed) and decoded once, so only parsing is
// timed. Each parser runs the workload `--repeats` times after one warm-up; the median is
// reported. Every parser's events are checked against the expected count and a checksum of
// the data, so a fast wrong answer cannot win.
//
//   npm ci --prefix bench/js && node bench/js/parse_bench.mjs [--repeats 7]

import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createParser } from "eventsource-parser";
import { SSEParser } from "../../src/sluiceway/web/sluiceway.js";

const here = dirname(fileURLToPath(import.meta.url));
const repeats = Number(process.argv[process.argv.indexOf("--repeats") + 1] || 7) || 7;

function random(seed) {
  // mulberry32: a fixed sequence, so every run cuts the same chunks.
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function tokenWorkload(count) {
  const parts = [];
  const datas = [];
  for (let i = 0; i < count; i++) {
    const data = JSON.stringify({ text: `tok${i} ` });
    datas.push(data);
    parts.push(`id: 3f9a1c07-${i}\nevent: token\ndata: ${data}\n\n`);
    if (i % 500 === 0) parts.push(": ping\n\n");
  }
  return { name: "llm tokens", text: parts.join(""), datas };
}

function crlfWorkload(count) {
  // The same events with CRLF line ends (what some servers and proxies send).
  const tokens = tokenWorkload(count);
  return { name: "llm tokens, CRLF", text: tokens.text.replaceAll("\n", "\r\n"), datas: tokens.datas };
}

function largeWorkload(count) {
  const parts = [];
  const datas = [];
  const row = JSON.stringify({ id: 0, name: "x".repeat(60), amount: 12.5, tags: ["a", "b"] });
  for (let i = 0; i < count; i++) {
    const lines = Array.from({ length: 48 }, () => row); // ~4 KiB over 48 lines
    datas.push(lines.join("\n"));
    parts.push(`id: 3f9a1c07-${i}\ndata: ${lines.join("\ndata: ")}\n\n`);
  }
  return { name: "4 KiB events", text: parts.join(""), datas };
}

function chunksOf(text, seed) {
  const bytes = new TextEncoder().encode(text);
  const next = random(seed);
  const decoder = new TextDecoder();
  const chunks = [];
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + Math.floor(next() * 16384);
    chunks.push(decoder.decode(bytes.subarray(at, at + size), { stream: true }));
    at += size;
  }
  chunks.push(decoder.decode());
  return { chunks, bytes: bytes.length };
}

function checksum(strings) {
  let sum = 0;
  for (const s of strings) sum = (sum * 31 + s.length + s.charCodeAt(s.length >> 1)) % 1e9;
  return sum;
}

const parsers = {
  sluiceway(chunks) {
    const parser = new SSEParser();
    const out = [];
    for (const chunk of chunks) for (const event of parser.feed(chunk)) out.push(event.data);
    parser.end();
    return out;
  },
  "eventsource-parser"(chunks) {
    const out = [];
    const parser = createParser({ onEvent: (event) => out.push(event.data) });
    for (const chunk of chunks) parser.feed(chunk);
    return out;
  },
  tutorial(chunks) {
    const out = [];
    let buffer = "";
    for (const chunk of chunks) {
      buffer += chunk;
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      for (const block of blocks) {
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) out.push(data.join("\n"));
      }
    }
    return out;
  },
};

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const results = [];
for (const workload of [tokenWorkload(200_000), crlfWorkload(200_000), largeWorkload(5_000)]) {
  const { chunks, bytes } = chunksOf(workload.text, 42);
  const expected = checksum(workload.datas);
  for (const [name, parse] of Object.entries(parsers)) {
    const got = parse(chunks); // the warm-up, and the correctness check
    const correct = got.length === workload.datas.length && checksum(got) === expected;
    const seconds = [];
    for (let i = 0; i < repeats; i++) {
      const started = process.hrtime.bigint();
      parse(chunks);
      seconds.push(Number(process.hrtime.bigint() - started) / 1e9);
    }
    const s = median(seconds);
    results.push({
      workload: workload.name,
      parser: name,
      correct,
      events: workload.datas.length,
      bytes,
      chunks: chunks.length,
      median_s: s,
      events_per_s: workload.datas.length / s,
      mib_per_s: bytes / s / 1048576,
    });
  }
}

const peer = (r) => results.find((p) => p.workload === r.workload && p.parser === "eventsource-parser");
console.log(`node ${process.version}, median of ${repeats} runs\n`);
console.log("| workload | parser | correct | events/s | MiB/s | vs eventsource-parser |");
console.log("|---|---|---|---:|---:|---:|");
for (const r of results) {
  const ratio = r.events_per_s / peer(r).events_per_s;
  console.log(
    `| ${r.workload} | ${r.parser} | ${r.correct ? "yes" : "NO"} | ` +
      `${Math.round(r.events_per_s).toLocaleString("en")} | ${r.mib_per_s.toFixed(1)} | ` +
      `${ratio.toFixed(2)}× |`,
  );
}
const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
const file = join(here, "..", "results", `js_parser-${stamp}.json`);
writeFileSync(
  file,
  JSON.stringify({ node: process.version, repeats, seed: 42, results }, null, 2) + "\n",
);
console.log(`\n${file}`);
