// Sluiceway web UI: chat, topics, jobs and status, on top of /static/sluiceway.js.
// No build step and no dependencies; served by `sluiceway serve` at /.
import { EventStream, Generation } from "/static/sluiceway.js";

// ---------------------------------------------------------------- helpers
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
};
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const fmt = (n) => (!Number.isFinite(n) ? "—" : (Math.abs(n) >= 100 ? integer : decimal).format(n));
const clock = (date = new Date()) => date.toLocaleTimeString("en-GB", { hour12: false });
const parseJSON = (text) => {
  try { return JSON.parse(text); } catch { return null; }
};
const store = {
  get: (key, fallback) => {
    try { return JSON.parse(sessionStorage.getItem(key)) ?? fallback; } catch { return fallback; }
  },
  set: (key, value) => {
    try { sessionStorage.setItem(key, JSON.stringify(value)); } catch { /* full or disabled */ }
  },
  remove: (key) => {
    try { sessionStorage.removeItem(key); } catch { /* disabled */ }
  },
};

/** fetch with a JSON body and a JSON answer: {ok, status, data}; never throws. */
async function api(method, url, body) {
  try {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(url, { method, headers, body: body && JSON.stringify(body) });
    const text = await response.text();
    const data = text ? parseJSON(text) ?? { error: `http_${response.status}`, detail: text } : null;
    return { ok: response.ok, status: response.status, data };
  } catch (error) {
    return { ok: false, status: 0, data: { error: "network_error", detail: String(error?.message ?? error) } };
  }
}

/** "code: what was wrong" from the server's {error, detail} (or a job's {error, message}). */
function describeError(data, status) {
  if (!data) return `HTTP ${status}`;
  const detail = typeof data.detail === "string" || !data.detail ? data.detail : JSON.stringify(data.detail);
  return [data.error ?? `HTTP ${status}`, data.message ?? detail].filter(Boolean).join(": ");
}

/** An event the server sent (EventStream also dispatches "error" for a failed connection). */
const isServerEvent = (ev) => typeof ev.data === "string" && "lastEventId" in ev;
/** The name the server gave an event: EventStream dispatches a server event named like one
 * of its own ("open", "close", "reconnecting", "reset") as "server:<name>". */
const serverName = (type) => (/^server:(open|close|reconnecting|reset)$/.test(type) ? type.slice(7) : type);
/** Whether a scrolled list shows its end (new lines then keep it there). */
const nearBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 48;

// ---------------------------------------------------------------- tabs and hash routing
const VIEWS = ["chat", "topics", "jobs", "status"];
const tabs = VIEWS.map((name) => $(`tab-${name}`));
const onView = [];

function selectView(name, { focus = false } = {}) {
  if (!VIEWS.includes(name)) name = "chat";
  VIEWS.forEach((view, i) => {
    const selected = view === name;
    tabs[i].setAttribute("aria-selected", String(selected));
    tabs[i].tabIndex = selected ? 0 : -1;
    $(`view-${view}`).hidden = !selected;
  });
  if (focus) tabs[VIEWS.indexOf(name)].focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  onView.forEach((fn) => fn(name));
}

tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectView(VIEWS[i]));
  tab.addEventListener("keydown", (ev) => {
    const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: VIEWS.length - 1 };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    selectView(VIEWS[(moves[ev.key] + VIEWS.length) % VIEWS.length], { focus: true });
  });
});
window.addEventListener("hashchange", () => selectView(location.hash.slice(1)));

// ---------------------------------------------------------------- chat
const CHAT_KEY = "sluiceway.ui.chat"; // the conversation; the generation itself: sluiceway.js
const GENERATION_OPTIONS = { maxAttempts: 10 }; // then "error" (a reload tries again)
const chat = {
  log: $("chat-log"), input: $("chat-input"), send: $("chat-send"), stop: $("chat-stop"),
  state: $("chat-state"), resumed: $("chat-resumed"), ttft: $("chat-ttft"), rate: $("chat-rate"),
  error: $("chat-error"), notice: $("chat-notice"),
  messages: store.get(CHAT_KEY, []), // [{role, content, note?}]
  generation: null,
};

