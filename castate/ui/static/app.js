// castate ui: renders what the JSON endpoints return. Every number and every diff comes
// from the server (castate's own library); this file only draws them, keeps the view in the
// URL, and asks before anything is written.
"use strict";

const CONFIG = JSON.parse(document.getElementById("castate-config").textContent);
const main = document.getElementById("main");
const picks = { a: null, b: null }; // revisions chosen on timelines for the diff view
let flash = null; // the result of the last write action, shown on the view drawn after it
let keys = null; // the current view's keyboard handler

// -- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(node, attrs);
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
}

const NUM = new Intl.NumberFormat("en-US");

function fmt(n) {
  return n === null || n === undefined ? "–" : NUM.format(n);
}

function plural(n, one, many) {
  return `${fmt(n)} ${n === 1 ? one : many || one + "s"}`;
}

function humanBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${fmt(v)} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function toDate(t) {
  // An ISO string, epoch seconds, or a nanosecond count as the server sends them.
  if (t === null || t === undefined) return null;
  if (typeof t === "string") return new Date(t);
  return new Date(t > 1e14 ? t / 1e6 : t * 1000);
}

function absTime(t) {
  const d = toDate(t);
  if (!d) return "–";
  const pad = (x) => String(x).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  const zone = off === 0 ? "UTC" : `UTC${off > 0 ? "+" : "−"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`;
}

function relTime(t) {
  const d = toDate(t);
  if (!d) return "–";
  const s = (Date.now() - d.getTime()) / 1000;
  const a = Math.abs(s);
  const say = (n, unit) => `${Math.round(n)} ${unit}${Math.round(n) === 1 ? "" : "s"}`;
  const text = a < 45 ? "seconds" : a < 3600 ? say(a / 60, "min") : a < 86400 ? say(a / 3600, "h").replace(/hs$/, "h") : a < 86400 * 60 ? say(a / 86400, "day") : a < 86400 * 730 ? say(a / 86400 / 30.4, "month") : say(a / 86400 / 365, "year");
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

function when(t) {
  // A relative time with the absolute one (and its zone) on hover.
  return el("time", { datetime: toDate(t) ? toDate(t).toISOString() : null, title: absTime(t), text: relTime(t) });
}

function short(id) {
  return id ? id.slice(0, 12) : "–";
}

function revLabel(r) {
  // "session run-1 (commit 0f53b2777bc3)", or "commit 0f53b2777bc3" alone.
  return r.label.startsWith("commit ") ? r.label : `${r.label} (commit ${short(r.commit)})`;
}

function href(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) for (const x of v) q.append(k, x);
    else if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  // "/" and ":" may stay as they are in a fragment: checkpoint ids and paths stay readable.
  const s = q.toString().replace(/%2F/gi, "/").replace(/%3A/gi, ":");
  return `#/${view}${s ? "?" + s : ""}`;
}

function setUrl(view, params) {
  // Keep the view's state in the address without drawing the view again.
  const h = href(view, params);
  if (location.hash !== h) history.replaceState(null, "", h);
}

