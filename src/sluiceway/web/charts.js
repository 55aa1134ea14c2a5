// Live line charts in SVG, built with DOM calls (no library, no inline style: the page's
// Content-Security-Policy allows neither). Time runs along x over the last few minutes; each
// chart names its unit on the y axis; a gap in the samples (the view was hidden) is a gap in
// the line. A sentence under each chart says the latest values, for screen readers and for
// anyone who prefers numbers.

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 170;
const PAD = { left: 52, right: 14, top: 22, bottom: 24 };
/** The time axis spans the samples kept, at least this (ms), at most the chart's window. */
const MIN_SPAN_MS = 60 * 1000;
/** Samples further apart than this (ms) are not joined by a line. */
const GAP_MS = 5000;

const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
};

const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const show = (value) => (Number.isFinite(value) ? (Math.abs(value) >= 10000 ? compact : number).format(value) : "—");

/** 1, 2, 2.5 or 5 times a power of ten, at least `value` (the top of the y axis). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((top) => top >= value * 1.0001) ?? 10 * power;
}

/**
 * One chart: `series` [{key, label}] share its y axis, in `unit` ("events/s", "ms"...).
 * `element` is a <figure> to put in the page; push() a sample, then render().
 */
export class TimeChart {
  constructor({ id, title, unit, series, windowMs = 5 * 60 * 1000, integer = false }) {
    this.title = title;
    this.unit = unit;
    this.series = series.map((s, n) => ({ ...s, n, points: [] }));
    this.windowMs = windowMs;
    this.integer = integer;
    this.svg = svg("svg", { class: "chart-plot", role: "img", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-summary`, height: HEIGHT });
    const legend = document.createElement("ul");
    legend.className = "chart-legend";
    for (const s of this.series) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch series-${s.n}`;
      swatch.setAttribute("aria-hidden", "true");
      s.value = document.createElement("strong");
      s.value.className = "chart-value";
      s.value.dataset.series = s.key;
      s.value.textContent = "—";
      item.append(swatch, `${s.label}: `, s.value);
      legend.append(item);
    }
    const caption = document.createElement("figcaption");
    caption.id = `${id}-title`;
    caption.textContent = `${title} (${unit})`;
    this.summary = document.createElement("p");
    this.summary.id = `${id}-summary`;
    this.summary.className = "sr-only";
    this.summary.setAttribute("aria-live", "off");
    this.element = document.createElement("figure");
    this.element.className = "chart";
    this.element.id = id;
    this.element.append(caption, legend, this.svg, this.summary);
  }

  /** A sample at `at` (ms, Date.now()): {key: value}, a missing or null value is a gap. */
  push(at, values) {
    const oldest = at - this.windowMs;
    for (const s of this.series) {
      const value = values[s.key];
      s.points.push({ at, value: Number.isFinite(value) ? value : null });
      while (s.points.length && s.points[0].at < oldest) s.points.shift();
      if (Number.isFinite(value)) s.value.textContent = `${show(value)} ${this.unit}`;
      else if (!s.points.some((p) => p.value !== null)) s.value.textContent = "—";
    }
  }

  render(now = Date.now()) {
    const width = Math.max(240, Math.round(this.svg.clientWidth || this.svg.parentElement?.clientWidth || 600));
    this.svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    this.svg.setAttribute("width", width);
    const plotW = width - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    // From the first sample kept (a minute at least, the window at most) to now.
    const first = Math.min(now, ...this.series.map((s) => s.points[0]?.at ?? now));
    const span = Math.min(this.windowMs, Math.max(MIN_SPAN_MS, now - first));
    const start = now - span;
    const values = this.series.flatMap((s) => s.points.map((p) => p.value).filter((v) => v !== null));
    const top = niceCeiling(Math.max(this.integer ? 4 : 0, ...values));
    const x = (at) => PAD.left + ((at - start) / span) * plotW;
    const y = (value) => PAD.top + plotH - (value / top) * plotH;
    const parts = [];

    // The y axis: 0, half and the top, in the unit; the x axis: minutes ago.
    for (const tick of [0, top / 2, top]) {
      if (this.integer && !Number.isInteger(tick)) continue;
      parts.push(svg("line", { class: "grid", x1: PAD.left, x2: PAD.left + plotW, y1: y(tick), y2: y(tick) }));
      parts.push(svg("text", { class: "tick", x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end" }, show(tick)));
    }
    parts.push(svg("text", { class: "axis-unit", x: 4, y: 12 }, this.unit));
    const step = span <= 75_000 ? 15_000 : span <= 150_000 ? 30_000 : 60_000;
    for (let ago = 0; ago <= span; ago += step) {
      const label = ago === 0 ? "now" : step < 60_000 ? `−${ago / 1000} s` : `−${ago / 60_000} min`;
      const anchor = ago === 0 ? "end" : ago + step > span && x(now - ago) < PAD.left + 20 ? "start" : "middle";
      parts.push(svg("text", { class: "tick", x: x(now - ago), y: HEIGHT - 6, "text-anchor": anchor }, label));
    }
    parts.push(svg("line", { class: "axis", x1: PAD.left, x2: PAD.left + plotW, y1: y(0), y2: y(0) }));

    const summary = [];
    for (const s of this.series) {
      let d = "";
      let previous = null;
      const dots = [];
      const shown = s.points.filter((p) => p.value !== null && p.at >= start);
      for (const p of s.points) {
        if (p.value === null || p.at < start) { previous = null; continue; }
        const joined = previous && p.at - previous.at <= GAP_MS;
        d += `${joined ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`;
        if (!joined) dots.push(p);
        previous = p;
      }
      // A lone sample (no neighbour within the gap) shows as a dot.
      const lone = dots.filter((p) => !s.points.some((q) => q !== p && q.value !== null && Math.abs(q.at - p.at) <= GAP_MS));
      const max = shown.length ? Math.max(...shown.map((p) => p.value)) : null;
      const last = shown.length ? shown[shown.length - 1].value : null;
      parts.push(svg("path", {
        class: `line series-${s.n}`, d: d || "M0,0", "data-series": s.key,
        "data-count": shown.length, "data-max": max ?? "", "data-last": last ?? "",
      }));
      for (const p of lone) parts.push(svg("circle", { class: `dot series-${s.n}`, cx: x(p.at), cy: y(p.value), r: 3 }));
      summary.push(`${s.label}: ${last === null ? "no data" : `${show(last)} ${this.unit} now`}`
        + (max === null ? "" : `, at most ${show(max)}`));
    }
    this.svg.replaceChildren(...parts);
    this.summary.textContent = `${this.title}: ${summary.join("; ")}.`;
  }
}
