// Small helpers shared by the web UI's views: DOM building (never HTML strings), number and
// time formatting, the tab's storage, and fetch with the signed-in token.
import { authHeaders } from "./auth.js";

export const $ = (id) => document.getElementById(id);

/** A new element: attributes (class, data-*, aria-*, or properties), then its children
 * (nodes or strings, which become text). */
export const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== undefined && child !== null));
  return node;
};

const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
export const fmt = (n) => (!Number.isFinite(n) ? "—" : (Math.abs(n) >= 100 ? integer : decimal).format(n));
export const clock = (date = new Date()) => date.toLocaleTimeString("en-GB", { hour12: false });
export const parseJSON = (text) => {
  try { return JSON.parse(text); } catch { return null; }
};

/** JSON values in the tab's sessionStorage (gone when the tab closes). */
export const store = {
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

/** fetch with a JSON body and a JSON answer, sending the signed-in token (if any) as an
 * Authorization header: {ok, status, data}; never throws. */
export async function api(method, url, body, { headers: extra = {} } = {}) {
  try {
    const headers = { accept: "application/json", ...authHeaders(), ...extra };
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
export function describeError(data, status) {
  if (!data) return `HTTP ${status}`;
  const detail = typeof data.detail === "string" || !data.detail ? data.detail : JSON.stringify(data.detail);
  return [data.error ?? `HTTP ${status}`, data.message ?? detail].filter(Boolean).join(": ");
}

/** Whether a scrolled list shows its end (new lines then keep it there). */
export const nearBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 48;