function pointer(parts) {
  return parts.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

function unpointer(path) {
  if (!path) return [];
  return path.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

class ApiError extends Error {}

async function request(url, init) {
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new ApiError("The castate ui server does not answer (was it stopped?). Start it again, then retry.");
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new ApiError((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  return request(`/api/${path}${q ? "?" + q : ""}`);
}

function act(action, body) {
  return request(`/api/actions/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Castate-Token": CONFIG.token },
    body: JSON.stringify(body),
  });
}

let drawn = false; // whether the current view has drawn anything yet

function show(...children) {
  drawn = true;
  main.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function errorBox(err, retry, id) {
  // An error where it happened, with a retry; what the page shows around it stays.
  return el("div", { class: "error", id: id || null, role: "alert" },
    el("span", { text: err.message || String(err) }), " ",
    retry ? el("button", { type: "button", class: "retry", text: "Retry", onclick: retry }) : null);
}

function showError(err) {
  // Over what the view drew (its inputs stay), or alone when it drew nothing yet.
  const box = errorBox(err, () => route(), "error");
  for (const old of main.querySelectorAll("#error")) old.remove();
  if (drawn) main.prepend(box);
  else show(el("h1", { text: "This view could not be shown" }), box);
}

function toggle(label, closed, build) {
  // A fold: the body is built when first opened.
  const body = el("div", { class: "fold-body", hidden: true });
  let built = false;
  const button = el("button", { type: "button", class: "fold", "aria-expanded": "false", text: closed });
  button.addEventListener("click", () => {
    if (!built) { body.append(build()); built = true; }
    body.hidden = !body.hidden;
    button.textContent = body.hidden ? closed : label;
    button.setAttribute("aria-expanded", String(!body.hidden));
  });
  return [button, body];
}

// -- values: JSON shown with long strings folded ------------------------------------------------

const FOLD_AT = 240;

function foldedText(text, total, more) {
  // A string shown up to FOLD_AT characters, with a toggle for the rest the page has.
  const span = el("span", { class: "s" });
  const long = text.length > FOLD_AT;
  let open = false;
  const draw = () => {
    const shown = open || !long ? text : text.slice(0, FOLD_AT);
    span.replaceChildren(JSON.stringify(shown));
    if (long) span.append(el("button", { class: "fold", type: "button", text: open ? "fold" : `… ${fmt(text.length - FOLD_AT)} more chars`, onclick: () => { open = !open; draw(); } }));
    if (total !== undefined && total > text.length && (open || !long)) span.append(el("span", { class: "muted", text: ` (${fmt(total)} chars in all${more ? "; " : ")"}` }), more || "", more ? ")" : "");
  };
  draw();
  return span;
}

function bytesOf(b64) {
  try { return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); } catch { return new Uint8Array(); }
}

function hexPreview(b64, n) {
  const b = bytesOf(b64).slice(0, n || 32);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

function imageType(b64) {
  const b = bytesOf(b64.slice(0, 24));
  const starts = (...xs) => xs.every((x, i) => b[i] === x);
  if (starts(0x89, 0x50, 0x4e, 0x47)) return "image/png";
  if (starts(0xff, 0xd8, 0xff)) return "image/jpeg";
  if (starts(0x47, 0x49, 0x46, 0x38)) return "image/gif";
  if (starts(0x52, 0x49, 0x46, 0x46) && b[8] === 0x57 && b[9] === 0x45) return "image/webp";
  return null;
}

function bytesView(b64, total, more) {
  // bytes: size and a hex preview; base64 folded away.
  const size = total !== undefined ? total : bytesOf(b64).length;
  const [button, body] = toggle("hide base64", "base64", () => el("span", { class: "b64", text: b64 + (total !== undefined && total > bytesOf(b64).length ? "…" : "") }));
  return el("span", { class: "n bytes" }, `bytes · ${humanBytes(size)} · `, el("code", { class: "hex", text: hexPreview(b64, 16) + (size > 16 ? " …" : "") }), " ", button, more || null, body);
}

function renderValue(v, moreLink) {
  if (v === null) return el("span", { class: "n", text: "null" });
  if (typeof v === "string") return foldedText(v, undefined, null);
  if (typeof v === "number" || typeof v === "boolean") return el("span", { class: "n", text: String(v) });
  if (Array.isArray(v)) {
    if (v.length === 0) return el("span", { text: "[]" });
    return el("ul", { class: "obj" }, v.map((x, i) => {
      if (x && typeof x === "object" && "$more" in x) return el("li", { class: "muted", text: `… ${plural(x.$more, "more item")}` });
      return el("li", {}, el("span", { class: "k", text: `${i}: ` }), renderValue(x, moreLink));
    }));
  }
  if ("$bytes" in v && Object.keys(v).length === 1) return bytesView(v.$bytes);
  const typed = Object.keys(v);
  if (typed.length === 1 && /^\$(datetime|date|time|timedelta|UUID|Decimal|float)$/.test(typed[0])) return el("span", { class: "n", text: `${typed[0].slice(1)} ${v[typed[0]]}` });
  if ("$folded" in v && "$length" in v) {
    const link = moreLink ? el("a", { href: moreLink, text: "open in the tree" }) : null;
    if (typeof v.$folded === "string") return foldedText(v.$folded, v.$length, link);
    return bytesView(v.$folded.$bytes || "", v.$length, link ? [" ", link] : null);
  }
  const ks = Object.keys(v);
  if (ks.length === 0) return el("span", { text: "{}" });
  return el("ul", { class: "obj" }, ks.map((k) => el("li", {}, el("span", { class: "k", text: `${k}: ` }), renderValue(v[k], moreLink))));
}

// -- sessions ---------------------------------------------------------------------------------

const COLUMNS = [
  { key: "session_id", label: "Session" },
  { key: "timestamp", label: "Last update" },
  { key: "saves", label: "Saves", num: true },
  { key: "checkpoints", label: "Checkpoints", num: true },
  { key: "logical_bytes", label: "Latest state", num: true, title: "the latest state as a full copy would hold it" },
  { key: "stored_bytes", label: "Stored by its saves", num: true, title: "bytes of the objects the session's saves added to the store" },
];

async function sessionsView(params) {
  const data = await api("sessions");
  const rows = data.sessions;
  const state = { key: params.sort || "timestamp", asc: params.dir === "asc", filter: params.q || "" };
  const selected = new Set();
  const tbody = el("tbody");
  const head = el("tr", {}, el("th", { text: "" }), COLUMNS.map((c) => el("th", { "data-key": c.key, class: c.num ? "num" : null, title: c.title || null, tabindex: 0, text: c.label })));
  const search = el("input", { type: "search", id: "search", placeholder: "Search sessions ( / )", value: state.filter, "aria-label": "Search sessions" });
  const diffButton = el("button", { id: "diff-selected", type: "button", disabled: true, text: "Diff the two selected" });
  const count = el("span", { class: "muted", id: "session-count" });
  const keep = () => setUrl("sessions", { q: state.filter, sort: params.sort || state.key !== "timestamp" ? state.key : null, dir: state.asc ? "asc" : null });

  const draw = () => {
    const f = state.filter.toLowerCase();
    const shown = rows.filter((r) => r.session_id.toLowerCase().includes(f));
    shown.sort((x, y) => {
      const a = x[state.key];
      const b = y[state.key];
      const c = typeof a === "string" ? a.localeCompare(b) : (a ?? -1) - (b ?? -1);
      return state.asc ? c : -c;
    });
    for (const th of head.querySelectorAll("th[data-key]")) {
      th.classList.toggle("sorted", th.dataset.key === state.key);
      th.classList.toggle("asc", th.dataset.key === state.key && state.asc);
    }
    count.textContent = `${fmt(shown.length)} of ${plural(rows.length, "session")}`;
    tbody.replaceChildren(...shown.map((r) => el("tr", { class: "session-row", "data-session": r.session_id },
      el("td", {}, el("input", { type: "checkbox", "aria-label": `select ${r.session_id}`, checked: selected.has(r.session_id), onchange: (e) => {
        if (e.target.checked) selected.add(r.session_id); else selected.delete(r.session_id);
        diffButton.disabled = selected.size !== 2;
      } })),
      el("td", {}, el("a", { href: href("session", { id: r.session_id }), text: r.session_id }), r.paused ? el("span", { class: "badge", text: "paused" }) : null),
      el("td", {}, when(r.updated)),
      el("td", { class: "num", "data-value": r.saves, text: fmt(r.saves) + (r.older_history_removed ? "+" : ""), title: r.older_history_removed ? "older saves were removed by gc" : null }),
      el("td", { class: "num", text: fmt(r.checkpoints) }),
      el("td", { class: "num", text: r.logical_bytes === null ? "…" : humanBytes(r.logical_bytes), title: r.logical_bytes === null ? "being measured" : `${fmt(r.logical_bytes)} bytes: the latest state as a full copy` }),
      el("td", { class: "num", text: r.stored_bytes === null ? "…" : humanBytes(r.stored_bytes), title: r.stored_bytes === null ? "being measured" : `${fmt(r.stored_bytes)} bytes of objects its saves added` }),
    )));
  };
  const sortBy = (th) => {
    if (state.key === th.dataset.key) state.asc = !state.asc;
    else { state.key = th.dataset.key; state.asc = th.dataset.key === "session_id"; }
    draw();
    keep();
  };
  head.addEventListener("click", (e) => { const th = e.target.closest("th[data-key]"); if (th) sortBy(th); });
  head.addEventListener("keydown", (e) => { const th = e.target.closest("th[data-key]"); if (th && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); sortBy(th); } });
  search.addEventListener("input", () => { state.filter = search.value; draw(); keep(); });
  diffButton.addEventListener("click", () => {
    const [a, b] = [...selected];
    location.hash = href("diff", { a: `session:${a}`, b: `session:${b}` });
  });
  draw();
  show(
    el("h1", { text: "Sessions" }),
    el("div", { class: "toolbar" }, search, diffButton, count),
    data.growth_pending ? el("p", { class: "muted", id: "growth-pending", text: "Sizes of long histories are being measured; they appear in a moment." }) : null,
    rows.length ? el("table", { id: "sessions-table" }, el("thead", {}, head), tbody) : el("p", { class: "muted", text: "No sessions in this store yet." }),
    el("p", { class: "muted", text: "Latest state: its size as a full copy. Stored by its saves: what its saves added to the store after deduplication (content shared with other sessions counts in each, so the column does not add up to the store's size)." }),
  );
  if (data.growth_pending) later();
  keys = (e) => {
    if (e.key === "j" || e.key === "k") {
      const links = [...tbody.querySelectorAll("a")];
      const at = links.indexOf(document.activeElement);
      const next = links[Math.max(0, Math.min(links.length - 1, at + (e.key === "j" ? 1 : -1)))];
      if (next) { next.focus(); e.preventDefault(); }
    }
  };
}

function later() {
  // Draw the view again in a moment (sizes being measured) if the user is still on it.
  const view = location.hash.split("?")[0];
  setTimeout(() => { if (location.hash.split("?")[0] === view) route(); }, 1500);
}

// -- a session's timeline: canvas overview, step list, details, actions, head history -------------

const LIFECYCLE = new Set(["paused", "paused_at", "resumed_at", "pause_reason"]);

function metaOf(p) {
  return p.meta && typeof p.meta === "object" && !Array.isArray(p.meta) ? p.meta : {};
}

function metaText(p) {
  // The metadata besides step and node, as key=value pairs.
  return Object.entries(metaOf(p)).filter(([k]) => k !== "step" && k !== "node" && !LIFECYCLE.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
}

function parseFilter(text) {
  // "step:120-130 node:coder after:2026-01-15T10:00 before:… save:5 words" → a test of a save.
  const tests = [];
  for (const tok of text.trim().split(/\s+/).filter(Boolean)) {
    const m = /^(step|node|after|before|save):(.+)$/i.exec(tok);
    if (!m) {
      const w = tok.toLowerCase();
      tests.push((p) => p._text.includes(w));
      continue;
    }
    const k = m[1].toLowerCase();
    const val = m[2];
    if (k === "step" || k === "save") {
      const r = /^(\d+)(?:-(\d+))?$/.exec(val);
      if (!r) throw new ApiError(`${k}: takes N or N-M, not “${val}”`);
      const lo = Number(r[1]);
      const hi = r[2] !== undefined ? Number(r[2]) : lo;
      tests.push(k === "step" ? (p) => typeof metaOf(p).step === "number" && metaOf(p).step >= lo && metaOf(p).step <= hi : (p, i) => i + 1 >= lo && i + 1 <= hi);
    } else if (k === "node") {
      tests.push((p) => String(metaOf(p).node ?? "").toLowerCase() === val.toLowerCase());
    } else {
      const t = Date.parse(val);
      if (Number.isNaN(t)) throw new ApiError(`${k}: takes a date or time such as 2026-01-15T10:00, not “${val}”`);
      tests.push(k === "after" ? (p) => p.time_ns / 1e6 >= t : (p) => p.time_ns / 1e6 < t);
    }
  }
  return (p, i) => tests.every((t) => t(p, i));
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function timelineCanvas(points, sid, st, onSelect, onZoom) {
  // One canvas however many saves: each pixel column sums up the saves it covers (the largest
  // bar, the largest logical size, any checkpoint, mark or filter match), so 10,000 saves
  // cost what 1,000 columns cost. Drag to zoom into a range, wheel to zoom, double-click for all.
  const wrap = el("div", { class: "tl-wrap" });
  const canvas = el("canvas", { id: "timeline", class: "chart", role: "img", tabindex: 0 });
  const tip = el("div", { class: "tl-tip", hidden: true });
  wrap.append(canvas, tip);
  const H = 230;
  const pad = { l: 70, r: 16, t: 34, b: 44 };
  let W = 1100;
  const plotW = () => W - pad.l - pad.r;
  const x = (i) => pad.l + ((i - st.lo + 0.5) / (st.hi - st.lo)) * plotW();
  const indexAt = (px) => Math.max(st.lo, Math.min(st.hi - 1, Math.floor(st.lo + ((px - pad.l) / plotW()) * (st.hi - st.lo))));

  function draw() {
    W = Math.max(480, Math.floor(wrap.clientWidth || 1100));
    const dpr = window.devicePixelRatio || 1;
    canvas.width = W * dpr;
    canvas.height = H * dpr;
    canvas.style.height = `${H}px`;
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const c = { bar: cssVar("--bar"), logical: cssVar("--logical"), cp: cssVar("--cp"), mark: cssVar("--mark"), line: cssVar("--line"), muted: cssVar("--muted"), accent: cssVar("--accent"), match: cssVar("--match"), fg: cssVar("--fg") };
    const base = H - pad.b;
    const n = st.hi - st.lo;
    const cols = Math.max(1, Math.min(n, Math.floor(plotW())));
    const agg = [];
    let maxNew = 1;
    let maxLogical = 1;
    for (let k = 0; k < cols; k++) {
      const a = st.lo + Math.floor((k * n) / cols);
      const b = Math.max(a + 1, st.lo + Math.floor(((k + 1) * n) / cols));
      const col = { a, b, nb: 0, lg: 0, cp: 0, mark: 0, match: 0, inherited: 0 };
      for (let i = a; i < b; i++) {
        const p = points[i];
        if (p.new_bytes > col.nb) col.nb = p.new_bytes;
        if (p.logical_bytes > col.lg) col.lg = p.logical_bytes;
        if (p.checkpoints) col.cp += p.checkpoints.length;
        if (p.marks) col.mark += p.marks.length;
        if (st.match && st.match[i]) col.match++;
        if (p.session !== sid) col.inherited++;
      }
      maxNew = Math.max(maxNew, col.nb);
      maxLogical = Math.max(maxLogical, col.lg);
      agg.push(col);
    }
    const cw = plotW() / cols;
    const h = base - pad.t;
    g.fillStyle = c.bar;
    for (let k = 0; k < cols; k++) {
      const col = agg[k];
      const bh = Math.max(col.nb > 0 ? 1 : 0, (col.nb / maxNew) * h);
      g.globalAlpha = col.inherited === col.b - col.a ? 0.45 : 1;
      g.fillRect(pad.l + k * cw + (cw > 4 ? cw * 0.15 : 0), base - bh, cw > 4 ? cw * 0.7 : Math.max(cw, 1), bh);
    }
    g.globalAlpha = 1;
    g.strokeStyle = c.logical;
    g.lineWidth = 1.5;
    g.beginPath();
    agg.forEach((col, k) => { const px = pad.l + (k + 0.5) * cw; const py = base - (col.lg / maxLogical) * h; if (k) g.lineTo(px, py); else g.moveTo(px, py); });
    g.stroke();
    // Checkpoints above, forks and restores below, filter matches on the axis.
    const labels = agg.filter((col) => col.cp).length <= 24;
    let lastEnd = -1e9; // where the last checkpoint name drawn ends: names never overlap
    agg.forEach((col, k) => {
      const px = pad.l + (k + 0.5) * cw;
      if (col.cp) {
        g.strokeStyle = c.cp;
        g.globalAlpha = 0.5;
        g.beginPath(); g.moveTo(px, pad.t - 14); g.lineTo(px, base); g.stroke();
        g.globalAlpha = 1;
        g.fillStyle = c.cp;
        g.beginPath(); g.moveTo(px, pad.t - 24); g.lineTo(px + 7, pad.t - 21); g.lineTo(px, pad.t - 18); g.fill();
        if (labels) {
          const p = points.slice(col.a, col.b).find((q) => q.checkpoints);
          g.font = "11px system-ui, sans-serif";
          const label = p.checkpoints[0].name + (col.cp > 1 ? ` +${col.cp - 1}` : "");
          const w = g.measureText(label).width;
          const right = px + 9 + w <= W - pad.r;
          const start = right ? px + 9 : px - 4 - w;
          if (start > lastEnd + 6) {
            g.fillText(label, start, pad.t - 16);
            lastEnd = start + w;
          }
        }
      }
      if (col.mark) {
        g.fillStyle = c.mark;
        g.beginPath(); g.moveTo(px - 5, base + 20); g.lineTo(px, base + 12); g.lineTo(px + 5, base + 20); g.fill();
      }
      if (col.match) {
        g.fillStyle = c.match;
        g.fillRect(pad.l + k * cw, base + 2, Math.max(cw, 2), 6);
      }
    });
    g.strokeStyle = c.line;
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(pad.l, base + 0.5); g.lineTo(W - pad.r, base + 0.5); g.stroke();
    g.fillStyle = c.muted;
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "left";
    const measured = points[st.lo] && points[st.lo].new_bytes !== null;
    if (measured) g.fillText(humanBytes(maxNew), 4, pad.t + 8);
    else g.fillText("sizes being measured…", pad.l + 8, pad.t + 8);
    g.fillText("0", 4, base);
    if (n > 0) {
      g.fillText(`save ${fmt(st.lo + 1)} · ${absTime(points[st.lo].time_ns)}`, pad.l, H - 8);
      g.textAlign = "right";
      g.fillText(`save ${fmt(st.hi)} · ${absTime(points[st.hi - 1].time_ns)}`, W - pad.r, H - 8);
      g.fillStyle = c.logical;
      g.textAlign = "left";
      if (measured) g.fillText(`${humanBytes(maxLogical)} logical`, 4, pad.t + 24);
    }
    if (st.selected >= st.lo && st.selected < st.hi) {
      const px = x(st.selected);
      g.strokeStyle = c.accent;
      g.lineWidth = 2;
      g.beginPath(); g.moveTo(px, pad.t); g.lineTo(px, base + 10); g.stroke();
      g.fillStyle = c.accent;
      g.beginPath(); g.arc(px, base, 4, 0, Math.PI * 2); g.fill();
    }
    Object.assign(canvas.dataset, { lo: st.lo, hi: st.hi, selected: st.selected, columns: cols });
    canvas.setAttribute("aria-label", `timeline of saves ${st.lo + 1} to ${st.hi} of ${points.length}; drag to zoom`);
  }

  let down = null;
  canvas.addEventListener("mousedown", (e) => { down = e.offsetX; });
  canvas.addEventListener("mouseup", (e) => {
    if (down === null) return;
    const a = Math.min(down, e.offsetX);
    const b = Math.max(down, e.offsetX);
    down = null;
    if (b - a > 6 && st.hi - st.lo > 1) onZoom(indexAt(a), indexAt(b) + 1);
    else onSelect(indexAt(e.offsetX));
  });
  canvas.addEventListener("dblclick", () => onZoom(0, points.length));
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const at = indexAt(e.offsetX);
    const span = st.hi - st.lo;
    const next = Math.max(10, Math.min(points.length, Math.round(span * (e.deltaY > 0 ? 1.25 : 0.8))));
    const lo = Math.max(0, Math.min(points.length - next, Math.round(at - ((at - st.lo) / span) * next)));
    onZoom(lo, lo + next);
  }, { passive: false });
  canvas.addEventListener("mousemove", (e) => {
    const i = indexAt(e.offsetX);
    const p = points[i];
    const m = metaOf(p);
    tip.hidden = false;
    tip.textContent = `save ${fmt(i + 1)}${m.step !== undefined ? ` · step ${m.step}` : ""}${m.node ? ` · ${m.node}` : ""} · ${absTime(p.time_ns)}\n${p.new_bytes === null ? "" : `${humanBytes(p.new_bytes)} new · ${humanBytes(p.logical_bytes)} logical`}${p.checkpoints ? `\ncheckpoint ${p.checkpoints.map((q) => q.name).join(", ")}` : ""}${p.marks ? `\n${p.marks.map((q) => q.text).join("; ")}` : ""}`;
    tip.style.left = `${Math.min(e.offsetX + 12, W - 260)}px`;
    tip.style.top = `${e.offsetY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; down = null; });
  canvas._tl = { x, indexAt, draw };
  new ResizeObserver(() => draw()).observe(wrap);
  return { node: wrap, draw, canvas };
}

const PAGE_ROWS = 25;

async function sessionView(params) {
  const sid = params.id;
  const data = await api("timeline", { session: sid });
  const points = data.points;
  const N = points.length;
  const nodes = new Set();
  for (const p of points) {
    const m = metaOf(p);
    if (m.node !== undefined && m.node !== null) nodes.add(String(m.node));
    p._text = [p.commit, p.session, JSON.stringify(p.meta), p.name || "", ...(p.checkpoints || []).map((c) => c.name + " " + c.checkpoint_id), ...(p.marks || []).map((q) => q.text)].join(" ").toLowerCase();
  }
  const num = (v, d) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : d);
  const st = {
    selected: Math.min(N - 1, Math.max(0, num(params.save, N) - 1)),
    lo: Math.max(0, Math.min(N - 1, num(params.from, 1) - 1)),
    hi: Math.max(1, Math.min(N, num(params.to, N))),
    q: params.q || "",
    node: params.node || "",
    match: null,
    shown: [], // indexes the filter keeps
  };
  if (st.hi <= st.lo) { st.lo = 0; st.hi = N; }
  if (params.a) picks.a = params.a;
  if (params.b) picks.b = params.b;

  const filterBox = el("input", { type: "search", id: "step-filter", value: st.q, placeholder: "Filter: words, step:120-130, node:coder, after:2026-01-15T10:00 ( / )", "aria-label": "Filter saves" });
  const nodeBox = el("select", { id: "node-filter", "aria-label": "Node" }, el("option", { value: "", text: "all nodes" }), [...nodes].sort().map((n) => el("option", { value: n, text: n, selected: n === st.node })));
  const jumpBox = el("input", { type: "text", id: "jump-step", inputmode: "numeric", placeholder: "step", "aria-label": "Jump to step", size: 8 });
  const jumpGo = el("button", { type: "button", id: "jump-go", text: "Go to step" });
  const filterInfo = el("span", { class: "muted", id: "filter-count" });
  const filterError = el("div", { id: "filter-error" });
  const details = el("div", { class: "panel", id: "point-details" });
  const compare = el("div", { class: "toolbar", id: "compare" });
  const listBox = el("div", { id: "step-list" });
  const zoomOut = el("button", { type: "button", id: "zoom-out", text: "Show all saves" });

  const keep = () => setUrl("session", { id: sid, save: st.selected + 1, q: st.q, node: st.node, from: st.lo > 0 || st.hi < N ? st.lo + 1 : null, to: st.lo > 0 || st.hi < N ? st.hi : null, a: picks.a, b: picks.b });

  const chart = timelineCanvas(points, sid, st, (i) => select(i), (lo, hi) => { st.lo = lo; st.hi = Math.max(lo + 1, hi); chart.draw(); zoomOut.disabled = st.lo === 0 && st.hi === N; keep(); });
  zoomOut.disabled = st.lo === 0 && st.hi === N;
  zoomOut.addEventListener("click", () => { st.lo = 0; st.hi = N; chart.draw(); zoomOut.disabled = true; keep(); });

  function applyFilter() {
    filterError.replaceChildren();
    let test = null;
    try {
      const parts = [st.q, st.node ? `node:${st.node}` : ""].join(" ").trim();
      test = parts ? parseFilter(parts) : null;
    } catch (err) {
      filterError.append(errorBox(err, null));
    }
    st.shown = [];
    st.match = test ? new Uint8Array(N) : null;
    for (let i = 0; i < N; i++) {
      if (!test || test(points[i], i)) {
        st.shown.push(i);
        if (st.match) st.match[i] = 1;
      }
    }
    filterInfo.textContent = test ? `${fmt(st.shown.length)} of ${plural(N, "save")} match` : plural(N, "save");
    chart.draw();
    drawList();
  }

  function revOf(i) { return points[i].commit; }
  function drawCompare() {
    compare.replaceChildren(
      el("span", { text: `A: ${picks.a ? short(picks.a) : "–"}` }),
      el("span", { text: `B: ${picks.b ? short(picks.b) : "–"}` }),
      picks.a && picks.b ? el("a", { href: href("diff", { a: picks.a, b: picks.b }), id: "compare-link", text: "Compare A → B" }) : el("span", { class: "muted", text: "pick two saves (or checkpoints) to compare" }),
    );
  }
  function pick(side, rev) { picks[side] = rev; drawCompare(); keep(); }

  function drawList() {
    // One page of the saves the filter keeps, the page that holds the selected save.
    const shown = st.shown;
    let at = shown.indexOf(st.selected);
    if (at < 0) at = shown.findIndex((i) => i > st.selected);
    if (at < 0) at = shown.length - 1;
    const start = Math.max(0, Math.min(Math.floor(Math.max(at, 0) / PAGE_ROWS) * PAGE_ROWS, shown.length - PAGE_ROWS));
    const page = shown.slice(start, start + PAGE_ROWS);
    const go = (k) => { const i = shown[Math.max(0, Math.min(shown.length - 1, k))]; if (i !== undefined) select(i); };
    const nav = el("div", { class: "toolbar pager" },
      el("button", { type: "button", class: "page-prev", disabled: start === 0, text: "‹ Earlier", onclick: () => go(start - PAGE_ROWS) }),
      el("span", { class: "muted", text: shown.length ? `rows ${fmt(start + 1)}–${fmt(start + page.length)} of ${fmt(shown.length)}` : "no save matches" }),
      el("button", { type: "button", class: "page-next", disabled: start + PAGE_ROWS >= shown.length, text: "Later ›", onclick: () => go(start + PAGE_ROWS) }));
    const body = el("tbody", {}, page.map((i) => {
      const p = points[i];
      const m = metaOf(p);
      return el("tr", { class: "save-row" + (i === st.selected ? " selected" : "") + (p.session !== sid ? " inherited" : ""), "data-index": i, "data-commit": p.commit, "aria-selected": String(i === st.selected), onclick: () => select(i) },
        el("td", { class: "num", text: fmt(i + 1) }),
        el("td", { class: "num step", text: m.step !== undefined ? String(m.step) : "" }),
        el("td", { class: "node", text: m.node !== undefined ? String(m.node) : "" }),
        el("td", { class: "meta", text: [metaText(p), p.name ? `(${p.name})` : "", p.session !== sid ? `saved by ${p.session}` : ""].filter(Boolean).join(" ") }),
        el("td", {}, when(p.time_ns)),
        el("td", { class: "num", text: humanBytes(p.new_bytes) }),
        el("td", { class: "num", text: humanBytes(p.logical_bytes) }),
        el("td", {}, (p.checkpoints || []).map((c) => el("span", { class: "badge cp", title: c.checkpoint_id, text: c.name })), (p.marks || []).map((q) => el("span", { class: "badge mark", text: q.text }))));
    }));
    listBox.replaceChildren(nav, el("table", { id: "saves" }, el("thead", {}, el("tr", {}, ["Save", "Step", "Node", "Metadata", "When", "New", "Logical", "Checkpoints, marks"].map((t, k) => el("th", { class: [0, 1, 5, 6].includes(k) ? "num" : null, text: t })))), body));
  }

  function select(i, scroll, keepZoom) {
    st.selected = i;
    if (!keepZoom && (i < st.lo || i >= st.hi)) {
      const span = st.hi - st.lo;
      st.lo = Math.max(0, Math.min(N - span, i - Math.floor(span / 2)));
      st.hi = st.lo + span;
    }
    chart.draw();
    drawList();
    const p = points[i];
    const m = metaOf(p);
    const rest = Object.entries(m).filter(([k]) => k !== "step" && k !== "node");
    details.replaceChildren(
      el("h3", { text: `Save ${fmt(i + 1)} of ${fmt(N)}${m.step !== undefined ? ` · step ${m.step}` : ""}${m.node !== undefined ? ` · ${m.node}` : ""}` }),
      el("dl", { class: "kv" },
        el("dt", { text: "time" }), el("dd", {}, when(p.time_ns), el("span", { class: "muted", text: ` (${absTime(p.time_ns)})` })),
        el("dt", { text: "commit" }), el("dd", { class: "mono", text: p.commit }),
        rest.length ? [el("dt", { text: "metadata" }), el("dd", { class: "val" }, renderValue(Object.fromEntries(rest)))] : null,
        el("dt", { text: "newly stored" }), el("dd", { text: p.new_bytes === null ? "being measured…" : `${humanBytes(p.new_bytes)} (${plural(p.new_objects, "object")})${p.complete ? "" : " — some objects are missing or damaged"}` }),
        el("dt", { text: "logical size" }), el("dd", { text: humanBytes(p.logical_bytes) }),
        p.session !== sid ? [el("dt", { text: "saved by" }), el("dd", {}, "session ", el("a", { href: href("session", { id: p.session }), text: p.session }))] : null,
        p.checkpoints ? [el("dt", { text: "checkpoints" }), el("dd", {}, p.checkpoints.map((c) => el("div", {}, el("code", { text: c.checkpoint_id }), " ", el("button", { type: "button", class: "fold", text: "A", onclick: () => pick("a", c.checkpoint_id) }), el("button", { type: "button", class: "fold", text: "B", onclick: () => pick("b", c.checkpoint_id) }))))] : null,
        p.marks ? [el("dt", { text: "marks" }), el("dd", { text: p.marks.map((q) => q.text).join("; ") })] : null,
      ),
      el("div", { class: "toolbar" },
        i > 0 ? el("a", { href: href("diff", { a: revOf(i - 1), b: revOf(i) }), id: "diff-previous", text: "Diff with the previous save" }) : null,
        el("a", { href: href("tree", { rev: revOf(i) }), id: "open-state", text: "Open this state (Enter)" }),
        el("button", { type: "button", onclick: () => pick("a", revOf(i)), text: "Use as A" }),
        el("button", { type: "button", onclick: () => pick("b", revOf(i)), text: "Use as B" }),
      ),
    );
    keep();
    if (scroll) {
      const row = listBox.querySelector("tr.selected");
      if (row) row.scrollIntoView({ block: "nearest" });
    }
  }

  function jump() {
    const text = jumpBox.value.trim();
    filterError.replaceChildren();
    if (!/^\d+$/.test(text)) { filterError.append(errorBox(new Error(`“${text}” is not a step number`), null)); return; }
    const n = Number(text);
    const i = points.findIndex((p) => metaOf(p).step === n);
    if (i < 0) { filterError.append(errorBox(new Error(`no save of this session has step ${n} in its metadata`), null)); return; }
    select(i, true);
  }
  jumpGo.addEventListener("click", jump);
  jumpBox.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); jump(); } });
  let typing = null;
  filterBox.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { st.q = filterBox.value; applyFilter(); keep(); }, 150); });
  nodeBox.addEventListener("change", () => { st.node = nodeBox.value; applyFilter(); keep(); });

  const nCheckpoints = points.reduce((n, p) => n + (p.checkpoints ? p.checkpoints.length : 0), 0) + data.checkpoints_elsewhere.length;
  const last = points[N - 1];
  show(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "Sessions" }), " ›"),
    el("h1", {}, "Session ", el("code", { id: "session-title", text: sid })),
    el("p", { class: "summary" }, `${plural(N, "save")}${data.older_history_removed ? " kept (older ones removed by gc)" : ""}, ${plural(nCheckpoints, "checkpoint")}; `,
      data.stored_bytes === null ? "sizes being measured…" : `its saves stored ${humanBytes(data.stored_bytes)}; the latest state is ${humanBytes(last.logical_bytes)} as a full copy. `,
      "Head ", el("code", { id: "head", text: short(data.head) }), "."),
    data.growth_pending ? el("p", { class: "muted", id: "growth-pending", text: "The bytes each save stored are being measured (a long history, read once); the chart fills in by itself." }) : null,
    data.growth_error ? errorBox(new Error(`measuring stopped: ${data.growth_error}`), () => route()) : null,
    el("div", { class: "toolbar" }, filterBox, nodeBox, jumpBox, jumpGo, filterInfo),
    filterError,
    el("div", { class: "legend" },
      el("span", { class: "lg-bar", text: "bytes newly stored per save" }),
      el("span", { class: "lg-logical", text: "logical size of the state" }),
      el("span", { class: "lg-cp", text: "checkpoint" }),
      el("span", { class: "lg-mark", text: "fork / restore" }),
      el("span", { class: "lg-match", text: "matches the filter" }),
      zoomOut),
    chart.node,
    compare,
    details,
    CONFIG.writes ? actionsPanel(sid, data, () => points[st.selected], st) : null,
    data.checkpoints_elsewhere.length ? el("div", { class: "panel" }, el("h3", { text: "Checkpoints not on this history" }),
      data.checkpoints_elsewhere.map((c) => el("div", {}, el("code", { text: c.checkpoint_id }), " ", el("a", { href: href("tree", { rev: c.checkpoint_id }), text: "open" })))) : null,
    el("h2", { text: "Saves" }),
    listBox,
    reflogPanel(sid, data.head),
  );
  drawCompare();
  applyFilter();
  if (N) select(st.selected, false, true); // as the address says, zoom included
  if (data.growth_pending) fillGrowth();
  async function fillGrowth() {
    // The sizes arrive later on a long history: fetch them again and fill them in, without
    // drawing the view again (what the page showed, its head included, stays as it was).
    await new Promise((r) => setTimeout(r, 1500));
    if (!main.contains(details)) return;
    let fresh;
    try { fresh = await api("timeline", { session: sid }); } catch { return fillGrowth(); }
    if (!main.contains(details)) return;
    if (fresh.growth_pending) return fillGrowth();
    const same = fresh.points.length >= N && points.every((p, i) => fresh.points[i].commit === p.commit);
    if (same) {
      fresh.points.forEach((q, i) => { if (i < N) Object.assign(points[i], { new_bytes: q.new_bytes, new_objects: q.new_objects, logical_bytes: q.logical_bytes, complete: q.complete }); });
      chart.draw();
      drawList();
      select(st.selected, false, true);
    }
    const note = document.getElementById("growth-pending");
    if (note) note.replaceWith(same ? "" : el("p", { class: "muted", id: "growth-changed" }, "The sizes are measured; the session changed since this page was drawn: ", el("a", { href: location.hash, onclick: () => route(), text: "see it now" })));
  }
  keys = (e) => {
    const at = st.shown.indexOf(st.selected);
    if (e.key === "j" || e.key === "ArrowDown" || e.key === "ArrowRight") {
      const i = at >= 0 ? st.shown[Math.min(st.shown.length - 1, at + 1)] : st.shown.find((k) => k > st.selected);
      if (i !== undefined) { select(i, true); e.preventDefault(); }
    } else if (e.key === "k" || e.key === "ArrowUp" || e.key === "ArrowLeft") {
      const i = at >= 0 ? st.shown[Math.max(0, at - 1)] : [...st.shown].reverse().find((k) => k < st.selected);
      if (i !== undefined) { select(i, true); e.preventDefault(); }
    } else if (e.key === "Enter") {
      location.hash = href("tree", { rev: revOf(st.selected) });
    } else if (e.key === "Home") {
      if (st.shown.length) { select(st.shown[0], true); e.preventDefault(); }
    } else if (e.key === "End") {
      if (st.shown.length) { select(st.shown[st.shown.length - 1], true); e.preventDefault(); }
    }
  };
}

