// Sluiceway web UI: chat, topics, jobs and status, on top of /static/sluiceway.js.
// No build step and no dependencies; served by `sluiceway serve` at /. Nothing from the
// server or the model reaches the DOM as HTML: elements are built, text is text.
import { authHeaders, onAuthChange, refusal, setupSignIn, signedIn } from "./auth.js";
import { renderMarkdown } from "./markdown.js";
import { EventStream, Generation } from "./sluiceway.js";
import { refreshStatus, setupStatus } from "./status.js";
import { $, api, clock, describeError, el, fmt, nearBottom, parseJSON, store } from "./util.js";

// ---------------------------------------------------------------- helpers
/** Options of every stream: the token of the moment as a header (a function: each request,
 * reconnects included, reads it). Tabs share a stream's connection only with tabs sending the
 * same token (sluiceway.js keys the sharing by it), so signed-in tabs share too. */
const streamOptions = (options = {}) => ({ ...options, headers: authHeaders });
/** What was refused or failed, and why: plain words for a 401/403, else the server's own
 * "code: detail". `what`: see refusal() in auth.js. */
const explain = (what, status, body) => refusal(what, status, body)
  ?? [`${what.text} ${status >= 400 && status < 500 ? "was refused" : "failed"}: ${describeError(body, status)}`];

/** An event the server sent (EventStream also dispatches "error" for a failed connection). */
const isServerEvent = (ev) => typeof ev.data === "string" && "lastEventId" in ev;
/** The name the server gave an event: EventStream dispatches a server event named like one
 * of its own ("open", "close", "reconnecting", "reset") as "server:<name>". */
const serverName = (type) => (/^server:(open|close|reconnecting|reset)$/.test(type) ? type.slice(7) : type);

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
// Then "error" (a reload tries again). The token of the moment goes with every request.
const GENERATION_OPTIONS = { maxAttempts: 10, headers: authHeaders };
const chat = {
  log: $("chat-log"), input: $("chat-input"), send: $("chat-send"), stop: $("chat-stop"),
  state: $("chat-state"), resumed: $("chat-resumed"), ttft: $("chat-ttft"), rate: $("chat-rate"),
  model: $("chat-model"), error: $("chat-error"), notice: $("chat-notice"),
  messages: store.get(CHAT_KEY, []), // [{role, content, note?, model?}]
  generation: null,
};

/** The answer's text: the model's markdown, rendered as elements (never as HTML). */
function renderAnswer(node, text) {
  node.replaceChildren(renderMarkdown(text));
}

function renderMessage(message) {
  const assistant = message.role === "assistant";
  const text = el("div", { class: assistant ? "text markdown" : "text" });
  if (assistant) renderAnswer(text, message.content ?? "");
  else text.textContent = message.content;
  const who = el("span", { class: "who" }, assistant ? "Assistant" : "You");
  if (assistant && message.model) who.append(" · ", el("span", { class: "model" }, message.model));
  const item = el("li", { class: `message ${message.role}` }, who, text);
  if (message.note) item.append(el("div", { class: "meta" }, message.note));
  const stick = nearBottom(chat.log);
  chat.log.append(item);
  if (stick || message.role === "user") chat.log.scrollTop = chat.log.scrollHeight;
  return item;
}

function renderConversation() {
  chat.log.replaceChildren();
  chat.messages.forEach(renderMessage);
  const model = chat.messages.findLast?.((m) => m.model)?.model;
  showModel(model);
}

