// castate ui: renders what the JSON endpoints return. Every number and every diff comes
// from the server (castate's own library); this file only draws them.
"use strict";

const CONFIG = JSON.parse(document.getElementById("castate-config").textContent);
const main = document.getElementById("main");
const picks = { a: null, b: null }; // revisions chosen on timelines for the diff view

// -- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
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

function humanBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function localTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function href(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return `#/${view}${s ? "?" + s : ""}`;
}

function pointer(parts) {
  return parts.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

function unpointer(path) {
  if (!path) return [];
  return path.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

async function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const res = await fetch(`/api/${path}${q ? "?" + q : ""}`);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

async function act(action, body) {
  const res = await fetch(`/api/actions/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Castate-Token": CONFIG.token },
    body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function show(...children) {
  main.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function showError(err) {
  show(el("p", { class: "error", id: "error", text: err.message || String(err) }));
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
    const parts = [JSON.stringify(shown)];
    span.replaceChildren(...parts);
    if (long) span.append(el("button", { class: "fold", type: "button", text: open ? "fold" : `… ${text.length - FOLD_AT} more chars`, onclick: () => { open = !open; draw(); } }));
    if (total !== undefined && total > text.length && (open || !long)) span.append(el("span", { class: "muted", text: ` (${total} chars in all${more ? "; " : ""}` }), more || "", more ? ")" : "");
  };
  draw();
  return span;
}

function renderValue(v, moreLink) {
  if (v === null) return el("span", { class: "n", text: "null" });
  if (typeof v === "string") return foldedText(v, undefined, null);
  if (typeof v === "number" || typeof v === "boolean") return el("span", { class: "n", text: String(v) });
  if (Array.isArray(v)) {
    if (v.length === 0) return el("span", { text: "[]" });
    return el("ul", { class: "obj" }, v.map((x, i) => {
      if (x && typeof x === "object" && "$more" in x) return el("li", { class: "muted", text: `… ${x.$more} more items` });
      return el("li", {}, el("span", { class: "k", text: `${i}: ` }), renderValue(x, moreLink));
    }));
  }
  if ("$bytes" in v && Object.keys(v).length === 1) return el("span", { class: "n", text: `bytes ${v.$bytes.slice(0, 80)}${v.$bytes.length > 80 ? "…" : ""} (base64)` });
  const typed = Object.keys(v);
  if (typed.length === 1 && /^\$(datetime|date|time|timedelta|UUID|Decimal|float)$/.test(typed[0])) return el("span", { class: "n", text: `${typed[0].slice(1)} ${v[typed[0]]}` });
  if ("$folded" in v && "$length" in v) {
    if (typeof v.$folded === "string") return foldedText(v.$folded, v.$length, moreLink ? el("a", { href: moreLink, text: "open in the tree" }) : null);
    return el("span", { class: "n", text: `bytes, ${v.$length} in all (base64 head ${(v.$folded.$bytes || "").slice(0, 60)}…)` });
  }
  const keys = Object.keys(v);
  if (keys.length === 0) return el("span", { text: "{}" });
  return el("ul", { class: "obj" }, keys.map((k) => el("li", {}, el("span", { class: "k", text: `${k}: ` }), renderValue(v[k], moreLink))));
}

// -- sessions ---------------------------------------------------------------------------------

const COLUMNS = [
  { key: "session_id", label: "Session" },
  { key: "timestamp", label: "Last update" },
  { key: "saves", label: "Saves", num: true },
  { key: "checkpoints", label: "Checkpoints", num: true },
  { key: "logical_bytes", label: "Logical size", num: true },
  { key: "stored_bytes", label: "Stored", num: true },
];

async function sessionsView(params) {
  const data = await api("sessions");
  const rows = data.sessions;
  const state = { key: params.sort || "timestamp", asc: params.dir === "asc", filter: params.q || "" };
  const selected = new Set();
  const tbody = el("tbody");
  const head = el("tr", {}, el("th", { text: "" }), COLUMNS.map((c) => el("th", { "data-key": c.key, class: c.num ? "num" : null, text: c.label })));
  const search = el("input", { type: "search", id: "search", placeholder: "Search sessions", value: state.filter });
  const diffButton = el("button", { id: "diff-selected", type: "button", disabled: true, text: "Diff the two selected" });
  const count = el("span", { class: "muted", id: "session-count" });

  const draw = () => {
    const f = state.filter.toLowerCase();
    const shown = rows.filter((r) => r.session_id.toLowerCase().includes(f));
    shown.sort((x, y) => {
      const a = x[state.key];
      const b = y[state.key];
      const c = typeof a === "string" ? a.localeCompare(b) : a - b;
      return state.asc ? c : -c;
    });
    for (const th of head.querySelectorAll("th[data-key]")) {
      th.classList.toggle("sorted", th.dataset.key === state.key);
      th.classList.toggle("asc", th.dataset.key === state.key && state.asc);
    }
    count.textContent = `${shown.length} of ${rows.length} sessions`;
    tbody.replaceChildren(...shown.map((r) => el("tr", { class: "session-row", "data-session": r.session_id },
      el("td", {}, el("input", { type: "checkbox", checked: selected.has(r.session_id), onchange: (e) => {
        if (e.target.checked) selected.add(r.session_id); else selected.delete(r.session_id);
        diffButton.disabled = selected.size !== 2;
      } })),
      el("td", {}, el("a", { href: href("session", { id: r.session_id }), text: r.session_id }), r.paused ? el("span", { class: "badge", text: "paused" }) : null),
      el("td", { text: localTime(r.updated), title: r.updated }),
      el("td", { class: "num", text: String(r.saves) + (r.older_history_removed ? "+" : ""), title: r.older_history_removed ? "older saves were removed by gc" : null }),
      el("td", { class: "num", text: String(r.checkpoints) }),
      el("td", { class: "num", text: humanBytes(r.logical_bytes), title: `${r.logical_bytes} bytes: the latest state as a full copy` }),
      el("td", { class: "num", text: humanBytes(r.stored_bytes), title: `${r.stored_bytes} bytes of objects its saves added` }),
    )));
  };
  head.addEventListener("click", (e) => {
    const th = e.target.closest("th[data-key]");
    if (!th) return;
    if (state.key === th.dataset.key) state.asc = !state.asc;
    else { state.key = th.dataset.key; state.asc = th.dataset.key === "session_id"; }
    draw();
  });
  search.addEventListener("input", () => { state.filter = search.value; draw(); });
  diffButton.addEventListener("click", () => {
    const [a, b] = [...selected];
    location.hash = href("diff", { a: `session:${a}`, b: `session:${b}` });
  });
  draw();
  show(
    el("h1", { text: "Sessions" }),
    el("div", { class: "toolbar" }, search, diffButton, count),
    rows.length ? el("table", { id: "sessions-table" }, el("thead", {}, head), tbody) : el("p", { class: "muted", text: "No sessions in this store yet." }),
    el("p", { class: "muted", text: "Logical size: the latest state as a full copy. Stored: bytes of the objects the session's saves added (content shared with other sessions counts in each)." }),
  );
}

// -- a session's timeline -----------------------------------------------------------------------

async function sessionView(params) {
  const sid = params.id;
  const data = await api("timeline", { session: sid });
  const points = data.points;
  let selected = points.length - 1;
  const W = 1100;
  const H = 260;
  const pad = { l: 64, r: 20, t: 44, b: 34 };
  const step = points.length > 1 ? (W - pad.l - pad.r) / (points.length - 1) : 0;
  const x = (i) => pad.l + (points.length > 1 ? i * step : (W - pad.l - pad.r) / 2);
  const maxNew = Math.max(1, ...points.map((p) => p.new_bytes));
  const maxLogical = Math.max(1, ...points.map((p) => p.logical_bytes));
  const base = H - pad.b;
  const barW = Math.max(1, Math.min(18, step * 0.7 || 18));
  const chart = svg("svg", { id: "timeline", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  chart.append(
    svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: base, y2: base }),
    svg("text", { class: "axis", x: 4, y: pad.t + 4, text: humanBytes(maxNew) }),
    svg("text", { class: "axis", x: 4, y: base, text: "0" }),
  );
  if (points.length) {
    chart.append(svg("text", { class: "axis", x: pad.l, y: H - 8, text: localTime(points[0].time) }));
    chart.append(svg("text", { class: "axis", x: W - pad.r, y: H - 8, "text-anchor": "end", text: localTime(points[points.length - 1].time) }));
  }
  const bars = svg("g", { id: "bars" });
  const dots = svg("g", { id: "points" });
  const flags = svg("g", { id: "flags" });
  points.forEach((p, i) => {
    const h = (p.new_bytes / maxNew) * (base - pad.t);
    bars.append(svg("rect", { class: "tl-bar", x: x(i) - barW / 2, y: base - h, width: barW, height: Math.max(h, 0.5) },
      svg("title", { text: `${humanBytes(p.new_bytes)} newly stored (${p.new_objects} objects)` })));
    const circle = svg("circle", { class: "tl-point" + (p.session !== sid ? " inherited" : ""), cx: x(i), cy: base, r: points.length > 300 ? 2.5 : 4, "data-index": i, "data-commit": p.commit },
      svg("title", { text: `save ${i + 1} · ${localTime(p.time)} · ${p.commit.slice(0, 12)}\n${humanBytes(p.new_bytes)} new, ${humanBytes(p.logical_bytes)} logical` }));
    circle.addEventListener("click", () => select(i));
    dots.append(circle);
    p.checkpoints.forEach((c, k) => {
      const y = pad.t - 26 + (k % 2) * 12;
      flags.append(svg("g", { class: "tl-checkpoint", "data-checkpoint": c.checkpoint_id },
        svg("line", { x1: x(i), x2: x(i), y1: y, y2: base }),
        svg("polygon", { points: `${x(i)},${y} ${x(i) + 7},${y + 3} ${x(i)},${y + 6}` }),
        svg("text", { x: x(i) + 9, y: y + 7, text: c.name }),
        svg("title", { text: `checkpoint ${c.checkpoint_id}` })));
    });
    p.marks.forEach((m, k) => {
      flags.append(svg("path", { class: "tl-mark", "data-kind": m.kind, d: `M${x(i) - 5},${base + 14 + k * 10} l5,-8 l5,8 z` }, svg("title", { text: m.text })));
    });
  });
  const logical = svg("polyline", { class: "tl-logical", points: points.map((p, i) => `${x(i)},${base - (p.logical_bytes / maxLogical) * (base - pad.t)}`).join(" ") });
  chart.append(bars, logical, flags, dots);

  const details = el("div", { class: "panel", id: "point-details" });
  const compare = el("div", { class: "toolbar", id: "compare" });
  const rowsBody = el("tbody");

  function revOf(i) { return points[i].commit; }
  function drawCompare() {
    compare.replaceChildren(
      el("span", { text: `A: ${picks.a ? picks.a.slice(0, 12) : "–"}` }),
      el("span", { text: `B: ${picks.b ? picks.b.slice(0, 12) : "–"}` }),
      picks.a && picks.b ? el("a", { href: href("diff", { a: picks.a, b: picks.b }), id: "compare-link", text: "Compare A → B" }) : el("span", { class: "muted", text: "pick two saves (or checkpoints) to compare" }),
    );
  }
  function select(i) {
    selected = i;
    for (const c of dots.querySelectorAll(".tl-point")) c.classList.toggle("selected", Number(c.dataset.index) === i);
    const p = points[i];
    details.replaceChildren(
      el("h3", { text: `Save ${i + 1} of ${points.length}` }),
      el("dl", { class: "kv" },
        el("dt", { text: "time" }), el("dd", { text: localTime(p.time) }),
        el("dt", { text: "commit" }), el("dd", { class: "mono", text: p.commit }),
        el("dt", { text: "newly stored" }), el("dd", { text: `${humanBytes(p.new_bytes)} (${p.new_objects} objects)${p.complete ? "" : " — some objects are missing or damaged"}` }),
        el("dt", { text: "logical size" }), el("dd", { text: humanBytes(p.logical_bytes) }),
        p.session !== sid ? [el("dt", { text: "saved by" }), el("dd", { text: `session ${p.session}` })] : null,
        p.checkpoints.length ? [el("dt", { text: "checkpoints" }), el("dd", {}, p.checkpoints.map((c) => el("div", {}, el("code", { text: c.checkpoint_id }), " ", el("button", { type: "button", class: "fold", text: "A", onclick: () => { picks.a = c.checkpoint_id; drawCompare(); } }), el("button", { type: "button", class: "fold", text: "B", onclick: () => { picks.b = c.checkpoint_id; drawCompare(); } }))))] : null,
        p.marks.length ? [el("dt", { text: "marks" }), el("dd", { text: p.marks.map((m) => m.text).join("; ") })] : null,
      ),
      el("div", { class: "toolbar" },
        i > 0 ? el("a", { href: href("diff", { a: revOf(i - 1), b: revOf(i) }), id: "diff-previous", text: "Diff with the previous save" }) : null,
        el("a", { href: href("tree", { rev: revOf(i) }), id: "open-state", text: "Open this state" }),
        el("button", { type: "button", onclick: () => { picks.a = revOf(i); drawCompare(); }, text: "Use as A" }),
        el("button", { type: "button", onclick: () => { picks.b = revOf(i); drawCompare(); }, text: "Use as B" }),
      ),
    );
  }

  for (let i = points.length - 1; i >= 0; i--) {
    const p = points[i];
    rowsBody.append(el("tr", { class: "save-row", "data-commit": p.commit, onclick: () => select(i) },
      el("td", { class: "num", text: String(i + 1) }),
      el("td", { text: localTime(p.time) }),
      el("td", {}, el("code", { text: p.commit.slice(0, 12) })),
      el("td", { class: "num", text: humanBytes(p.new_bytes) }),
      el("td", { class: "num", text: humanBytes(p.logical_bytes) }),
      el("td", { text: p.checkpoints.map((c) => c.name).join(", ") }),
      el("td", { class: "muted", text: p.marks.map((m) => m.text).join("; ") + (p.session !== sid ? ` (${p.session})` : "") }),
    ));
  }

  const nCheckpoints = points.reduce((n, p) => n + p.checkpoints.length, 0) + data.checkpoints_elsewhere.length;
  show(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "Sessions" }), "›"),
    el("h1", {}, "Session ", el("code", { id: "session-title", text: sid })),
    el("p", { class: "summary" }, `${points.length} saves${data.older_history_removed ? " kept (older ones removed by gc)" : ""}, ${nCheckpoints} checkpoints; ${humanBytes(data.stored_bytes)} stored, ${humanBytes(points.length ? points[points.length - 1].logical_bytes : 0)} logical now.`),
    el("div", { class: "legend" },
      el("span", { style: null, class: "lg-bar", text: "bytes newly stored per save" }),
      el("span", { class: "lg-logical", text: "logical size of the state" }),
      el("span", { class: "lg-cp", text: "checkpoint" }),
      el("span", { class: "lg-mark", text: "fork / restore" })),
    chart,
    compare,
    details,
    CONFIG.writes ? actionsPanel(sid, () => points[selected]) : null,
    data.checkpoints_elsewhere.length ? el("div", { class: "panel" }, el("h3", { text: "Checkpoints not on this history" }),
      data.checkpoints_elsewhere.map((c) => el("div", {}, el("code", { text: c.checkpoint_id }), " ", el("a", { href: href("tree", { rev: c.checkpoint_id }), text: "open" })))) : null,
    el("h2", { text: "Saves, newest first" }),
    el("table", { id: "saves" }, el("thead", {}, el("tr", {}, ["#", "Time", "Commit", "New bytes", "Logical", "Checkpoints", "Marks"].map((t, k) => el("th", { class: k === 0 || k === 3 || k === 4 ? "num" : null, text: t })))), rowsBody),
  );
  drawCompare();
  if (points.length) select(selected);
}

function actionsPanel(sid, current) {
  // Present only when the server was started with --allow-writes.
  const result = el("p", { id: "action-result", class: "muted" });
  const run = async (action, body, done) => {
    try {
      const out = await act(action, body);
      result.className = "ok";
      result.textContent = done(out);
    } catch (err) {
      result.className = "error";
      result.textContent = err.message;
    }
  };
  const cpName = el("input", { type: "text", id: "checkpoint-name", placeholder: "checkpoint name" });
  const forkName = el("input", { type: "text", id: "fork-name", placeholder: "new session id" });
  return el("section", { class: "panel", id: "actions" },
    el("h3", { text: "Actions (this server allows writes)" }),
    el("div", { class: "row" }, cpName, el("button", { type: "button", id: "do-checkpoint", text: "Checkpoint the current state",
      onclick: () => run("checkpoint", { session: sid, name: cpName.value }, (o) => `Created checkpoint ${o.checkpoint_id}`) })),
    el("div", { class: "row" }, forkName, el("button", { type: "button", id: "do-fork", text: "Fork from the selected save",
      onclick: () => run("fork", { source: current().commit, new_session: forkName.value }, (o) => `Forked session ${o.session_id} at ${o.head.slice(0, 12)}`) })),
    el("div", { class: "row" }, el("button", { type: "button", id: "do-restore", text: "Restore the selected save into this session",
      onclick: () => run("restore", { source: current().commit, session: sid }, (o) => o.changed ? `Session ${o.session_id} is now at ${o.current.slice(0, 12)} (was ${(o.previous || "none").slice(0, 12)}); restore that commit to undo` : "Already there; nothing to do") })),
    result,
  );
}

// -- diff -----------------------------------------------------------------------------------------

async function diffView(params) {
  const a = params.a || picks.a || "";
  const b = params.b || picks.b || "";
  const revs = await api("revisions");
  const list = el("datalist", { id: "revisions" }, revs.sessions.map((s) => el("option", { value: s })), revs.checkpoints.map((c) => el("option", { value: c })));
  const ia = el("input", { type: "text", id: "diff-a", list: "revisions", placeholder: "A: session, checkpoint or commit", value: a });
  const ib = el("input", { type: "text", id: "diff-b", list: "revisions", placeholder: "B: session, checkpoint or commit", value: b });
  const go = el("button", { type: "button", class: "primary", id: "diff-go", text: "Compare", onclick: () => { location.hash = href("diff", { a: ia.value.trim(), b: ib.value.trim() }); } });
  const out = el("div", { id: "diff-result" });
  show(el("h1", { text: "Diff" }), list, el("div", { class: "toolbar" }, ia, el("span", { text: "→" }), ib, go), out);
  if (!a || !b) {
    out.append(el("p", { class: "muted", text: "Pick two states: session ids (their latest save), checkpoint ids or commit ids. A timeline's “Use as A / B” fills these in." }));
    return;
  }
  const d = await api("diff", { a, b });
  const treeLink = (rev, path) => href("tree", { rev, path });
  out.append(
    el("p", { class: "muted" }, `A = ${d.a.label} (${d.a.commit.slice(0, 12)}, ${localTime(d.a.time)}) · B = ${d.b.label} (${d.b.commit.slice(0, 12)}, ${localTime(d.b.time)})`),
    el("p", { id: "diff-summary", class: "summary" }, d.total === 0 ? "No differences." : `${d.total} changes: ${d.counts.add} added, ${d.counts.remove} removed, ${d.counts.replace} replaced${d.truncated ? ` (the first ${d.changes.length} shown)` : ""}`),
    el("ul", { class: "changes", id: "changes" }, d.changes.map((c) => {
      const side = c.op === "remove" ? d.a.rev : d.b.rev;
      const link = treeLink(side, c.path);
      return el("li", { class: `change change-${c.op}`, "data-op": c.op, "data-path": c.path },
        el("div", {}, el("span", { class: "op", text: { add: "added", remove: "removed", replace: "changed" }[c.op] }), el("a", { class: "mono path", href: link, text: c.path || "/" })),
        c.op === "replace" ? [el("div", { class: "val old" }, renderValue(c.old, treeLink(d.a.rev, c.path))), el("div", { class: "arrow", text: "↓" }), el("div", { class: "val new" }, renderValue(c.new, link))]
          : el("div", { class: "val" }, renderValue(c.op === "add" ? c.new : c.old, link)));
    })),
  );
}

// -- one state as a tree -------------------------------------------------------------------------

function kindText(item) {
  if (item.kind === "dict") return `dict · ${item.size} keys`;
  if (item.kind === "list") return `list · ${item.size} items`;
  if (item.kind === "str") return item.complete ? "" : `str · ${humanBytes(item.size)}`;
  if (item.kind === "bytes") return `bytes · ${humanBytes(item.size)}`;
  return "";
}

function scalarNode(rev, path, item) {
  const span = el("span", { class: "scalar" });
  if (item.kind === "str") {
    span.append(JSON.stringify(item.value) + (item.complete ? "" : "…"));
  } else if (item.kind === "bytes") {
    span.append(`base64 ${item.value.$bytes}${item.complete ? "" : "…"}`);
  } else {
    span.append(item.kind === "null" ? "null" : String(item.value));
  }
  if (!item.complete) {
    span.append(" ", el("button", { class: "fold", type: "button", text: "show all", onclick: async (e) => {
      e.target.disabled = true;
      try {
        const v = await api("value", { rev, path });
        span.replaceChildren(v.kind === "str" ? JSON.stringify(v.value) : `base64 ${v.value.$bytes}`);
      } catch (err) {
        span.append(el("span", { class: "error", text: err.message }));
      }
    } }));
  }
  return span;
}

function treeItem(rev, parts, item) {
  const path = pointer(parts);
  const li = el("li", { class: `node node-${item.kind}`, "data-path": path });
  const key = el("span", { class: "key", text: typeof item.key === "number" ? `[${item.key}]` : item.key });
  if (item.kind === "dict" || item.kind === "list") {
    let open = false;
    let box = null;
    const toggle = el("span", { class: "toggle", text: "▸" });
    const flip = async () => {
      open = !open;
      toggle.textContent = open ? "▾" : "▸";
      if (open && !box) {
        box = el("ul");
        li.append(box);
        await loadLevel(rev, parts, box, 0);
      } else if (box) {
        box.hidden = !open;
      }
    };
    toggle.addEventListener("click", flip);
    key.addEventListener("click", flip);
    li.append(toggle, key, el("span", { class: "kind", text: kindText(item) }));
  } else {
    li.append(el("span", { class: "toggle" }), key, el("span", { class: "kind", text: kindText(item) }), scalarNode(rev, path, item));
  }
  return li;
}

async function loadLevel(rev, parts, box, offset) {
  const data = await api("tree", { rev, path: pointer(parts), offset, limit: 200 });
  const node = data.node;
  if (!("items" in node)) {
    box.append(treeItem(rev, parts, node));
    return data;
  }
  for (const item of node.items) box.append(treeItem(rev, [...parts, item.key], item));
  const shown = node.offset + node.items.length;
  if (shown < node.total) {
    const more = el("li", {}, el("button", { type: "button", class: "fold more", text: `load more (${node.total - shown} left)`, onclick: async () => {
      more.remove();
      await loadLevel(rev, parts, box, shown);
    } }));
    box.append(more);
  }
  return data;
}

async function treeView(params) {
  const rev = params.rev;
  const parts = unpointer(params.path || "");
  const box = el("ul", { class: "tree", id: "tree" });
  const title = el("p", { class: "muted" });
  const crumbs = el("div", { class: "crumbs" }, el("a", { href: href("tree", { rev }), text: "root" }),
    parts.map((p, i) => [" / ", el("a", { href: href("tree", { rev, path: pointer(parts.slice(0, i + 1)) }), text: p })]));
  show(el("h1", {}, "State ", el("code", { text: rev })), title, crumbs, box);
  const data = await loadLevel(rev, parts, box, 0);
  title.textContent = `${data.label} · commit ${data.commit.slice(0, 12)} · saved ${localTime(data.time)}` + (data.session ? ` by session ${data.session}` : "");
  if (data.session) title.append(" · ", el("a", { href: href("session", { id: data.session }), text: "timeline" }));
}

// -- store health ---------------------------------------------------------------------------------

function runSummary(r) {
  if (r.op === "gc") return `deleted ${r.deleted} objects (${humanBytes(r.deleted_bytes)}) of ${r.objects}; ${r.reflog_expired} reflog entries expired${r.warnings && r.warnings.length ? `; ${r.warnings.length} warnings` : ""}`;
  return `${r.full ? "full" : "quick"} check of ${r.refs} refs, ${r.reachable} objects; ${r.problems} problems${r.quarantined ? `, ${r.quarantined} quarantined` : ""}${r.dangling !== null && r.dangling !== undefined ? `, ${r.dangling} dangling` : ""}`;
}

function lastRunPanel(id, title, run, command) {
  if (!run) return el("div", { class: "panel", id }, el("h3", { text: title }), el("p", { class: "muted", text: `No run recorded yet: \`${command}\` records its runs in the store.` }));
  return el("div", { class: "panel", id }, el("h3", { text: title }),
    el("dl", { class: "kv" },
      el("dt", { text: "when" }), el("dd", { text: `${localTime(new Date(run.time * 1000).toISOString())} (took ${run.seconds < 1 ? "under a second" : `${run.seconds.toFixed(1)} s`})` }),
      el("dt", { text: "result" }), el("dd", {}, el("span", { class: run.ok ? "ok" : "bad", text: run.ok ? "ok" : "problems" })),
      el("dt", { text: "summary" }), el("dd", { text: runSummary(run) }),
      el("dt", { text: "store on disk" }), el("dd", { text: humanBytes(run.store_bytes) }),
      run.damaged_refs && run.damaged_refs.length ? [el("dt", { text: "damaged refs" }), el("dd", { text: run.damaged_refs.join(", ") })] : null,
      run.warnings && run.warnings.length ? [el("dt", { text: "warnings" }), el("dd", { text: run.warnings.join("; ") })] : null,
    ));
}

function healthChart(runs, now) {
  // Store size on disk and logical size at each recorded run, in order, and now.
  const pts = runs.map((r) => ({ t: r.time, label: r.op, stored: r.store_bytes, logical: r.logical_bytes }));
  pts.push({ t: now.time, label: "now", stored: now.store_bytes, logical: now.logical_bytes });
  const W = 1100;
  const H = 240;
  const pad = { l: 70, r: 20, t: 16, b: 30 };
  const vmax = Math.max(1, ...pts.flatMap((p) => [p.stored || 0, p.logical || 0]));
  const x = (i) => pad.l + (pts.length > 1 ? (i / (pts.length - 1)) * (W - pad.l - pad.r) : (W - pad.l - pad.r) / 2);
  const y = (v) => H - pad.b - (v / vmax) * (H - pad.t - pad.b);
  const when = (t) => localTime(new Date(t * 1000).toISOString());
  const chart = svg("svg", { id: "health-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" },
    svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }),
    svg("text", { class: "axis", x: 4, y: pad.t + 8, text: humanBytes(vmax) }),
    svg("text", { class: "axis", x: 4, y: H - pad.b, text: "0" }));
  if (pts.length > 1) chart.append(svg("text", { class: "axis", x: pad.l, y: H - 8, text: `${pts[0].label} ${when(pts[0].t)}` }));
  chart.append(svg("text", { class: "axis", x: W - pad.r, y: H - 8, "text-anchor": "end", text: "now" }));
  for (const key of ["stored", "logical"]) {
    const have = pts.map((p, i) => [p, i]).filter(([p]) => p[key] !== null && p[key] !== undefined);
    chart.append(svg("polyline", { class: `h-${key}`, points: have.map(([p, i]) => `${x(i)},${y(p[key])}`).join(" ") }));
    for (const [p, i] of have) {
      chart.append(svg("circle", { class: `h-dot-${key} h-point`, cx: x(i), cy: y(p[key]), r: 3.5 },
        svg("title", { text: `${key === "stored" ? "on disk" : "logical"}: ${humanBytes(p[key])} (${p.label}, ${when(p.t)})` })));
    }
  }
  return chart;
}