function confirmStep(panel, text, yes, run) {
  // Ask in the page before a write: what will happen, and what undoes it.
  const old = panel.querySelector("#confirm");
  if (old) old.remove();
  const box = el("div", { id: "confirm", class: "confirm", role: "alertdialog", "aria-label": "Confirm" },
    el("p", { text }),
    el("div", { class: "row" },
      el("button", { type: "button", id: "confirm-yes", class: "primary", text: yes, onclick: () => { box.remove(); run(); } }),
      el("button", { type: "button", id: "confirm-no", text: "Cancel", onclick: () => box.remove() })));
  panel.querySelector("#action-result").before(box);
  box.querySelector("#confirm-yes").focus();
}

function restoreText(sid, head, source, what) {
  return `Restore session ${sid} to ${what} (${short(source)})? Its head moves from ${short(head)} to it; the saves after it stay in the store and in the head history below, and “Undo” puts the head back.`;
}

async function doRestore(panel, sid, source, head, label) {
  const result = panel.querySelector("#action-result");
  try {
    const o = await act("restore", { source, session: sid, expected: head });
    flash = o.changed
      ? { text: `${label}: session ${sid} is now at ${short(o.current)} (was ${short(o.previous)}).`, undo: o.previous ? { source: o.previous, expected: o.current } : null, sid }
      : { text: "Already there; nothing to do.", sid };
    await route();
  } catch (err) {
    result.className = "error";
    result.replaceChildren(err.message);
  }
}