function showModel(model) {
  chat.model.textContent = model ? `Model: ${model}` : "Model —";
  chat.model.title = model ? "The model that answers, as the server said at the start of the answer" : "";
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

function showError(...nodes) {
  chat.error.replaceChildren(...nodes);
  chat.error.hidden = false;
}

/** Follow a generation (new, or resumed after a reload) into a fresh assistant bubble. */
function followGeneration(generation, { sentAt = null, resumed = false, prompt = null } = {}) {
  chat.generation = generation;
  const bubble = renderMessage({ role: "assistant", content: generation.text ?? "", model: generation.model });
  const text = bubble.querySelector(".text");
  const who = bubble.querySelector(".who");
  bubble.classList.add("streaming");
  chat.error.hidden = true;
  chat.resumed.hidden = !resumed;
  chat.ttft.textContent = "TTFT —";
  chat.rate.textContent = "— tokens/s";
  if (generation.model) showModel(generation.model);
  setChatState("streaming");

  let firstAt = null; // live figures, measured here; the server's replace them at "done"
  let tokens = 0;
  // The markdown is rendered again from the whole text at most once a frame, not per token.
  let frame = null;
  const draw = () => {
    frame = null;
    const stick = nearBottom(chat.log);
    renderAnswer(text, generation.text); // the whole text: never a repeated or lost delta
    if (stick) chat.log.scrollTop = chat.log.scrollHeight;
  };
  generation.addEventListener("start", ({ model, provider }) => {
    if (!model || who.querySelector(".model")) return;
    who.append(" · ", el("span", { class: "model", title: provider ? `provider: ${provider}` : undefined }, model));
    showModel(model);
  });
  // The server could not resume the answer exactly: sluiceway.js dropped its text and replays
  // it from the start; show it anew (the tokens come again).
  generation.addEventListener("reset", () => {
    if (frame !== null) cancelAnimationFrame(frame);
    frame = null;
    renderAnswer(text, generation.text);
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
    frame ??= requestAnimationFrame(draw);
    const seconds = (now - firstAt) / 1000;
    if (seconds > 0.05) chat.rate.textContent = `${fmt(tokens / seconds)} tokens/s`;
  });

  const finish = (state, note) => {
    if (chat.generation !== generation) return;
    chat.generation = null;
    chat.notice.textContent = "";
    bubble.classList.remove("streaming");
    if (frame !== null) cancelAnimationFrame(frame);
    frame = null;
    renderAnswer(text, generation.text);
    if (note) bubble.append(el("div", { class: "meta" }, note));
    chat.messages.push({ role: "assistant", content: generation.text ?? "", note, model: generation.model ?? undefined });
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
  // Stop pressed here: the user's own choice, not an error; by someone else: said so.
  generation.addEventListener("cancelled", ({ summary }) =>
    finish("cancelled", summary ? "cancelled (not from this page)" : "stopped by you"));
  generation.addEventListener("error", ({ error, message, status, body }) => {
    if ((status === 401 || status === 403) && generation.id === null && prompt !== null) {
      // Refused before it started: the question is given back, to send again once signed in.
      chat.generation = null;
      const asked = bubble.previousElementSibling;
      if (asked?.classList.contains("user")) asked.remove();
      bubble.remove();
      const last = chat.messages[chat.messages.length - 1];
      if (last?.role === "user" && last.content === prompt) chat.messages.pop();
      store.set(CHAT_KEY, chat.messages);
      if (!chat.input.value) chat.input.value = prompt;
      const what = { text: "Sending your message", action: "publish", resource: "/generations" };
      showError(...explain(what, status, body && typeof body === "object" ? body : { error, detail: message }));
      setChatState("refused");
      return;
    }
    if (status === 401 || status === 403) {
      const what = { text: "Following the answer", action: "subscribe", resource: `/generations/${generation.id}` };
      const nodes = explain(what, status, body && typeof body === "object" ? body : { error, detail: message });
      showError(...nodes);
      finish("error", "refused: sign in, then reload the page to follow it again");
      return;
    }
    const code = typeof error === "string" ? error : error?.message;
    const what = [code, message].filter(Boolean).join(": ") || "the generation failed";
    showError(`Error: ${what}`);
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
    followGeneration(Generation.start({ messages }, options), { sentAt: performance.now(), prompt: content });
  } catch (error) {
    showError(`Error: ${error?.message ?? error}`);
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
  chat.generation?.stop().catch((error) => console.warn("stop failed", error?.message));
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
    console.warn("could not resume", error?.message);
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

/** The event's own id in its topic: its part of a cursor over several topics. */
function ownId(cursor, topic) {
  if (topics.names.length === 1 || !topic) return cursor;
  return cursor.split(",")[topics.names.indexOf(topic)] ?? cursor;
}

function showEvent({ type, data, lastEventId: cursor }) {
  if (type.startsWith("sluiceway.")) return; // the hub's control events: "reset" shows them
  type = serverName(type);
  const topic = cursor ? topicOf(cursor) : undefined;
  topics.lastId.textContent = cursor || "—";
  // Each line shows the event's id in its topic; the stream's whole cursor (where a resume
  // starts) is the "Cursor" above, and the line's data-cursor.
  const id = cursor ? ownId(cursor, topic) : "";
  logLine(el("li", { class: "event", "data-id": id, "data-cursor": cursor, "data-event": type, "data-topic": topic },
    el("span", { class: "id", title: cursor !== id ? `cursor ${cursor}` : undefined }, id), " ",
    topic ? el("span", { class: "tag" }, topic) : "", topic ? " " : "",
    el("span", { class: "name" }, type), " ",
    el("span", { class: "data" }, data)));
}

function showReset({ data, detail, lastEventId }) {
  const lost = Array.isArray(detail?.topics) ? detail.topics : [];
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

/** Follow the topics typed in (or `names`), from now (or from `lastEventId`). */
function follow(names = [...new Set(topics.input.value.split(/[\s,]+/).filter(Boolean))].sort(), lastEventId = "") {
  const bad = names.find(topicError);
  if (!names.length || bad) return note("error", bad ? topicError(bad) : "enter at least one topic");
  stopFollowing();
  Object.assign(topics, { names, cursor: null, attempts: 0 });
  topics.reconnects.textContent = "0";
  const url = "/events?" + names.map((n) => `topic=${encodeURIComponent(n)}`).join("&");
  const stream = new EventStream(url, streamOptions(lastEventId ? { lastEventId } : {}));
  topics.stream = stream;
  topics.follow.textContent = "Stop following";
  topics.follow.setAttribute("aria-pressed", "true");
  setTopicStatus("connecting");
  note("info", `following ${names.join(", ")}`);

  // Events of any name: EventStream dispatches each under its own type only, so watch every
  // dispatch rather than a fixed list of names.
  const dispatch = stream.dispatchEvent.bind(stream);
  // Which topic an event is of: the part of the cursor it moved. The cursor before it may be
  // that of the hub's position event, which is not dispatched: watch every change of the id.
  let cursor = stream.lastEventId;
  Object.defineProperty(stream, "lastEventId", {
    configurable: true, enumerable: true, get: () => cursor,
    set: (value) => {
      if (value !== cursor && topics.stream === stream) topics.cursor = cursor || null;
      cursor = value;
    },
  });
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
    const body = ev.body && typeof ev.body === "object" ? ev.body : null;
    const what = { text: `Reading ${names.length > 1 ? "topics" : "topic"} ${names.map((n) => `“${n}”`).join(", ")}`,
      action: "subscribe", resource: names.map(topicPath).join(", ") };
    const plain = refusal(what, ev.status, body);
    if (plain) return note("error refused", ...plain);
    const text = body ? describeError(body, ev.status) : ev.body;
    note("error", `error ${ev.status || ""}: ${text || ev.error?.message || "connection failed"}`);
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
  const fail = (...nodes) => {
    result.className = "error";
    result.replaceChildren(...nodes);
    delete result.dataset.id;
  };
  if (topicError(topic)) return fail(topicError(topic));
  if ($("publish-json").checked) {
    data = parseJSON(data);
    if (data === null && $("publish-data").value.trim() !== "null") return fail("invalid JSON in data");
  }
  $("publish-send").disabled = true;
  const answer = await api("POST", topicPath(topic), event ? { data, event } : { data });
  $("publish-send").disabled = false;
  const what = { text: `Publishing to topic “${topic}”`, action: "publish", resource: topicPath(topic) };
  if (!answer.ok) return fail(...explain(what, answer.status, answer.data));
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
  const what = { text: `Reading the history of topic “${topic}”`, action: "subscribe", resource: topicPath(topic) };
  if (!ok) return info.replaceChildren(...explain(what, status, data));
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
  id: null, stream: null, cancelling: false,
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
  job.id = null;
  job.cancelling = false;
  job.idText.textContent = "—";
  job.progress.value = 0;
  job.percent.textContent = "0%";
  for (const node of [job.eta, job.detail, job.error, job.result]) node.replaceChildren();
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
  // A reconnect after the end gets 204: "close".
  const stream = new EventStream(eventsUrl, streamOptions());
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
    if (job.stream !== stream) return;
    if (isServerEvent(ev)) { // the job's own "error" event: {error, message, state}
      const error = payload(ev);
      job.eta.textContent = "";
      if (error.state === "cancelled") {
        // Cancelled: by the user here (their choice, no error), or by someone else.
        setJobState("cancelled");
        job.result.textContent = job.cancelling ? "Cancelled at your request." : `Cancelled elsewhere: ${describeError(error)}`;
      } else {
        setJobState("failed");
        job.error.textContent = describeError(error);
      }
      return end();
    }
    if (!ev.fatal) return; // EventStream reconnects by itself
    if (ev.status === 404) store.remove(JOB_KEY);
    if (ev.status === 404 && restored) { // finished long ago and forgotten: nothing to show
      resetJob();
      return setJobState("—");
    }
    const what = { text: `Following job ${id}`, action: "subscribe", resource: `/jobs/${id}` };
    job.error.replaceChildren(...explain(what, ev.status, typeof ev.body === "object" ? ev.body : null));
    setJobState(ev.status === 401 || ev.status === 403 ? "refused" : "failed");
  });
}

$("job-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  resetJob();
  setJobState("starting");
  const params = { table: $("job-table").value.trim(), format: $("job-format").value };
  const { ok, status, data } = await api("POST", "/jobs", { kind: "export", params });
  if (!ok) {
    // Refused before it existed: no job, no id (not the previous job's), nothing "failed".
    store.remove(JOB_KEY);
    setJobState("refused");
    const table = params.table ? `“${params.table}”` : "(no table named)";
    const what = { text: `Starting an export of table ${table}`, action: "publish", resource: "/jobs" };
    if (status === 403 && data?.detail?.includes?.("subscribe")) what.action = "subscribe";
    if (what.action === "subscribe") what.resource = `/exports/${params.table}`;
    job.error.replaceChildren(...explain(what, status, data));
    return;
  }
  followJob(data.id, data.events ?? `/jobs/${encodeURIComponent(data.id)}/events`);
});

job.cancel.addEventListener("click", async () => {
  job.cancel.disabled = true;
  job.cancelling = true;
  // The job's stream then ends with its "error" event, state "cancelled".
  const { ok, status, data } = await api("DELETE", `/jobs/${encodeURIComponent(job.id)}`);
  if (ok) return;
  job.cancelling = false;
  job.cancel.disabled = false;
  const what = { text: `Cancelling job ${job.id}`, action: "publish", resource: `/jobs/${job.id}` };
  job.error.replaceChildren(...explain(what, status, data));
});

// Signed in, the file is fetched with the token (a plain link cannot send a header) and
// saved from memory; without a token the link works as it is.
job.download.addEventListener("click", async (ev) => {
  if (!signedIn() || !job.download.href || job.download.dataset.fetching) return;
  ev.preventDefault();
  const url = job.download.getAttribute("href");
  job.download.dataset.fetching = "1";
  try {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { /* not JSON */ }
      const what = { text: `Downloading ${job.download.download}`, action: "subscribe", resource: url };
      job.error.replaceChildren(...explain(what, response.status, body));
      return;
    }
    const blob = URL.createObjectURL(await response.blob());
    const save = el("a", { href: blob, download: job.download.download, hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(blob), 60_000);
  } catch (error) {
    job.error.textContent = `Could not download: ${error?.message ?? error}`;
  } finally {
    delete job.download.dataset.fetching;
  }
});

const savedJob = store.get(JOB_KEY, null);
if (savedJob?.id) followJob(savedJob.id, savedJob.events ?? `/jobs/${encodeURIComponent(savedJob.id)}/events`, true);

// ---------------------------------------------------------------- sign-in
setupSignIn();
onAuthChange((now) => {
  // Streams opened with the previous token (or none) are opened again with the new one.
  if (topics.stream) {
    follow(topics.names, topics.stream.lastEventId);
    note("info", now ? "signed in: following again with the token" : "signed out: following again without a token");
  }
  refreshStatus();
});

// ---------------------------------------------------------------- status
setupStatus(onView);

// ---------------------------------------------------------------- start
selectView(location.hash.slice(1));
startChat();