function renderMessage(message) {
  const item = el("li", { class: `message ${message.role}` },
    el("span", { class: "who" }, message.role === "user" ? "You" : "Assistant"),
    el("div", { class: "text" }, message.content));
  if (message.note) item.append(el("div", { class: "meta" }, message.note));
  const stick = nearBottom(chat.log);
  chat.log.append(item);
  if (stick || message.role === "user") chat.log.scrollTop = chat.log.scrollHeight;
  return item;
}

function renderConversation() {
  chat.log.replaceChildren();
  chat.messages.forEach(renderMessage);
}

function setChatState(state) {
  chat.state.textContent = state;
  chat.state.dataset.state = state;
  // While tokens stream in, screen readers wait for the answer instead of re-reading it on
  // every token; "false" again once it is whole.
  chat.log.setAttribute("aria-busy", String(state === "streaming"));
  chat.stop.disabled = state !== "streaming";
  chat.send.disabled = state === "streaming";
}

function showError(text) {
  chat.error.textContent = `Error: ${text}`;
  chat.error.hidden = false;
}

/** Follow a generation (new, or resumed after a reload) into a fresh assistant bubble. */
function followGeneration(generation, { sentAt = null, resumed = false } = {}) {
  chat.generation = generation;
  const bubble = renderMessage({ role: "assistant", content: generation.text ?? "" });
  const text = bubble.querySelector(".text");
  bubble.classList.add("streaming");
  chat.error.hidden = true;
  chat.resumed.hidden = !resumed;
  chat.ttft.textContent = "TTFT —";
  chat.rate.textContent = "— tokens/s";
  setChatState("streaming");

  let firstAt = null; // live figures, measured here; the server's replace them at "done"
  let tokens = 0;
  // The server could not resume the answer exactly: sluiceway.js dropped its text and replays
  // it from the start; show it anew (the tokens come again).
  generation.addEventListener("reset", () => {
    text.textContent = generation.text;
    firstAt = null;
    tokens = 0;
    sentAt = null; // a TTFT measured now would not be the answer's
    chat.notice.textContent = "Some of the answer was lost on the way: replaying it from its start";
  });
  generation.addEventListener("token", () => {
    const now = performance.now();
    if (firstAt === null) {
      firstAt = now;
      if (sentAt !== null) chat.ttft.textContent = `TTFT ${fmt(now - sentAt)} ms`;
    }
    tokens += 1;
    if (chat.notice.textContent) chat.notice.textContent = "";
    const stick = nearBottom(chat.log);
    text.textContent = generation.text; // the whole text: never a repeated or lost delta
    if (stick) chat.log.scrollTop = chat.log.scrollHeight;
    const seconds = (now - firstAt) / 1000;
    if (seconds > 0.05) chat.rate.textContent = `${fmt(tokens / seconds)} tokens/s`;
  });

  const finish = (state, note) => {
    if (chat.generation !== generation) return;
    chat.generation = null;
    chat.notice.textContent = "";
    bubble.classList.remove("streaming");
    text.textContent = generation.text;
    if (note) bubble.append(el("div", { class: "meta" }, note));
    chat.messages.push({ role: "assistant", content: generation.text ?? "", note });
    store.set(CHAT_KEY, chat.messages);
    setChatState(state);
    const focused = document.activeElement;
    if (!$("view-chat").hidden && [document.body, chat.stop, chat.send].includes(focused)) chat.input.focus();
  };
  generation.addEventListener("done", ({ summary = {} }) => {
    const s = summary ?? {};
    if (Number.isFinite(s.ttft_ms)) chat.ttft.textContent = `TTFT ${fmt(s.ttft_ms)} ms`;
    if (Number.isFinite(s.tokens_per_s)) chat.rate.textContent = `${fmt(s.tokens_per_s)} tokens/s`;
    const reason = s.finish_reason && s.finish_reason !== "stop" ? ` · finish: ${s.finish_reason}` : "";
    finish("done", `TTFT ${fmt(s.ttft_ms)} ms · ${fmt(s.tokens_per_s)} tokens/s · `
      + `${fmt(s.output_tokens)} tokens${reason}`);
  });
  generation.addEventListener("cancelled", () => finish("cancelled", "stopped"));
  generation.addEventListener("error", ({ error, message }) => {
    const code = typeof error === "string" ? error : error?.message;
    const what = [code, message].filter(Boolean).join(": ") || "the generation failed";
    showError(what);
    finish("error", `error: ${what}`);
  });
  generation.addEventListener("reconnecting", ({ attempt, delay, error }) => {
    chat.notice.textContent = `Reconnecting (attempt ${attempt}, in ${fmt(delay / 1000)} s)`
      + (error?.message ? `: ${error.message}` : "");
  });
}