function actionsPanel(sid, data, current, st) {
  // Present only when the server was started with --allow-writes.
  const result = el("div", { id: "action-result", class: "muted", role: "status" });
  const panel = el("section", { class: "panel", id: "actions" });
  if (flash && flash.sid === sid) {
    const f = flash;
    flash = null;
    result.className = "ok";
    result.append(f.text);
    if (f.link) result.append(" ", el("a", { href: f.link, text: "open it" }));
    if (f.undo) {
      result.append(" ", el("button", { type: "button", id: "undo", text: "Undo", onclick: () => doRestore(panel, sid, f.undo.source, f.undo.expected, "Undone") }));
    }
    if (f.undoFork) {
      const u = f.undoFork;
      result.append(" ", el("button", { type: "button", id: "undo-fork", text: "Undo",
        onclick: () => confirmStep(panel, `Delete session “${u.session}” again? Only while it is still at ${short(u.expected)} as the fork left it, with no checkpoint; the saves it was forked from stay where they are.`, "Delete the fork", async () => {
          try {
            await act("undo-fork", u);
            flash = { text: `Undone: session ${u.session} deleted.`, sid };
            await route();
          } catch (err) { result.className = "error"; result.replaceChildren(err.message); }
        }) }));
    }
  }
  const cpName = el("input", { type: "text", id: "checkpoint-name", placeholder: "checkpoint name", "aria-label": "checkpoint name" });
  const forkName = el("input", { type: "text", id: "fork-name", placeholder: "new session id", "aria-label": "new session id" });
  const fail = (err) => { result.className = "error"; result.replaceChildren(err.message); };
  panel.append(
    el("h3", { text: "Actions (this server allows writes)" }),
    el("div", { class: "row" }, cpName, el("button", { type: "button", id: "do-checkpoint", text: "Checkpoint the current state",
      onclick: () => confirmStep(panel, `Checkpoint session ${sid} at its head ${short(data.head)} as “${cpName.value}”?`, "Checkpoint", async () => {
        try {
          const o = await act("checkpoint", { session: sid, name: cpName.value, expected: data.head });
          flash = { text: `Created checkpoint ${o.checkpoint_id}.`, sid };
          await route();
        } catch (err) { fail(err); }
      }) })),
    el("div", { class: "row" }, forkName, el("button", { type: "button", id: "do-fork", text: "Fork from the selected save",
      onclick: () => {
        const p = current();
        confirmStep(panel, `Create session “${forkName.value}” at save ${fmt(st.selected + 1)} (${short(p.commit)})? Nothing existing changes.`, "Fork", async () => {
          try {
            const o = await act("fork", { source: p.commit, new_session: forkName.value });
            flash = { text: `Forked session ${o.session_id} at ${short(o.head)}.`, link: href("session", { id: o.session_id }), undoFork: { session: o.session_id, expected: o.head }, sid };
            await route();
          } catch (err) { fail(err); }
        });
      } })),
    el("div", { class: "row" }, el("button", { type: "button", id: "do-restore", text: "Restore the selected save into this session",
      onclick: () => {
        const p = current();
        confirmStep(panel, restoreText(sid, data.head, p.commit, `save ${fmt(st.selected + 1)}`), "Restore", () => doRestore(panel, sid, p.commit, data.head, "Restored"));
      } })),
    result,
  );
  return panel;
}

