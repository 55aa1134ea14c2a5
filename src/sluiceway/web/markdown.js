// Markdown from a model, rendered safely: the text is parsed here into DOM nodes built with
// createElement and text nodes only. No HTML from the text is ever parsed (a `<script>` or an
// `<img onerror>` in an answer shows as those characters), and a link is made only for an
// http(s) URL, opening elsewhere with rel="noopener noreferrer".
//
// The subset models use: paragraphs (a single line break kept), headings, emphasis, strong,
// strikethrough, inline code, fenced code blocks (``` or ~~~, with a language), lists
// (ordered, unordered, nested), block quotes, horizontal rules, tables, links and <URL>s.
// An answer still streaming renders as far as it goes (an open fence runs to the end).

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^\s*$/;
/** Quotes and lists nest at most this deep; deeper lines are text (no stack to exhaust). */
const MAX_DEPTH = 16;
/** A link's label is at most this long (the search for its "]" stops there). */
const MAX_LABEL = 1000;

const h = (tag, attrs, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) node.setAttribute(key, value);
  node.append(...children);
  return node;
};

/** The rendered `text`: a DocumentFragment to put in an element (replaceChildren). */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  fragment.append(...blocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n")));
  return fragment;
}

/** A URL a link may point to (http or https, absolute), or null. */
export function safeHref(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- blocks
const startsBlock = (line) =>
  FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);