function sendChat() {
  const content = chat.input.value.trim();
  if (!content || chat.generation) return;
  chat.input.value = "";
  chat.messages.push({ role: "user", content });
  store.set(CHAT_KEY, chat.messages);
  renderMessage({ role: "user", content });
  const messages = chat.messages.filter((m) => m.content).map(({ role, content }) => ({ role, content }));
  const options = { ...GENERATION_OPTIONS, meta: { messages: [...chat.messages] } };
  try {
    followGeneration(Generation.start({ messages }, options), { sentAt: performance.now() });
  } catch (error) {
    showError(error?.message ?? error);
    setChatState("error");
  }
}

$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendChat();
});
chat.input.addEventListener("keydown", (ev) => {
  if (ev.key !== "Enter" || ev.shiftKey || ev.isComposing) return;
  ev.preventDefault();
  sendChat();
});
chat.stop.addEventListener("click", () => {
  chat.stop.disabled = true;
  chat.generation?.stop().catch((error) => console.warn("stop failed", error));
});
$("chat-clear").addEventListener("click", () => {
  if (chat.generation) return;
  chat.messages = [];
  store.remove(CHAT_KEY);
  // An unfinished generation kept for a reload (after an error) belongs to the old chat.
  Generation.forget(GENERATION_OPTIONS);
  renderConversation();
  chat.resumed.hidden = chat.error.hidden = true;
  setChatState("idle");
  chat.input.focus();
});

function startChat() {
  let resumed = null;
  try {
    resumed = Generation.resume(GENERATION_OPTIONS);
  } catch (error) {
    console.warn("could not resume", error);
  }
  // A reload mid-answer: the conversation as it was sent, then the answer so far, continued.
  if (Array.isArray(resumed?.meta?.messages)) chat.messages = resumed.meta.messages;
  renderConversation();
  if (resumed) followGeneration(resumed, { resumed: true });
  else setChatState("idle");
}