function reflogPanel(sid, head) {
  // Every move of the head, newest first: what a restore replaced can be restored from here.
  const box = el("section", { class: "panel", id: "reflog" });
  const withSaves = el("input", { type: "checkbox", id: "reflog-saves" });
  const body = el("div");
  let offset = 0;
  const load = async () => {
    try {
      const r = await api("reflog", { session: sid, saves: withSaves.checked ? 1 : 0, offset, limit: 50 });
      const restore = (commit, what) => {
        const panel = document.getElementById("actions");
        confirmStep(panel, restoreText(sid, head, commit, what), "Restore", () => doRestore(panel, sid, commit, head, "Restored"));
      };
      const idLink = (c, ok) => (c ? el("a", { href: href("tree", { rev: c }), class: "mono", title: ok ? c : `${c}: no longer stored (gc)`, text: short(c) }) : el("span", { class: "muted", text: "none" }));
      body.replaceChildren(
        r.entries.length ? el("table", { id: "reflog-table" },
          el("thead", {}, el("tr", {}, ["When", "What", "From", "To", CONFIG.writes ? "" : null].filter((t) => t !== null).map((t) => el("th", { text: t })))),
          el("tbody", {}, r.entries.map((e) => el("tr", { class: "reflog-row", "data-new": e.new || "", "data-old": e.old || "" },
            el("td", {}, when(e.time)), el("td", { text: e.message }),
            el("td", {}, idLink(e.old, e.old_restorable)), el("td", {}, idLink(e.new, e.restorable), e.new === r.head ? el("span", { class: "badge", text: "head" }) : null),
            CONFIG.writes ? el("td", {},
              e.old_restorable && e.old !== r.head ? el("button", { type: "button", class: "restore-old", text: "Restore “from”", onclick: () => restore(e.old, `the head before “${e.message}”`) }) : null,
              e.restorable && e.new !== r.head ? el("button", { type: "button", class: "restore-new", text: "Restore “to”", onclick: () => restore(e.new, `the head after “${e.message}”`) }) : null) : null)))) : el("p", { class: "muted", text: "No moves recorded (gc expires old entries)." }),
        el("div", { class: "toolbar pager" },
          el("button", { type: "button", disabled: offset === 0, text: "‹ Newer", onclick: () => { offset = Math.max(0, offset - 50); load(); } }),
          el("span", { class: "muted", text: `${fmt(r.total)} ${withSaves.checked ? "moves" : "moves besides plain saves"}` }),
          el("button", { type: "button", disabled: offset + 50 >= r.total, text: "Older ›", onclick: () => { offset += 50; load(); } })));
    } catch (err) {
      body.replaceChildren(errorBox(err, load));
    }
  };
  withSaves.addEventListener("change", () => { offset = 0; load(); });
  box.append(el("h3", { text: "Head history (reflog)" }),
    el("p", { class: "muted", text: "Every move of this session's head: restores, forks, pauses" + (CONFIG.writes ? "; any head still stored can be restored." : ".") }),
    el("label", {}, withSaves, " include plain saves"), body);
  load();
  return box;
}

