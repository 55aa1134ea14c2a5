// Signing in with an access token: the token is kept in this tab's sessionStorage only (gone
// when the tab closes, or at "Sign out"), sent as an `Authorization: Bearer` header, never in
// a URL, and never logged or shown. Refusals (401/403) are put in plain words: what was
// refused, and why.

const KEY = "sluiceway.ui.token";
/** A request the server answers for any valid token and refuses (401) for a bad one: the
 * jobs the caller may read (an empty list is an answer too). */
const PROBE = "/jobs";

const listeners = new Set();
let token = readToken();

function readToken() {
  try { return sessionStorage.getItem(KEY) || null; } catch { return null; }
}

function setToken(value) {
  token = value || null;
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage disabled: kept in this page only */ }
  showState();
  for (const listener of listeners) listener(token !== null);
}

/** The headers of every request and stream of the UI (a function: each request reads the
 * token of that moment). */
export const authHeaders = () => (token ? { authorization: `Bearer ${token}` } : {});
export const signedIn = () => token !== null;
/** Call `listener(signedIn)` after each sign-in and sign-out. */
export const onAuthChange = (listener) => listeners.add(listener);

/** The claims of a JWT, read (not verified: the server does that) to say whose it is and
 * until when; null for anything else (the publish key, say). */
export function claimsOf(value = token) {
  const part = typeof value === "string" ? value.split(".")[1] : undefined;
  if (!part) return null;
  try {
    const base64 = part.replaceAll("-", "+").replaceAll("_", "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

const expiry = (claims) => (Number.isFinite(claims?.exp) ? new Date(claims.exp * 1000) : null);
const when = (date) => date.toLocaleString("en-GB", { hour12: false, dateStyle: "short", timeStyle: "medium" });

/**
 * Plain words for a refusal, or null when `status` is not one (then the caller shows the
 * server's error as it is). `what`: {text: "Publishing to topic “news”", action: "publish",
 * resource: "/topics/news"}. Returns nodes for an element: the sentence, and a "Sign in"
 * button where a token (or another one) would help.
 */
export function refusal(what, status, body) {
  if (status !== 401 && status !== 403) return null;
  const code = typeof body?.error === "string" ? body.error : "";
  const detail = typeof body?.detail === "string" ? body.detail : typeof body?.message === "string" ? body.message : "";
  let why;
  let offer = false;
  if (status === 401 && (code === "invalid_token" || token)) {
    const expired = expiry(claimsOf());
    why = expired && expired.getTime() <= Date.now()
      ? `your token expired (${when(expired)}). Sign in with a fresh one.`
      : "the server did not accept your token (not signed with its key, for another audience "
        + "or issuer, not valid yet, or expired). Sign in with another one.";
    offer = true;
  } else if (status === 401) {
    why = `this server requires an access token to ${what.action ?? "do that"}, and you are not signed in.`;
    offer = true;
  } else if (code === "insufficient_scope") {
    why = `your token does not grant “${what.action}” on ${what.resource}. Ask for a token that does.`;
    offer = true;
  } else {
    why = detail || code || "forbidden.";
  }
  const nodes = [`${what.text} was refused: ${why}`];
  if (detail && code) nodes.push(` (The server said: ${code}: ${detail}.)`);
  if (offer) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link sign-in-offer";
    button.textContent = signedIn() ? "Sign in with another token" : "Sign in with a token";
    button.addEventListener("click", openSignIn);
    nodes.push(" ", button);
  }
  return nodes;
}

// ---------------------------------------------------------------- the sign-in control
const byId = (id) => document.getElementById(id);
let opener = null;

export function openSignIn(ev) {
  const dialog = byId("auth-dialog");
  if (!dialog || dialog.open) return;
  opener = ev?.currentTarget instanceof HTMLElement ? ev.currentTarget : document.activeElement;
  byId("auth-token").value = "";
  byId("auth-error").textContent = "";
  dialog.showModal();
  byId("auth-token").focus();
}

function showState() {
  const state = byId("auth-state");
  if (!state) return;
  const claims = claimsOf();
  const expires = expiry(claims);
  const expired = expires && expires.getTime() <= Date.now();
  const who = typeof claims?.sub === "string" && claims.sub ? ` as ${claims.sub}` : claims ? "" : " with a key";
  state.textContent = !token ? "Not signed in"
    : `Signed in${who}` + (expires ? (expired ? " · token expired" : ` · until ${when(expires)}`) : "");
  state.dataset.state = !token ? "anonymous" : expired ? "expired" : "signed-in";
  byId("auth-open").textContent = token ? "Change token" : "Sign in with a token";
  byId("auth-signout").hidden = !token;
}

/** Why a candidate is not a token at all (checked before it is sent anywhere), or null. */
function malformed(value) {
  if (!value) return "Paste a token first.";
  // A header value: visible ASCII (a JWT is base64url and dots; a key is plain text).
  if (!/^[\x21-\x7e]+$/.test(value)) return "That is not a token: it has spaces, line breaks or other characters a token never has.";
  if (value.length > 16384) return "That is not a token: it is far too long.";
  return null;
}

async function signIn(ev) {
  ev.preventDefault();
  const input = byId("auth-token");
  const error = byId("auth-error");
  const submit = byId("auth-submit");
  const value = input.value.trim().replace(/^Bearer\s+/i, "");
  error.textContent = malformed(value) ?? "";
  if (error.textContent) return input.focus();
  submit.disabled = true;
  error.textContent = "";
  let status = 0;
  let body = null;
  try {
    const response = await fetch(PROBE, { headers: { accept: "application/json", authorization: `Bearer ${value}` } });
    status = response.status;
    body = await response.json().catch(() => null);
  } catch (failure) {
    error.textContent = `Could not reach the server to check the token: ${failure?.message ?? failure}`;
    submit.disabled = false;
    return;
  }
  submit.disabled = false;
  if (status === 401) {
    const expires = expiry(claimsOf(value));
    error.textContent = expires && expires.getTime() <= Date.now()
      ? `The server refused this token: it expired (${when(expires)}).`
      : `The server refused this token: ${body?.detail ?? "it is not valid"} (not signed with its key, `
        + "for another audience or issuer, not valid yet, or expired).";
    input.select();
    return;
  }
  if (status >= 500 || status === 0) {
    error.textContent = `The server could not check the token (HTTP ${status}); try again.`;
    return;
  }
  setToken(value); // 2xx, or 403/404: a valid token, whatever it grants
  byId("auth-dialog").close();
}

function signOut() {
  setToken(null);
  byId("auth-open").focus();
}

/** Wire the header's controls and the dialog (index.html). */
export function setupSignIn() {
  byId("auth-open").addEventListener("click", openSignIn);
  byId("auth-signout").addEventListener("click", signOut);
  byId("auth-form").addEventListener("submit", signIn);
  byId("auth-cancel").addEventListener("click", () => byId("auth-dialog").close());
  byId("auth-dialog").addEventListener("close", () => {
    byId("auth-token").value = ""; // not left in the page
    if (opener?.isConnected) opener.focus();
    opener = null;
  });
  showState();
}