// ---------------------------------------------------------------- topics
const TOPIC_RE = /^[A-Za-z0-9_.:@~+=$#!,-]{1,200}$/;
const MAX_LOG = 500;
const topics = {
  input: $("topics-input"), follow: $("topics-follow"), status: $("topics-status"),
  reconnects: $("topics-reconnects"), log: $("topics-log"), lastId: $("topics-last-id"),
  stream: null, names: [], cursor: null, attempts: 0,
};
const topicPath = (topic) => `/topics/${encodeURIComponent(topic)}`;
const topicError = (topic) => (TOPIC_RE.test(topic) ? null
  : `invalid_topic: invalid topic name '${topic}': use 1-200 of A-Z a-z 0-9 _ . : @ ~ + = $ # ! , -`);

function logLine(li) {
  const stick = nearBottom(topics.log);
  topics.log.append(li);
  while (topics.log.children.length > MAX_LOG) topics.log.firstElementChild.remove();
  if (stick) topics.log.scrollTop = topics.log.scrollHeight;
}
const note = (cls, ...text) => logLine(el("li", { class: cls }, el("time", {}, clock()), " ", ...text));

/** The followed topic an event belongs to: the one position of the cursor that moved. */
function topicOf(id) {
  const { names, cursor } = topics;
  if (names.length === 1) return names[0];
  const parts = id.split(",");
  if (parts.length !== names.length) return undefined;
  const before = cursor?.split(",");
  if (!before) { // the first event: only a topic with events has an offset above 0
    const busy = parts.flatMap((part, i) => (/-0$/.test(part) ? [] : [names[i]]));
    return busy.length === 1 ? busy[0] : undefined;
  }
  const moved = parts.flatMap((part, i) => (part === before[i] ? [] : [names[i]]));
  return moved.length === 1 ? moved[0] : undefined;
}

function setTopicStatus(state) {
  topics.status.textContent = state;
  topics.status.dataset.state = state;
}

function showEvent({ type, data, lastEventId: id }) {
  if (type.startsWith("sluiceway.")) return; // the hub's control events: "reset" shows them
  type = serverName(type);
  const topic = id ? topicOf(id) : undefined;
  if (id) topics.cursor = id;
  topics.lastId.textContent = id || "—";
  logLine(el("li", { class: "event", "data-id": id, "data-event": type, "data-topic": topic },
    el("span", { class: "id" }, id), " ",
    topic ? el("span", { class: "tag" }, topic) : "", topic ? " " : "",
    el("span", { class: "name" }, type), " ",
    el("span", { class: "data" }, data)));
}

function showReset({ data, detail, lastEventId }) {
  const lost = Array.isArray(detail?.topics) ? detail.topics : [];
  if (lastEventId) topics.cursor = lastEventId;
  const text = lost.length
    ? lost.map((t) => `topic ${t.topic} lost events (${t.reason}): requested ${t.requested || "—"}, `
      + `earliest ${t.earliest || "—"}, resumed at ${t.resumed_at || "—"}`).join("; ")
    : `events were lost: ${data}`;
  const names = lost.map((t) => t.topic).join(" ") || undefined;
  logLine(el("li", { class: "reset", "data-topic": names, "data-id": lastEventId || undefined },
    el("time", {}, clock()), " ", el("strong", {}, "Reset: "), text));
}

function stopFollowing() {
  const stream = topics.stream;
  topics.stream = null; // first: its "close" event is then not ours to handle
  stream?.close();
  topics.follow.textContent = "Follow";
  topics.follow.setAttribute("aria-pressed", "false");
  setTopicStatus("closed");
}

function follow() {
  const names = [...new Set(topics.input.value.split(/[\s,]+/).filter(Boolean))].sort();
  const bad = names.find(topicError);
  if (!names.length || bad) return note("error", bad ? topicError(bad) : "enter at least one topic");
  stopFollowing();
  Object.assign(topics, { names, cursor: null, attempts: 0 });
  topics.reconnects.textContent = "0";
  const stream = new EventStream("/events?" + names.map((n) => `topic=${encodeURIComponent(n)}`).join("&"));
  topics.stream = stream;
  topics.follow.textContent = "Stop following";
  topics.follow.setAttribute("aria-pressed", "true");
  setTopicStatus("connecting");
  note("info", `following ${names.join(", ")}`);

  // Events of any name: EventStream dispatches each under its own type only, so watch every
  // dispatch rather than a fixed list of names.
  const dispatch = stream.dispatchEvent.bind(stream);
  stream.dispatchEvent = (ev) => {
    if (topics.stream === stream && ev.type !== "reset" && isServerEvent(ev)) showEvent(ev);
    return dispatch(ev);
  };
  const on = (type, fn) => stream.addEventListener(type, (ev) => topics.stream === stream && fn(ev));
  on("open", (ev) => {
    setTopicStatus("open");
    if (ev.reconnected) note("info", `reconnected, resuming after ${stream.lastEventId || "the start"}`);
  });
  on("reset", showReset);
  on("reconnecting", ({ attempt, delay, error }) => {
    topics.attempts += 1;
    topics.reconnects.textContent = String(topics.attempts);
    setTopicStatus("reconnecting");
    const why = error ? ` (${error.message ?? error})` : "";
    note("reconnect", `reconnecting, attempt ${attempt}, in ${fmt(delay / 1000)} s${why}`);
  });
  on("error", (ev) => {
    // A named "error" event is shown above; a passing failure by the "reconnecting" line.
    if (isServerEvent(ev) || !ev.fatal) return;
    const body = ev.body && typeof ev.body === "object" ? describeError(ev.body, ev.status) : ev.body;
    note("error", `error ${ev.status || ""}: ${body || ev.error?.message || "connection failed"}`);
  });
  on("close", (ev) => {
    stopFollowing();
    note("info", `closed (${ev.reason})`);
  });
}

topics.follow.addEventListener("click", () => {
  if (!topics.stream) return follow();
  stopFollowing();
  note("info", "stopped following");
});
$("follow-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  follow();
});
$("topics-clear").addEventListener("click", () => topics.log.replaceChildren());

$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const result = $("publish-result");
  const topic = $("publish-topic").value.trim();
  const event = $("publish-event").value.trim();
  let data = $("publish-data").value;
  const fail = (text) => {
    result.className = "error";
    result.textContent = text;
  };
  if (topicError(topic)) return fail(topicError(topic));
  if ($("publish-json").checked) {
    data = parseJSON(data);
    if (data === null && $("publish-data").value.trim() !== "null") return fail("invalid JSON in data");
  }
  $("publish-send").disabled = true;
  const answer = await api("POST", topicPath(topic), event ? { data, event } : { data });
  $("publish-send").disabled = false;
  if (!answer.ok) return fail(describeError(answer.data, answer.status));
  result.className = "ok";
  result.textContent = `published ${answer.data.id}`;
  result.dataset.id = answer.data.id;
});