// -- diff -----------------------------------------------------------------------------------------

function textDiffView(td) {
  // A unified diff of two strings: changed lines, and the words changed inside an edited line.
  const rows = td.rows.map((r) => {
    if (r.t === "skip") return el("div", { class: "td-row td-skip", text: `⋯ ${plural(r.n, "unchanged line")}` });
    const num = el("span", { class: "td-num", text: String(r.line) });
    if (r.t === "~") return el("div", { class: "td-row td-edit" }, num, el("span", { class: "td-sign", text: "~" }), el("span", { class: "td-text" }, r.words.map(([t, w]) => (t === "=" ? w : el(t === "+" ? "ins" : "del", { text: w })))));
    const cls = { "=": "td-eq", "+": "td-add", "-": "td-del" }[r.t];
    return el("div", { class: `td-row ${cls}` }, num, el("span", { class: "td-sign", text: r.t === "=" ? " " : r.t }), el("span", { class: "td-text", text: r.text }));
  });
  return el("div", { class: "textdiff" },
    el("div", { class: "td-head muted", text: `text: +${fmt(td.added)} −${fmt(td.removed)} lines (${fmt(td.lines_a)} → ${fmt(td.lines_b)})${td.truncated ? "; the first rows shown" : ""}` }),
    rows);
}