function blocks(lines, depth = 0) {
  const out = [];
  const nested = depth < MAX_DEPTH;
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (BLANK.test(line)) {
      i += 1;
    } else if ((match = FENCE.exec(line))) {
      const [, fence, lang] = match;
      const body = [];
      for (i += 1; i < lines.length; i += 1) {
        const close = lines[i].trim();
        if (close[0] === fence[0] && close.length >= fence.length && /^(`+|~+)$/.test(close)) {
          i += 1;
          break;
        }
        body.push(lines[i]);
      }
      const code = h("code", {}, body.join("\n"));
      const language = lang.replace(/[^\w+#.-]/g, "");
      if (language) code.className = `language-${language}`;
      out.push(h("pre", language ? { "data-lang": language } : {}, code));
    } else if ((match = HEADING.exec(line))) {
      const level = Math.min(6, match[1].length + 2); // under the page's own h1 and h2
      out.push(h(`h${level}`, {}, ...inline(match[2] ?? "")));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(h("hr", {}));
      i += 1;
    } else if (nested && QUOTE.test(line)) {
      const body = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i += 1) body.push(lines[i].replace(QUOTE, ""));
      out.push(h("blockquote", {}, ...blocks(body, depth + 1)));
    } else if (nested && ITEM.test(line)) {
      i = list(lines, i, out, depth);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, out);
    } else {
      const body = [];
      for (; i < lines.length && !BLANK.test(lines[i]) && (body.length === 0 || !(nested && startsBlock(lines[i]))); i += 1) {
        body.push(lines[i].trim());
      }
      const children = [];
      body.forEach((part, n) => {
        if (n) children.push(h("br", {}));
        children.push(...inline(part));
      });
      out.push(h("p", {}, ...children));
    }
  }
  return out;
}

/** A list from lines[start]; its items' own lines (indented under the marker) are blocks
 * of their own, nested lists included. Returns the next line's index. */
function list(lines, start, out, depth) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = h(ordered ? "ol" : "ul", {});
  if (ordered && parseInt(first[2], 10) !== 1) node.setAttribute("start", String(parseInt(first[2], 10)));
  let i = start;
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const match = ITEM.exec(lines[i]);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    const width = indent + match[2].length + 1;
    const body = [match[3] ?? ""];
    for (i += 1; i < lines.length; i += 1) {
      const line = lines[i];
      if (BLANK.test(line)) {
        // A blank line inside the list: it goes on if the next line is indented or an item.
        const next = lines[i + 1];
        if (next === undefined || BLANK.test(next)) break;
        const nextItem = ITEM.exec(next);
        const sibling = nextItem && nextItem[1].length === indent && /\d/.test(nextItem[2]) === ordered;
        if (sibling || leading(next) >= width) {
          loose = true;
          body.push("");
          continue;
        }
        break;
      }
      const inner = ITEM.exec(line);
      if (inner && inner[1].length <= indent) break; // a sibling, or the parent's
      if (leading(line) < width && !inner && startsBlock(line)) break;
      body.push(leading(line) >= width ? line.slice(width) : line.trim()); // lazy continuation
    }
    while (body.length && BLANK.test(body[body.length - 1])) body.pop();
    items.push(body);
  }
  for (const body of items) {
    const children = blocks(body, depth + 1);
    const li = h("li", {});
    // A tight item's paragraph goes straight into the item.
    if (!loose && children[0]?.tagName === "P") li.append(...children.shift().childNodes);
    li.append(...children);
    node.append(li);
  }
  out.push(node);
  return i;
}

const leading = (line) => line.length - line.trimStart().length;

function table(lines, start, out) {
  const cells = (line) => {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replaceAll("\\|", "|"));
  };
  const head = cells(lines[start]);
  const align = cells(lines[start + 1]).map((rule) =>
    rule.startsWith(":") && rule.endsWith(":") ? "center" : rule.endsWith(":") ? "right" : rule.startsWith(":") ? "left" : null);
  const row = (values, tag) => h("tr", {}, ...head.map((_, n) => {
    const cell = h(tag, tag === "th" ? { scope: "col" } : {}, ...inline(values[n] ?? ""));
    if (align[n]) cell.className = `align-${align[n]}`;
    return cell;
  }));
  const body = h("tbody", {});
  let i = start + 2;
  for (; i < lines.length && !BLANK.test(lines[i]) && lines[i].includes("|"); i += 1) body.append(row(cells(lines[i]), "td"));
  out.push(h("div", { class: "table" }, h("table", {}, h("thead", {}, row(head, "th")), body)));
  return i;
}

// ---------------------------------------------------------------- inline
const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>\"'";
const isSpace = (c) => c === undefined || /\s/.test(c);
const isWord = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

/** Inline markdown → an array of nodes and strings (strings become text nodes). */
function inline(text) {
  const out = [];
  // A marker whose closer was not found from some point has none after any later point: each
  // is searched for once (else a line of 10 000 "*" would take 50 million steps).
  const unclosed = new Set();
  let plain = "";
  const flush = () => {
    if (plain) out.push(plain);
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && ESCAPABLE.includes(text[i + 1] ?? "\0")) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const run = /^`+/.exec(text.slice(i, i + 100))[0];
      const end = unclosed.has(run) ? -1 : findRun(text, run, i + run.length);
      if (end === -1) unclosed.add(run);
      if (end !== -1) {
        flush();
        let code = text.slice(i + run.length, end);
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        out.push(h("code", {}, code));
        i = end + run.length;
        continue;
      }
      plain += run;
      i += run.length;
      continue;
    }
    if (c === "*" || c === "_" || c === "~") {
      const span = emphasis(text, i, unclosed);
      if (span) {
        flush();
        out.push(h(span.tag, {}, ...inline(span.inner)));
        i = span.end;
        continue;
      }
    }
    if (c === "[") {
      const link = linkAt(text, i);
      if (link) {
        flush();
        out.push(link.node);
        i = link.end;
        continue;
      }
    }
    if (c === "<") {
      const auto = /^<(https?:\/\/[^\s<>]+)>/.exec(text.slice(i));
      const href = auto && safeHref(auto[1]);
      if (href) {
        flush();
        out.push(anchor(href, auto[1]));
        i += auto[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
  return out;
}

/** The index of the next backtick run exactly like `run` from `from`, or -1. */
function findRun(text, run, from) {
  for (let i = text.indexOf(run, from); i !== -1; i = text.indexOf(run, i + 1)) {
    if (text[i - 1] !== "`" && text[i + run.length] !== "`") return i;
    while (text[i + 1] === "`") i += 1;
  }
  return -1;
}

/** **strong**, __strong__, *em*, _em_, ~~del~~ starting at `i`: {tag, inner, end} or null. */
function emphasis(text, i, unclosed) {
  const c = text[i];
  const double = text[i + 1] === c;
  if (c === "~" && !double) return null;
  const marker = double ? c + c : c;
  const tag = c === "~" ? "del" : double ? "strong" : "em";
  const after = text[i + marker.length];
  if (isSpace(after) || after === c) return null; // "* item", "a * b", "***"
  if (c === "_" && isWord(text[i - 1])) return null; // snake_case stays as written
  if (unclosed.has(marker)) return null;
  for (let j = text.indexOf(marker, i + marker.length + 1); j !== -1; j = text.indexOf(marker, j + 1)) {
    if (isSpace(text[j - 1]) || text[j - 1] === "\\") continue;
    if (!double && text[j + 1] === c) { j += 1; continue; } // part of a longer run
    if (c === "_" && isWord(text[j + marker.length])) continue;
    return { tag, inner: text.slice(i + marker.length, j), end: j + marker.length };
  }
  unclosed.add(marker);
  return null;
}

/** [label](url "title") at `i`: {node, end}, or null when it is not one. A URL that is not
 * http(s) makes no link: the label shows as text. */
function linkAt(text, i) {
  let depth = 0;
  let close = -1;
  for (let j = i; j < text.length && j <= i + MAX_LABEL; j += 1) {
    if (text[j] === "\\") { j += 1; continue; }
    if (text[j] === "[") depth += 1;
    else if (text[j] === "]" && --depth === 0) { close = j; break; }
  }
  if (close === -1 || text[close + 1] !== "(") return null;
  const target = /^\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/.exec(text.slice(close + 1));
  if (!target) return null;
  const label = text.slice(i + 1, close);
  const href = safeHref(target[1]);
  const end = close + 1 + target[0].length;
  if (!href) return { node: h("span", { class: "unsafe-link", title: "link not followed: not http(s)" }, ...inline(label)), end };
  return { node: anchor(href, ...inline(label)), end };
}

function anchor(href, ...children) {
  const a = h("a", { href, rel: "noopener noreferrer", target: "_blank", referrerpolicy: "no-referrer" }, ...children);
  return a;
}