$("history-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const topic = $("history-topic").value.trim();
  const list = $("history-list");
  const info = $("history-info");
  list.replaceChildren();
  info.className = "error";
  info.textContent = "";
  if (topicError(topic)) return (info.textContent = topicError(topic));
  const { ok, status, data } = await api("GET", `${topicPath(topic)}/history?limit=50`);
  if (!ok) return (info.textContent = describeError(data, status));
  info.className = "hint";
  info.textContent = `${data.events.length} event(s) · earliest ${data.earliest ?? "—"}`
    + ` · latest ${data.latest ?? "—"}`;
  for (const event of data.events) {
    const when = new Date(event.published_at * 1000);
    list.append(el("li", { class: "event", "data-id": event.id, "data-event": event.event || "message" },
      el("span", { class: "id" }, event.id), " ",
      el("span", { class: "name" }, event.event || "message"), " ",
      el("span", { class: "data" }, typeof event.data === "string" ? event.data : JSON.stringify(event.data)),
      isNaN(when) ? "" : el("time", { dateTime: when.toISOString() }, ` ${clock(when)}`)));
  }
  if (!data.events.length) list.append(el("li", { class: "empty" }, "no events"));
});

// ---------------------------------------------------------------- jobs
const JOB_KEY = "sluiceway.ui.job"; // the job followed, so that a reload follows it again
const job = {
  start: $("job-start"), cancel: $("job-cancel"), state: $("job-state"), progress: $("job-progress"),
  percent: $("job-percent"), eta: $("job-eta"), detail: $("job-detail"), error: $("job-error"),
  download: $("job-download"), result: $("job-result"), idText: $("job-id"),
  id: null, stream: null,
};

function setJobState(state) {
  job.state.textContent = state;
  job.state.dataset.state = state;
  job.cancel.disabled = state !== "running";
  job.start.disabled = state === "running" || state === "starting";
}

function resetJob() {
  const stream = job.stream;
  job.stream = null;
  stream?.close();
  job.progress.value = 0;
  job.percent.textContent = "0%";
  for (const node of [job.eta, job.detail, job.error, job.result]) node.textContent = "";
  job.download.hidden = true;
  job.download.removeAttribute("href");
}

function showProgress({ done, total, percent, eta_s: eta, rate }) {
  const pct = Number.isFinite(percent) ? percent : total ? (100 * done) / total : 0;
  job.progress.value = Math.max(0, Math.min(100, pct));
  job.progress.textContent = job.percent.textContent = `${fmt(pct)}%`;
  job.detail.textContent = `${fmt(done)} / ${total == null ? "?" : fmt(total)} rows`
    + (Number.isFinite(rate) ? ` · ${fmt(rate)} rows/s` : "");
  const left = eta < 60 ? `${fmt(eta)} s` : `${Math.floor(eta / 60)} min ${Math.round(eta % 60)} s`;
  job.eta.textContent = Number.isFinite(eta) ? `ETA ${left}` : "ETA —";
}

function showResult(result) {
  setJobState("completed");
  job.progress.value = 100;
  job.percent.textContent = "100%";
  job.eta.textContent = "done";
  const name = result.download ? result.download.split("/").pop() : "";
  if (name) {
    job.download.href = result.download;
    job.download.download = job.download.title = name;
    job.download.textContent = `Download ${name.split(".").pop().toUpperCase()}`;
    job.download.hidden = false;
  }
  job.result.textContent = [name, Number.isFinite(result.rows) ? `${fmt(result.rows)} rows` : "",
    result.sha256 ? `SHA-256 ${result.sha256}` : ""].filter(Boolean).join(" · ");
}