function roleSummary(roles) {
  const parts = Object.entries(roles || {}).map(([r, n]) => `${fmt(n)} ${r}`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

function runItem(g, d) {
  // Items added to (or removed from) one list one after another: one line, opened on demand.
  const side = g.op === "add" ? d.b.rev : d.a.rev;
  const [button, body] = toggle("fold", g.items.length < g.count ? `show the first ${fmt(g.items.length)}` : `show ${plural(g.count, "item")}`, () => el("div", {},
    el("ul", { class: "changes" }, g.items.map((c) => changeItem(c, d))),
    g.items.length < g.count ? el("p", { class: "muted" }, `${plural(g.count - g.items.length, "more item")}: `, el("a", { href: href("tree", { rev: side, path: g.path, open: g.path }), text: "open the list in the tree" })) : null));
  return el("li", { class: `change change-${g.op} change-group`, "data-op": g.op, "data-path": g.path, "data-count": g.count },
    el("div", {}, el("span", { class: "op", text: `${g.op === "add" ? "+" : "−"}${fmt(g.count)} items` }), g.op === "add" ? "appended to " : "removed from ",
      el("a", { class: "mono path", href: href("tree", { rev: side, path: g.path }), text: g.path || "/" }),
      el("span", { class: "muted", text: ` [${fmt(g.first)}–${fmt(g.first + g.count - 1)}]${roleSummary(g.roles)} ` }), button),
    body);
}

function changeItem(c, d) {
  const side = c.op === "remove" ? d.a.rev : d.b.rev;
  const link = href("tree", { rev: side, path: c.path });
  return el("li", { class: `change change-${c.op}`, "data-op": c.op, "data-path": c.path },
    el("div", {}, el("span", { class: "op", text: { add: "added", remove: "removed", replace: "changed" }[c.op] }), el("a", { class: "mono path", href: link, text: c.path || "/" })),
    c.text_diff ? textDiffView(c.text_diff)
      : c.op === "replace" ? [el("div", { class: "val old" }, renderValue(c.old, href("tree", { rev: d.a.rev, path: c.path }))), el("div", { class: "arrow", text: "↓" }), el("div", { class: "val new" }, renderValue(c.new, link))]
        : el("div", { class: "val" }, renderValue(c.op === "add" ? c.new : c.old, link)));
}

async function diffView(params) {
  const a = params.a || picks.a || "";
  const b = params.b || picks.b || "";
  const path = params.path || "";
  const offset = /^\d+$/.test(params.offset || "") ? Number(params.offset) : 0;
  const ia = el("input", { type: "text", id: "diff-a", list: "revisions", placeholder: "A: session, checkpoint or commit", value: a, "aria-label": "A" });
  const ib = el("input", { type: "text", id: "diff-b", list: "revisions", placeholder: "B: session, checkpoint or commit", value: b, "aria-label": "B" });
  const ip = el("input", { type: "search", id: "diff-path", placeholder: "only under a path, e.g. /messages ( / )", value: path, "aria-label": "path filter" });
  const go = () => { location.hash = href("diff", { a: ia.value.trim(), b: ib.value.trim(), path: ip.value.trim() }); };
  for (const i of [ia, ib, ip]) i.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  const list = el("datalist", { id: "revisions" });
  const out = el("div", { id: "diff-result" });
  show(el("h1", { text: "Diff" }), list,
    el("div", { class: "toolbar" }, ia, el("span", { text: "→" }), ib, el("button", { type: "button", class: "primary", id: "diff-go", text: "Compare", onclick: go })),
    el("div", { class: "toolbar" }, ip, el("button", { type: "button", id: "diff-path-go", text: "Filter", onclick: go }), path ? el("a", { href: href("diff", { a, b }), text: "all paths" }) : null),
    out);
  api("revisions").then((revs) => list.replaceChildren(...revs.sessions.map((s) => el("option", { value: s })), ...revs.checkpoints.map((c) => el("option", { value: c })))).catch(() => {});
  if (!a || !b) {
    out.append(el("p", { class: "muted", text: "Pick two states: session ids (their latest save), checkpoint ids or commit ids. A timeline's “Use as A / B” fills these in." }));
    return;
  }
  let d;
  try {
    d = await api("diff", { a, b, path, offset });
  } catch (err) {
    out.append(errorBox(err, () => route(), "error"));
    return;
  }
  const keysTable = Object.entries(d.by_key).sort((x, y) => (y[1].add + y[1].remove + y[1].replace) - (x[1].add + x[1].remove + x[1].replace));
  const pageLink = (o) => href("diff", { a, b, path, offset: o || null });
  const shownTo = d.offset + d.changes.length;
  out.append(
    el("p", { class: "muted" }, "A = ", el("a", { href: href("tree", { rev: d.a.rev }), text: revLabel(d.a) }), ", saved ", when(d.a.time), " · B = ", el("a", { href: href("tree", { rev: d.b.rev }), text: revLabel(d.b) }), ", saved ", when(d.b.time)),
    el("div", { id: "diff-summary", class: "summary" },
      d.total === 0 ? "No differences." : `${plural(d.total, "change")}: ${fmt(d.counts.add)} added, ${fmt(d.counts.remove)} removed, ${fmt(d.counts.replace)} replaced.`,
      path ? ` Under ${path}: ${plural(d.matching, "change")}.` : null),
    keysTable.length > 1 || path ? el("table", { id: "diff-keys", class: "compact" },
      el("thead", {}, el("tr", {}, ["Top-level key", "added", "removed", "changed"].map((t, k) => el("th", { class: k ? "num" : null, text: t })))),
      el("tbody", {}, keysTable.map(([k, n]) => el("tr", { "data-key": k },
        el("td", {}, el("a", { href: href("diff", { a, b, path: k }), class: "mono", text: k })),
        el("td", { class: "num", text: fmt(n.add) }), el("td", { class: "num", text: fmt(n.remove) }), el("td", { class: "num", text: fmt(n.replace) }))))) : null,
    el("ul", { class: "changes", id: "changes" }, d.changes.map((c) => (c.run ? runItem(c, d) : changeItem(c, d)))),
    d.offset > 0 || d.truncated ? el("div", { class: "toolbar pager" },
      d.offset > 0 ? el("a", { href: pageLink(Math.max(0, d.offset - 2000)), id: "diff-prev", text: "‹ Previous changes" }) : null,
      el("span", { class: "muted", text: `entries ${fmt(d.offset + 1)}–${fmt(shownTo)} of ${fmt(d.entries)} (a run of list items counts once)` }),
      d.truncated ? el("a", { href: pageLink(shownTo), id: "diff-next", text: "Next changes ›" }) : null) : null,
  );
}

// -- one state as a tree -------------------------------------------------------------------------

function kindText(item) {
  if (item.kind === "dict") return `dict · ${plural(item.size, "key")}`;
  if (item.kind === "list") return `list · ${plural(item.size, "item")}`;
  if (item.kind === "str") return item.complete ? "" : `str · ${humanBytes(item.size)}`;
  if (item.kind === "bytes") return "";
  return "";
}

function scalarNode(rev, path, item) {
  const span = el("span", { class: "scalar" });
  const download = el("a", { class: "download", href: `/api/download?${new URLSearchParams({ rev, path })}`, download: "", text: "download" });
  if (item.kind === "bytes") {
    const b64 = item.value.$bytes;
    span.append(bytesView(b64, item.size), " ", download);
    const type = imageType(b64);
    if (type) {
      span.append(" ", el("button", { type: "button", class: "fold", text: "show image", onclick: async (e) => {
        e.target.disabled = true;
        try {
          const v = item.complete ? { value: item.value } : await api("value", { rev, path });
          span.append(el("div", {}, el("img", { class: "preview", alt: `image at ${path}`, src: `data:${type};base64,${v.value.$bytes}` })));
        } catch (err) { span.append(errorBox(err, null)); }
      } }));
    }
    return span;
  }
  if (item.kind === "str") {
    const head = JSON.stringify(item.value) + (item.complete ? "" : "…");
    span.append(head);
    if (!item.complete) {
      let whole = null;
      const more = el("button", { class: "fold", type: "button", text: "show all" });
      more.addEventListener("click", async () => {
        try {
          if (whole === null) whole = (await api("value", { rev, path })).value;
          const open = more.textContent === "show all";
          span.firstChild.textContent = open ? JSON.stringify(whole) : head;
          more.textContent = open ? "fold" : "show all";
        } catch (err) { span.append(errorBox(err, null)); }
      });
      span.append(" ", more, " ", download);
    }
    return span;
  }
  span.append(item.kind === "null" ? "null" : String(item.value));
  return span;
}

function messageLine(m) {
  // A chat message summed up: role (and name), a preview, its tool calls or the call it answers.
  const text = m.content !== undefined ? m.content : m.content_kind || "";
  return el("span", { class: "msg" },
    el("span", { class: `role role-${String(m.role || m.type || "").replace(/[^a-z]/gi, "")}`, text: m.role || m.type }),
    m.name ? el("span", { class: "agent", text: m.name }) : null,
    el("span", { class: "msg-text", text: text === "" ? "" : (typeof text === "string" ? text : "") + (m.content_size > 160 ? "…" : "") }),
    (m.calls || []).map((c) => el("a", { class: "call", href: "#", "data-call": c.id || "", title: "the tool result that answers this call", text: `→ ${c.name || "tool"}(${c.id || "?"})`,
      onclick: (e) => { e.preventDefault(); const t = document.querySelector(`li[data-answers="${CSS.escape(c.id || "")}"]`); if (t) { t.scrollIntoView({ block: "center" }); t.classList.add("flash"); setTimeout(() => t.classList.remove("flash"), 1200); } } })),
    m.tool_calls && !m.calls ? el("span", { class: "muted", text: ` ${plural(m.tool_calls, "tool call")}` }) : null,
    m.tool_call_id ? el("a", { class: "answers", href: "#", text: `↩ ${m.tool_call_id}`, title: "the call this result answers",
      onclick: (e) => { e.preventDefault(); const t = document.querySelector(`a.call[data-call="${CSS.escape(m.tool_call_id)}"]`); if (t) { t.scrollIntoView({ block: "center" }); t.closest("li").classList.add("flash"); setTimeout(() => t.closest("li").classList.remove("flash"), 1200); } } }) : null);
}

function treeItem(ctx, parts, item) {
  const path = pointer(parts);
  const li = el("li", { class: `node node-${item.kind}`, "data-path": path });
  const key = el("span", { class: "key", tabindex: 0, text: typeof item.key === "number" ? `[${fmt(item.key)}]` : item.key });
  if (item.message && item.message.tool_call_id) li.dataset.answers = item.message.tool_call_id;
  if (item.kind === "dict" || item.kind === "list") {
    let box = null;
    const tg = el("span", { class: "toggle", "aria-hidden": "true", text: "▸" });
    li.setAttribute("aria-expanded", "false");
    const flip = async () => {
      const open = li.getAttribute("aria-expanded") !== "true";
      li.setAttribute("aria-expanded", String(open));
      tg.textContent = open ? "▾" : "▸";
      if (open) ctx.open.add(path); else ctx.open.delete(path);
      ctx.keep();
      if (open && !box) {
        box = el("ul");
        li.append(box);
        await loadLevel(ctx, parts, box, 0);
      } else if (box) {
        box.hidden = !open;
      }
    };
    li._flip = flip;
    tg.addEventListener("click", flip);
    key.addEventListener("click", flip);
    key.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); flip(); } });
    li.append(tg, key, el("span", { class: "kind", text: kindText(item) }), item.message ? messageLine(item.message) : null);
  } else {
    li.append(el("span", { class: "toggle" }), key, el("span", { class: "kind", text: kindText(item) }), scalarNode(ctx.rev, path, item));
  }
  return li;
}

async function loadLevel(ctx, parts, box, offset) {
  let data;
  try {
    data = await api("tree", { rev: ctx.rev, path: pointer(parts), offset, limit: 200 });
  } catch (err) {
    box.append(el("li", {}, errorBox(err, async (e) => { e.target.closest("li").remove(); await loadLevel(ctx, parts, box, offset); })));
    return null;
  }
  const node = data.node;
  if (!("items" in node)) {
    box.append(treeItem(ctx, parts, node));
    return data;
  }
  if (node.kind === "list" && node.total > 200 && !box.querySelector(":scope > li.goto")) {
    const to = el("input", { type: "text", inputmode: "numeric", class: "goto-index", placeholder: `item 0–${fmt(node.total - 1)}`, size: 10, "aria-label": "go to item" });
    const jump = async () => {
      const n = Number(to.value);
      if (!/^\d+$/.test(to.value.trim()) || n >= node.total) { to.setCustomValidity("not an item of this list"); to.reportValidity(); return; }
      for (const li of [...box.children]) if (!li.classList.contains("goto")) li.remove();
      await loadLevel(ctx, parts, box, Math.floor(n / 200) * 200);
      const target = box.querySelector(`:scope > li[data-path="${CSS.escape(pointer([...parts, n]))}"]`);
      if (target) { target.scrollIntoView({ block: "center" }); target.classList.add("flash"); }
    };
    to.addEventListener("keydown", (e) => { if (e.key === "Enter") jump(); });
    box.append(el("li", { class: "goto" }, to, el("button", { type: "button", class: "fold goto-go", text: "go to item", onclick: jump })));
  }
  if (offset > 0 && !box.querySelector(":scope > li.earlier")) {
    box.append(el("li", { class: "earlier" }, el("button", { type: "button", class: "fold", text: `items 0–${fmt(offset - 1)} not shown; show from the start`, onclick: async () => {
      for (const li of [...box.children]) if (!li.classList.contains("goto")) li.remove();
      await loadLevel(ctx, parts, box, 0);
    } })));
  }
  for (const item of node.items) box.append(treeItem(ctx, [...parts, item.key], item));
  const shown = node.offset + node.items.length;
  if (shown < node.total) {
    const more = el("li", {}, el("button", { type: "button", class: "fold more", text: `load more (${fmt(node.total - shown)} left)`, onclick: async () => {
      more.remove();
      await loadLevel(ctx, parts, box, shown);
    } }));
    box.append(more);
  }
  return data;
}

