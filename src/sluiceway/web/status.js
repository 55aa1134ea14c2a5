// The Status view: /metrics (Prometheus text) and /healthz polled every second while the view
// is shown; the current numbers, and charts of the last minutes drawn from them.
import { authHeaders, refusal } from "./auth.js";
import { TimeChart } from "./charts.js";
import { $, api, clock, el, fmt } from "./util.js";

const POLL_MS = 1000;

/** Prometheus text format → [{name, labels, value}] */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue; // comments (# HELP, # TYPE) and blank lines
    const labels = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}
const sum = (samples, ...names) =>
  samples.reduce((n, s) => (names.includes(s.name) ? n + s.value : n), 0);

/** The counters whose rates are drawn, read from one scrape. */
const counters = (samples) => ({
  delivered: sum(samples, "sluiceway_events_delivered_total", "sluiceway_ws_publications_delivered_total"),
  published: sum(samples, "sluiceway_events_published_total"),
  tokens: sum(samples, "sluiceway_llm_output_tokens_total"),
  ttftSum: sum(samples, "sluiceway_llm_time_to_first_token_seconds_sum"),
  ttftCount: sum(samples, "sluiceway_llm_time_to_first_token_seconds_count"),
  rateSum: sum(samples, "sluiceway_llm_tokens_per_second_sum"),
  rateCount: sum(samples, "sluiceway_llm_tokens_per_second_count"),
});

/** Per second between two scrapes; null across a restart (a counter went down). */
const perSecond = (now, before, key, seconds) => {
  const delta = now[key] - before[key];
  return delta >= 0 ? delta / seconds : null;
};
/** The mean of a histogram's new observations between two scrapes; null when none. */
const meanSince = (now, before, sumKey, countKey) => {
  const count = now[countKey] - before[countKey];
  return count > 0 ? (now[sumKey] - before[sumKey]) / count : null;
};

const state = { timer: null, last: null, busy: false, charts: null };

function makeCharts() {
  const charts = {
    deliveries: new TimeChart({
      id: "chart-deliveries", title: "Deliveries", unit: "events/s",
      series: [{ key: "delivered", label: "delivered" }, { key: "published", label: "published" }],
    }),
    streams: new TimeChart({
      id: "chart-streams", title: "Open streams and connections", unit: "open", integer: true,
      series: [{ key: "streams", label: "event streams" }, { key: "ws", label: "WebSocket connections" },
        { key: "generations", label: "active generations" }],
    }),
    ttft: new TimeChart({
      id: "chart-ttft", title: "Time to first token", unit: "ms",
      series: [{ key: "ttft", label: "mean of generations started" }],
    }),
    tokens: new TimeChart({
      id: "chart-tokens", title: "Tokens per second", unit: "tokens/s",
      series: [{ key: "perGeneration", label: "per generation (mean of those finished)" },
        { key: "server", label: "whole server" }],
    }),
  };
  $("status-charts").replaceChildren(...Object.values(charts).map((chart) => chart.element));
  return charts;
}

function showProblem(nodes) {
  const problem = $("status-error");
  if (!nodes) {
    problem.hidden = true;
    problem.replaceChildren();
    return;
  }
  problem.replaceChildren(...nodes);
  problem.hidden = false;
}

async function refresh() {
  // A slow server must not get a pile of polls: the next tick starts one only once this ends.
  if (state.busy) return;
  state.busy = true;
  try {
    const [response, health] = await Promise.all([
      fetch("/metrics", { headers: authHeaders() }),
      api("GET", "/healthz"),
    ]);
    const text = await response.text();
    if (!response.ok) {
      let body = null;
      try { body = JSON.parse(text); } catch { /* not JSON */ }
      const what = { text: "Reading the server's metrics", action: "subscribe", resource: "/metrics" };
      showProblem(refusal(what, response.status, body)
        ?? [`Could not refresh: /metrics answered HTTP ${response.status}`]);
      return;
    }
    const samples = parseMetrics(text);
    const at = Date.now();
    const now = counters(samples);
    const values = {
      streams: sum(samples, "sluiceway_open_streams"),
      ws: sum(samples, "sluiceway_ws_connections"),
      generations: sum(samples, "sluiceway_llm_active_generations"),
    };
    const last = state.last;
    if (last && at > last.at) {
      const seconds = (at - last.at) / 1000;
      Object.assign(values, {
        delivered: perSecond(now, last.counters, "delivered", seconds),
        published: perSecond(now, last.counters, "published", seconds),
        server: perSecond(now, last.counters, "tokens", seconds),
        ttft: ((m) => (m === null ? null : m * 1000))(meanSince(now, last.counters, "ttftSum", "ttftCount")),
        perGeneration: meanSince(now, last.counters, "rateSum", "rateCount"),
      });
    }
    state.last = { at, counters: now };
    const charts = (state.charts ??= makeCharts());
    charts.deliveries.push(at, values);
    charts.streams.push(at, values);
    charts.ttft.push(at, values);
    charts.tokens.push(at, values);
    for (const chart of Object.values(charts)) chart.render(at);

    $("status-open-streams").textContent = fmt(values.streams);
    $("status-deliveries").textContent = fmt(values.delivered ?? 0);
    $("status-generations").textContent = fmt(values.generations);
    $("status-ws").textContent = fmt(values.ws);
    // The topics people use: /healthz counts the server's own (a generation's, a job's) apart.
    const topics = health.data?.topics;
    $("status-topics").textContent = Number.isFinite(topics) ? fmt(topics) : "—";
    $("status-topics-internal").textContent = Number.isFinite(health.data?.internal_topics)
      ? `+ ${fmt(health.data.internal_topics)} internal` : "";
    const outcomes = new Map();
    for (const s of samples.filter((s) => s.name === "sluiceway_llm_generations_total")) {
      const outcome = s.labels.outcome ?? "?";
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + s.value);
    }
    const rows = [...outcomes].map(([outcome, n]) => el("tr", {}, el("td", {}, outcome), el("td", {}, fmt(n))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 2 }, "none yet")));
    $("status-outcomes").tBodies[0].replaceChildren(...rows);
    $("status-health").textContent = health.data?.status ?? `HTTP ${health.status}`;
    $("status-backend").textContent = health.data?.backend ?? "—";
    $("status-updated").textContent = clock();
    $("status-updated").dateTime = new Date().toISOString();
    showProblem(null);
  } catch (error) {
    showProblem([`Could not refresh: ${error?.message ?? error}`]);
  } finally {
    state.busy = false;
  }
}

/** Poll while the Status view is shown (and the page visible); the charts keep their
 * samples meanwhile (a hidden stretch is a gap). */
function poll() {
  const active = !document.hidden && !$("view-status").hidden;
  if (active && !state.timer) {
    refresh();
    state.timer = setInterval(refresh, POLL_MS);
  } else if (!active && state.timer) {
    clearInterval(state.timer);
    state.timer = null;
    state.last = null; // a rate across the pause would average over it
  }
}

/** `onView`: the app's list of view listeners. */
export function setupStatus(onView) {
  onView.push(poll);
  document.addEventListener("visibilitychange", poll);
  window.addEventListener("resize", () => {
    if (state.charts && state.timer) for (const chart of Object.values(state.charts)) chart.render();
  });
}

/** Poll now (after a sign-in: the numbers may have become readable). */
export const refreshStatus = () => state.timer && refresh();