function followJob(id, eventsUrl, restored = false) {
  Object.assign(job, { id });
  job.idText.textContent = id;
  store.set(JOB_KEY, { id, events: eventsUrl });
  setJobState("running");
  const stream = new EventStream(eventsUrl); // a reconnect after the end gets 204: "close"
  job.stream = stream;
  const payload = (ev) => parseJSON(ev.data) ?? {};
  const end = () => {
    if (job.stream === stream) job.stream = null;
    stream.close();
  };
  stream.addEventListener("progress", (ev) => showProgress(payload(ev)));
  stream.addEventListener("result", (ev) => {
    showResult(payload(ev));
    end();
  });
  stream.addEventListener("error", (ev) => {
    if (isServerEvent(ev)) { // the job's own "error" event: {error, message, state}
      const error = payload(ev);
      setJobState(error.state === "cancelled" ? "cancelled" : "failed");
      job.eta.textContent = "";
      job.error.textContent = describeError(error);
      return end();
    }
    if (!ev.fatal) return; // EventStream reconnects by itself
    if (ev.status === 404) store.remove(JOB_KEY);
    if (ev.status === 404 && restored) { // finished long ago and forgotten: nothing to show
      resetJob();
      job.idText.textContent = "—";
      return setJobState("—");
    }
    job.error.textContent = describeError(typeof ev.body === "object" ? ev.body : null, ev.status);
    setJobState("failed");
  });
}

$("job-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  resetJob();
  setJobState("starting");
  const params = { table: $("job-table").value.trim(), format: $("job-format").value };
  const { ok, status, data } = await api("POST", "/jobs", { kind: "export", params });
  if (!ok) {
    setJobState("failed");
    job.error.textContent = describeError(data, status);
    return;
  }
  followJob(data.id, data.events ?? `/jobs/${encodeURIComponent(data.id)}/events`);
});

job.cancel.addEventListener("click", async () => {
  job.cancel.disabled = true;
  // The job's stream then ends with its "error" event, state "cancelled".
  const { ok, status, data } = await api("DELETE", `/jobs/${encodeURIComponent(job.id)}`);
  if (!ok) job.error.textContent = describeError(data, status);
});

const savedJob = store.get(JOB_KEY, null);
if (savedJob?.id) followJob(savedJob.id, savedJob.events ?? `/jobs/${encodeURIComponent(savedJob.id)}/events`, true);

// ---------------------------------------------------------------- status
const status = { timer: null, last: null, busy: false };

/** Prometheus text format → [{name, labels, value}] */
function parseMetrics(text) {
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
const sum = (samples, name) => samples.reduce((n, s) => (s.name === name ? n + s.value : n), 0);

async function refreshStatus() {
  // A slow server must not get a pile of polls: the next tick starts one only once this ends.
  if (status.busy) return;
  status.busy = true;
  const problem = $("status-error");
  try {
    const [text, health] = await Promise.all([
      fetch("/metrics").then((r) => (r.ok ? r.text() : Promise.reject(new Error(`/metrics: HTTP ${r.status}`)))),
      api("GET", "/healthz"),
    ]);
    const samples = parseMetrics(text);
    const now = performance.now();
    const delivered = sum(samples, "sluiceway_events_delivered_total")
      + sum(samples, "sluiceway_ws_publications_delivered_total");
    const last = status.last;
    const rate = last ? Math.max(0, (delivered - last.delivered) / ((now - last.at) / 1000)) : 0;
    status.last = { at: now, delivered };
    $("status-open-streams").textContent = fmt(sum(samples, "sluiceway_open_streams"));
    $("status-deliveries").textContent = fmt(rate);
    $("status-generations").textContent = fmt(sum(samples, "sluiceway_llm_active_generations"));
    $("status-topics").textContent = fmt(sum(samples, "sluiceway_topics"));
    $("status-ws").textContent = fmt(sum(samples, "sluiceway_ws_connections"));
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
    problem.hidden = true;
  } catch (error) {
    problem.textContent = `Could not refresh: ${error?.message ?? error}`;
    problem.hidden = false;
  } finally {
    status.busy = false;
  }
}

/** Poll every second while the Status view is shown (and the page visible). */
function pollStatus() {
  const active = !document.hidden && !$("view-status").hidden;
  if (active && !status.timer) {
    status.last = null;
    refreshStatus();
    status.timer = setInterval(refreshStatus, 1000);
  } else if (!active && status.timer) {
    clearInterval(status.timer);
    status.timer = null;
  }
}
onView.push(pollStatus);
document.addEventListener("visibilitychange", pollStatus);

// ---------------------------------------------------------------- start
selectView(location.hash.slice(1));
startChat();