async function treeView(params, search) {
  const rev = params.rev;
  const parts = unpointer(params.path || "");
  const box = el("ul", { class: "tree", id: "tree" });
  const title = el("p", { class: "muted" });
  const ctx = { rev, open: new Set(search.getAll("open")), keep: () => setUrl("tree", { rev, path: params.path, open: [...ctx.open] }) };
  const crumbs = el("div", { class: "crumbs" }, el("a", { href: href("tree", { rev }), text: "root" }),
    parts.map((p, i) => [" / ", el("a", { href: href("tree", { rev, path: pointer(parts.slice(0, i + 1)) }), text: p })]));
  show(el("h1", {}, "State ", el("code", { text: rev })), title, crumbs, box);
  const data = await loadLevel(ctx, parts, box, 0);
  if (!data) return;
  title.replaceChildren(`${revLabel(data)} · saved `, when(data.time), data.session ? ` by session ${data.session}` : "");
  if (data.session) title.append(" · ", el("a", { href: href("session", { id: data.session }), text: "timeline" }));
  // Open again what the URL says was open, parents first.
  for (const p of [...ctx.open].sort((x, y) => x.split("/").length - y.split("/").length)) {
    const li = box.querySelector(`li[data-path="${CSS.escape(p)}"]`);
    if (li && li._flip && li.getAttribute("aria-expanded") !== "true") {
      ctx.open.delete(p);
      await li._flip();
    }
  }
}

// -- store health ---------------------------------------------------------------------------------

function runSummary(r) {
  if (r.op === "gc") return `deleted ${plural(r.deleted, "object")} (${humanBytes(r.deleted_bytes)}) of ${fmt(r.objects)}; ${plural(r.reflog_expired, "reflog entry", "reflog entries")} expired${r.warnings && r.warnings.length ? `; ${plural(r.warnings.length, "warning")}` : ""}`;
  return `${r.full ? "full" : "quick"} check of ${plural(r.refs, "ref")}, ${plural(r.reachable, "object")}; ${plural(r.problems, "problem")}${r.quarantined ? `, ${fmt(r.quarantined)} quarantined` : ""}${r.dangling !== null && r.dangling !== undefined ? `, ${fmt(r.dangling)} dangling` : ""}`;
}

function lastRunPanel(id, title, run, command) {
  if (!run) return el("div", { class: "panel", id }, el("h3", { text: title }), el("p", { class: "muted", text: `No run recorded yet: \`${command}\` records its runs in the store.` }));
  return el("div", { class: "panel", id }, el("h3", { text: title }),
    el("dl", { class: "kv" },
      el("dt", { text: "when" }), el("dd", {}, when(run.time), ` (took ${run.seconds < 1 ? "under a second" : `${run.seconds.toFixed(1)} s`})`),
      el("dt", { text: "result" }), el("dd", {}, el("span", { class: run.ok ? "ok" : "bad", text: run.ok ? "ok" : "problems" })),
      el("dt", { text: "summary" }), el("dd", { text: runSummary(run) }),
      el("dt", { text: "store on disk" }), el("dd", { text: humanBytes(run.store_bytes) }),
      run.damaged_refs && run.damaged_refs.length ? [el("dt", { text: "damaged refs" }), el("dd", { text: run.damaged_refs.join(", ") })] : null,
      run.warnings && run.warnings.length ? [el("dt", { text: "warnings" }), el("dd", { text: run.warnings.join("; ") })] : null,
    ));
}

function healthChart(runs, now) {
  // Store size on disk and logical size at each recorded run, in order, and now. A run that
  // did not measure a size (gc does not compute the logical size) has no point on that line.
  const pts = runs.map((r) => ({ t: r.time, label: r.op, stored: r.store_bytes, logical: r.logical_bytes || null }));
  pts.push({ t: now.time, label: "now", stored: now.store_bytes, logical: now.logical_bytes });
  const W = 1100;
  const H = 240;
  const pad = { l: 80, r: 30, t: 16, b: 30 };
  const vmax = Math.max(1, ...pts.flatMap((p) => [p.stored || 0, p.logical || 0]));
  const x = (i) => pad.l + (pts.length > 1 ? (i / (pts.length - 1)) * (W - pad.l - pad.r) : (W - pad.l - pad.r) / 2);
  const y = (v) => H - pad.b - (v / vmax) * (H - pad.t - pad.b);
  const chart = svg("svg", { id: "health-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "store size on disk and logical size over recorded runs" },
    svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }),
    svg("text", { class: "axis", x: 4, y: pad.t + 8, text: humanBytes(vmax) }),
    svg("text", { class: "axis", x: 4, y: H - pad.b, text: "0" }));
  if (pts.length > 1) chart.append(svg("text", { class: "axis", x: pad.l, y: H - 8, text: `${pts[0].label} ${absTime(pts[0].t)}` }));
  chart.append(svg("text", { class: "axis", x: W - pad.r, y: H - 8, "text-anchor": "end", text: "now" }));
  for (const key of ["stored", "logical"]) {
    const have = pts.map((p, i) => [p, i]).filter(([p]) => p[key] !== null && p[key] !== undefined);
    chart.append(svg("polyline", { class: `h-${key}`, points: have.map(([p, i]) => `${x(i)},${y(p[key])}`).join(" ") }));
    for (const [p, i] of have) {
      chart.append(svg("circle", { class: `h-dot-${key} h-point`, cx: x(i), cy: y(p[key]), r: 3.5 },
        svg("title", { text: `${key === "stored" ? "on disk" : "logical"}: ${humanBytes(p[key])} (${p.label}, ${absTime(p.t)})` })));
    }
  }
  return chart;
}

async function healthView() {
  const h = await api("health");
  const n = h.now;
  const card = (label, value, id, title) => el("div", { class: "card", id, title: title || null }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
  show(
    el("h1", { text: "Store health" }),
    el("div", { class: "cards" },
      card("On disk", humanBytes(n.store_bytes), "card-disk", `${fmt(n.store_bytes)} bytes: the store's files`),
      card("As full copies", humanBytes(n.logical_bytes), "card-logical", "every session and checkpoint as a full copy would hold it: what the store would take without deduplication"),
      card("Dedup ratio", `${n.dedup_ratio.toFixed(1)}×`, "card-dedup", "full copies over the stored objects they reach"),
      card(`Objects (${humanBytes(n.object_bytes)})`, fmt(n.objects), "card-objects"),
      card("Sessions", fmt(n.sessions), "card-sessions"),
      card("Checkpoints", fmt(n.checkpoints), "card-checkpoints")),
    el("p", { class: "muted" }, "Measured ", when(n.time), "; measured again when a ref moves."),
    el("h2", { text: "Size on disk against the size as full copies" }),
    el("div", { class: "legend" }, el("span", { class: "lg-stored", text: "on disk" }), el("span", { class: "lg-logical", text: "as full copies (fsck runs and now)" })),
    healthChart(h.runs, n),
    el("div", { class: "two" }, lastRunPanel("last-fsck", "Last fsck", h.last_fsck, "castate fsck"), lastRunPanel("last-gc", "Last gc", h.last_gc, "castate gc")),
    el("h2", { text: "Recorded runs" }),
    h.runs.length ? el("table", { id: "runs" }, el("thead", {}, el("tr", {}, ["When", "Run", "Result", "On disk", "Summary"].map((t) => el("th", { text: t })))),
      el("tbody", {}, [...h.runs].reverse().map((r) => el("tr", { class: "run-row" },
        el("td", {}, when(r.time)), el("td", { text: r.op }),
        el("td", {}, el("span", { class: r.ok ? "ok" : "bad", text: r.ok ? "ok" : "problems" })),
        el("td", { class: "num", text: humanBytes(r.store_bytes) }), el("td", { text: runSummary(r) })))))
      : el("p", { class: "muted", text: "None yet." }),
  );
}

// -- routing and keys -------------------------------------------------------------------------------

const VIEWS = { "": sessionsView, sessions: sessionsView, session: sessionView, diff: diffView, tree: treeView, health: healthView };

async function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query] = hash.split("?");
  const search = new URLSearchParams(query || "");
  const params = Object.fromEntries(search);
  const view = VIEWS[name];
  keys = null;
  drawn = false;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === (name === "session" || name === "tree" || name === "" ? "sessions" : name));
  main.setAttribute("data-view", name || "sessions");
  main.removeAttribute("data-ready");
  try {
    if (!view) throw new ApiError(`no page ${name}`);
    await view(params, search);
  } catch (err) {
    showError(err);
  }
  main.setAttribute("data-ready", "1");
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  const typing = t instanceof HTMLElement && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable);
  if (typing) {
    if (e.key === "Escape") t.blur();
    return;
  }
  if (e.key === "/") {
    const box = main.querySelector("input[type=search]");
    if (box) { e.preventDefault(); box.focus(); box.select(); }
    return;
  }
  if (e.key === "Enter" && t instanceof HTMLElement && t.matches("a, button, [tabindex]") && t !== document.body && t.id !== "timeline") return;
  if (keys) keys(e);
});

document.getElementById("store").textContent = CONFIG.store;
const mode = document.getElementById("mode");
mode.textContent = CONFIG.writes ? "writes allowed" : "read-only";
if (CONFIG.writes) mode.classList.add("writes");
window.addEventListener("hashchange", route);
route();