async function healthView() {
  const h = await api("health");
  const n = h.now;
  const card = (label, value, id) => el("div", { class: "card", id }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
  show(
    el("h1", { text: "Store health" }),
    el("div", { class: "cards" },
      card("On disk", humanBytes(n.store_bytes), "card-disk"),
      card("Logical size", humanBytes(n.logical_bytes), "card-logical"),
      card("Dedup ratio", `${n.dedup_ratio.toFixed(1)}×`, "card-dedup"),
      card(`Objects (${humanBytes(n.object_bytes)})`, String(n.objects), "card-objects"),
      card("Sessions", String(n.sessions), "card-sessions"),
      card("Checkpoints", String(n.checkpoints), "card-checkpoints")),
    el("h2", { text: "Size on disk against logical size" }),
    el("div", { class: "legend" }, el("span", { class: "lg-stored", text: "on disk" }), el("span", { class: "lg-logical", text: "logical (every session and checkpoint as a full copy; fsck runs and now)" })),
    healthChart(h.runs, n),
    el("div", { class: "two" }, lastRunPanel("last-fsck", "Last fsck", h.last_fsck, "castate fsck"), lastRunPanel("last-gc", "Last gc", h.last_gc, "castate gc")),
    el("h2", { text: "Recorded runs" }),
    h.runs.length ? el("table", { id: "runs" }, el("thead", {}, el("tr", {}, ["When", "Run", "Result", "On disk", "Summary"].map((t) => el("th", { text: t })))),
      el("tbody", {}, [...h.runs].reverse().map((r) => el("tr", { class: "run-row" },
        el("td", { text: localTime(new Date(r.time * 1000).toISOString()) }), el("td", { text: r.op }),
        el("td", {}, el("span", { class: r.ok ? "ok" : "bad", text: r.ok ? "ok" : "problems" })),
        el("td", { class: "num", text: humanBytes(r.store_bytes) }), el("td", { text: runSummary(r) })))))
      : el("p", { class: "muted", text: "None yet." }),
  );
}

// -- routing ----------------------------------------------------------------------------------------

const VIEWS = { "": sessionsView, sessions: sessionsView, session: sessionView, diff: diffView, tree: treeView, health: healthView };

async function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query] = hash.split("?");
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  const view = VIEWS[name];
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === (name === "session" || name === "tree" || name === "" ? "sessions" : name));
  main.setAttribute("data-view", name || "sessions");
  main.removeAttribute("data-ready");
  try {
    if (!view) throw new Error(`no page ${name}`);
    await view(params);
  } catch (err) {
    showError(err);
  }
  main.setAttribute("data-ready", "1");
}

document.getElementById("store").textContent = CONFIG.store;
const mode = document.getElementById("mode");
mode.textContent = CONFIG.writes ? "writes allowed" : "read-only";
if (CONFIG.writes) mode.classList.add("writes");
window.addEventListener("hashchange", route);
route();
