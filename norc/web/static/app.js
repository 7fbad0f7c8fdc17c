/* Norc web page: one page, views addressed by the URL hash, data from the JSON API (api/).
 *
 * No framework and no build step. Everything shown comes from the server as data and is put
 * into the page with textContent (never as HTML), so names, errors and logs cannot inject
 * markup. Views refresh themselves by polling; controls ask for confirmation first.
 */
"use strict";

const REFRESH_MS = 2500;
const LOG_POLL_MS = 1500;
const LOG_TAIL_BYTES = 256 * 1024;
const PAGE = 50;
const GROUPS = ["all", "active", "running", "succeeded", "failed", "final", "error"];
const STATUSES = ["CREATED", "QUEUED", "RUNNING", "SUCCESS", "FAILURE", "ERROR", "TIMEDOUT",
  "INTERRUPTED", "SKIPPED", "HANDLED"];
const FAILED = new Set(["FAILURE", "ERROR", "TIMEDOUT", "INTERRUPTED"]);

const state = {
  session: null,
  token: sessionStorage.getItem("norc-token") || null,
  frame: { since: "1h", until: null },
  timers: [],
  generation: 0,
  depth: {}, // queue name -> [[time ms, depth], ...] sampled over the page's life
};

// -- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "vars") for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

function color(name) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(`--s-${name.toLowerCase()}`);
  return v.trim() || "#888";
}

function pad(n) { return String(n).padStart(2, "0"); }
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtSeconds(sec) {
  if (sec === null || sec === undefined) return "–";
  const a = Math.abs(sec);
  const sign = sec < 0 ? "-" : "";
  if (a < 0.01) return `${sign}${(a * 1000).toFixed(1)} ms`;
  if (a < 1) return `${sign}${Math.round(a * 1000)} ms`;
  if (a < 60) return `${sign}${a.toFixed(a < 10 ? 2 : 1)} s`;
  if (a < 3600) return `${sign}${Math.floor(a / 60)} m ${Math.round(a % 60)} s`;
  if (a < 86400) return `${sign}${Math.floor(a / 3600)} h ${Math.round((a % 3600) / 60)} m`;
  return `${sign}${Math.floor(a / 86400)} d ${Math.round((a % 86400) / 3600)} h`;
}
function ago(iso) {
  if (!iso) return "–";
  return fmtSeconds((Date.now() - new Date(iso).getTime()) / 1000) + " ago";
}
function timeCell(iso) { return h("span", { title: iso || "" }, fmtTime(iso)); }
function statusChip(status) { return h("span", { class: `status s-${status}` }, status); }
function dash(v) { return v === null || v === undefined || v === "" ? "–" : v; }

function toast(message, bad) {
  const el = h("div", { class: "toast" + (bad ? " bad" : ""), role: "status" }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 9000 : 5000);
}

// -- the API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { headers, credentials: "same-origin", cache: "no-store" };
  if (options.method === "POST") {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    headers[state.session.csrf_header] = state.session.csrf_token;
    init.body = JSON.stringify(options.body || {});
  }
  const response = await fetch(`api/${path}`, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401) askForToken(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

function frameParams() {
  return { since: state.frame.since, until: state.frame.until };
}

function askForToken(message) {
  const banner = document.getElementById("banner");
  if (!state.session || !state.session.auth.token || !banner.hidden) return;
  const input = h("input", { type: "password", placeholder: "token", autocomplete: "off", "aria-label": "token" });
  const form = h("form", {
    onsubmit: (ev) => {
      ev.preventDefault();
      state.token = input.value || null;
      if (state.token) sessionStorage.setItem("norc-token", state.token);
      banner.hidden = true;
      banner.replaceChildren();
      route();
    },
  }, input, h("button", { type: "submit", class: "primary" }, "Sign in"));
  banner.replaceChildren(h("span", {}, `${message}. Enter the access token:`), form);
  banner.hidden = false;
}

// -- controls ---------------------------------------------------------------------------------

async function act(question, path, body, done) {
  if (!window.confirm(question)) return;
  try {
    const result = await api(path, { method: "POST", body });
    toast(done(result));
  } catch (err) {
    toast(`Refused: ${err.message}`, true);
  }
  refreshNow();
}

function canChange() { return state.session && !state.session.read_only; }

function daemonActions(d) {
  if (!canChange()) return null;
  const kind = d.kind;
  const buttons = [];
  const request = (req, cls) => h("button", {
    class: cls || "",
    "data-action": `${req.toLowerCase()}-${kind}-${d.id}`,
    onclick: () => act(`${req} ${kind} ${d.id} on ${d.host} (pid ${d.pid})?`,
      `daemons/${d.id}/request`, { request: req },
      (r) => `${req} sent to ${kind} ${d.id} (status ${r.daemon.status})`),
  }, req.charAt(0) + req.slice(1).toLowerCase());
  if (!d.ended_at) {
    if (d.status === "PAUSED" || d.status === "SUSPENDED") buttons.push(request("RESUME"));
    else buttons.push(request("PAUSE"));
    if (kind === "scheduler") buttons.push(request("RELOAD"));
    buttons.push(request("STOP", "danger"));
    buttons.push(request("KILL", "danger"));
  }
  if (d.status === "ERROR") {
    buttons.push(h("button", {
      onclick: () => act(`Mark ${kind} ${d.id} as HANDLED?`, `daemons/${d.id}/handle`, {},
        () => `${kind} ${d.id} marked HANDLED`),
    }, "Handle"));
  }
  return h("span", { class: "actions" }, buttons);
}

const ACTIVE = new Set(["CREATED", "QUEUED", "RUNNING"]);

/** Stop a queued or running instance; a Job run is stopped with all its nodes. */
function stopButton(i) {
  if (!canChange() || !ACTIVE.has(i.status)) return null;
  const isJob = i.task_type === "Job";
  let what = isJob ? `job run #${i.id} (${i.task_name}) and all its nodes` : `instance #${i.id} of ${i.task_name}`;
  if (i.job_instance_id) what += ` (node ${i.job_node} of job run #${i.job_instance_id}; stopping that run stops every node)`;
  const effect = i.status === "RUNNING" ? (isJob ? "running nodes end INTERRUPTED, the rest SKIPPED" : "it ends INTERRUPTED")
    : "it ends SKIPPED";
  return h("button", {
    class: "danger",
    "data-action": `stop-instance-${i.id}`,
    onclick: () => act(`Stop ${what}? (${i.status}: ${effect})`, `instances/${i.id}/stop`, {},
      (r) => (r.stopped ? `${isJob ? "Job run" : "Instance"} #${i.id} stopped` : `#${i.id} had already ended`)),
  }, "Stop");
}

function runTaskButton(task) {
  if (!canChange()) return null;
  return h("button", {
    class: "primary",
    "data-action": `run-task-${task.id}`,
    onclick: () => act(`Run task ${task.name} now (queue default)?`, `tasks/${task.id}/run`, {},
      (r) => `Enqueued instance ${r.instance_id} of ${task.name}`),
  }, "Run task now");
}

function scheduleActions(sch) {
  if (!canChange() || sch.state === "deleted") return null;
  // A schedule set aside by its scheduler (state "error") fires again once resumed.
  const paused = sch.state === "paused" || sch.state === "error";
  const verb = paused ? "resume" : "pause";
  return h("button", {
    "data-action": `${verb}-schedule-${sch.id}`,
    onclick: () => act(`${paused ? "Resume" : "Pause"} schedule ${sch.id} of ${sch.task}?`,
      `schedules/${sch.id}/${verb}`, {}, () => `Schedule ${sch.id} ${paused ? "resumed" : "paused"}`),
  }, paused ? "Resume" : "Pause");
}

// -- tables -----------------------------------------------------------------------------------

function table(columns, rows, empty) {
  if (!rows.length) return h("div", { class: "empty" }, empty || "none");
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {},
      columns.map((c) => h("td", { class: (c.num ? "num " : "") + (c.wrap ? "wrap" : "") }, c.cell(row)))))));
}

function daemonTable(rows, kind) {
  const cols = [
    { label: "id", cell: (d) => h("a", { href: `#/daemon/${d.id}` }, `${kind} ${d.id}`) },
    { label: "host", cell: (d) => d.host },
    { label: "pid", cell: (d) => d.pid, num: true },
  ];
  if (kind === "executor") cols.push({ label: "queue", cell: (d) => dash(d.queue) });
  cols.push(
    {
      label: "status", cell: (d) => [statusChip(d.status), d.request ? h("span", { class: "muted" }, ` → ${d.request}`) : null,
        d.status === "ERROR" && d.error ? h("div", { class: "muted" }, d.error) : null],
    },
    {
      label: "heartbeat", cell: (d) => h("span", {},
        h("span", { class: `dot ${d.alive ? "alive" : "dead"}`, title: d.alive ? "alive" : "not alive" }), " ",
        d.heartbeat_age === null ? "–" : `${fmtSeconds(d.heartbeat_age)} ago`),
    },
  );
  if (kind === "executor") {
    cols.push(
      { label: "running", cell: (d) => d.running, num: true },
      { label: "succeeded", cell: (d) => d.succeeded, num: true },
      { label: "failed", cell: (d) => d.failed, num: true },
    );
  } else {
    cols.push({ label: "schedules", cell: (d) => d.schedules, num: true });
  }
  cols.push({ label: "", cell: (d) => daemonActions(d) });
  return table(cols, rows, `no ${kind}s`);
}

function instanceTable(rows) {
  return table([
    { label: "id", cell: (i) => h("a", { href: `#/instance/${i.id}` }, `#${i.id}`) },
    {
      label: "task", cell: (i) => [h("a", { href: `#/task/${i.task_id}` }, i.task_name),
        i.task_type === "Job" ? h("a", { class: "tag", href: `#/job/${i.id}`, title: "this Job run's graph" }, "graph") : null],
    },
    { label: "queue", cell: (i) => i.queue },
    { label: "status", cell: (i) => statusChip(i.status) },
    { label: "try", cell: (i) => i.attempt, num: true },
    { label: "created", cell: (i) => timeCell(i.created_at) },
    { label: "started", cell: (i) => timeCell(i.started_at) },
    { label: "duration", cell: (i) => fmtSeconds(i.duration), num: true },
    { label: "late", cell: (i) => fmtSeconds(i.lateness), num: true },
    { label: "host", cell: (i) => dash(i.host) },
    { label: "executor", cell: (i) => i.executor_id ? h("a", { href: `#/daemon/${i.executor_id}` }, i.executor_id) : "–" },
    { label: "exit", cell: (i) => dash(i.exit_code), num: true },
    { label: "error", cell: (i) => h("span", { title: i.error || "" }, dash(i.error && i.error.split("\n")[0])), wrap: true },
  ], rows, "no instances in this time frame");
}

// -- charts (inline SVG) ----------------------------------------------------------------------

const CW = 640, CH = 200, ML = 44, MR = 10, MT = 10, MB = 24;

function axisLabelTime(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400000) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}h`;
  if (spanMs > 3 * 3600000) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** A top for an axis of whole numbers with four even, whole steps. */
function intMax(v) {
  const need = Math.max(1, v / 4);
  const p = Math.pow(10, Math.floor(Math.log10(need)));
  for (const m of p >= 10 ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10]) if (m * p >= need) return 4 * m * p;
  return 40 * p;
}

function frameAxes(svg, x0, x1, yMax, yFmt) {
  const w = CW - ML - MR, hgt = CH - MT - MB;
  for (let k = 0; k <= 4; k++) {
    const y = MT + hgt - (hgt * k) / 4;
    svg.append(s("line", { class: "gridline", x1: ML, x2: CW - MR, y1: y, y2: y }));
    svg.append(s("text", { x: ML - 4, y: y + 3, "text-anchor": "end", text: yFmt((yMax * k) / 4) }));
  }
  svg.append(s("line", { class: "axis", x1: ML, x2: CW - MR, y1: MT + hgt, y2: MT + hgt }));
  for (let k = 0; k <= 4; k++) {
    const t = x0 + ((x1 - x0) * k) / 4;
    const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
    svg.append(s("text", { x: ML + (w * k) / 4, y: CH - 6, "text-anchor": anchor, text: axisLabelTime(t, x1 - x0) }));
  }
}

function legend(items) {
  return h("div", { class: "legend" }, items.map(([name, c]) => h("span", {}, h("i", { vars: { "--c": c } }), name)));
}

function stackedBars(data) {
  const edges = data.edges.map((e) => new Date(e).getTime());
  const statuses = STATUSES.filter((st) => data.counts[st]);
  const n = edges.length - 1;
  const totals = Array.from({ length: n }, (_, k) => statuses.reduce((a, st) => a + data.counts[st][k], 0));
  const yMax = intMax(Math.max(0, ...totals));
  const svg = s("svg", { viewBox: `0 0 ${CW} ${CH}`, role: "img", "aria-label": "instances per status over time" });
  frameAxes(svg, edges[0], edges[n], yMax, (v) => (Number.isInteger(v) ? v : v.toFixed(1)));
  const w = (CW - ML - MR) / n, hgt = CH - MT - MB;
  for (let k = 0; k < n; k++) {
    let y = MT + hgt;
    for (const st of statuses) {
      const v = data.counts[st][k];
      if (!v) continue;
      const bh = (hgt * v) / yMax;
      y -= bh;
      svg.append(s("rect", { x: ML + k * w + 1, y, width: Math.max(1, w - 2), height: bh, fill: color(st) },
        s("title", { text: `${fmtTime(data.edges[k])} – ${fmtTime(data.edges[k + 1])}\n${st}: ${v}` })));
    }
  }
  return h("div", { class: "chart" }, svg, legend(statuses.map((st) => [st, color(st)])));
}

function lineChart(series, opts) {
  const all = series.flatMap((se) => se.points);
  const svg = s("svg", { viewBox: `0 0 ${CW} ${CH}`, role: "img", "aria-label": opts.label });
  if (!all.length) return h("div", { class: "chart" }, h("div", { class: "empty" }, opts.empty || "no data yet"));
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  if (opts.x0 !== undefined) x0 = Math.min(x0, opts.x0);
  if (x1 === x0) x1 = x0 + 1000;
  const yMin = Math.min(0, ...all.map((p) => p[1]));
  const top = niceMax(Math.max(...all.map((p) => p[1])) - yMin);
  const yMax = (opts.integer ? intMax(Math.max(...all.map((p) => p[1])) - yMin) : top) + yMin;
  const w = CW - ML - MR, hgt = CH - MT - MB;
  const X = (t) => ML + (w * (t - x0)) / (x1 - x0);
  const Y = (v) => MT + hgt - (hgt * (v - yMin)) / (yMax - yMin || 1);
  frameAxes(svg, x0, x1, yMax - yMin, (v) => opts.yFmt(v + yMin));
  for (const se of series) {
    if (!se.points.length) continue;
    if (opts.line !== false) {
      const d = se.points.map((p, k) => `${k ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      svg.append(s("path", { d, fill: "none", stroke: se.color, "stroke-width": 1.6 }));
    }
    if (opts.dots !== false) {
      for (const p of se.points) {
        svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: p[2] ? color(p[2]) : se.color },
          s("title", { text: `${se.name}: ${opts.yFmt(p[1])} at ${fmtTime(new Date(p[0]).toISOString())}${p[3] ? ` (#${p[3]})` : ""}` })));
      }
    }
  }
  return h("div", { class: "chart" }, svg, legend(series.map((se) => [se.name, se.color])));
}

const PALETTE = ["#2f6fe0", "#e8871e", "#2e9e57", "#a3195b", "#5bb6d9", "#8c7bb8", "#c9a227"];

function sampleDepth(queues) {
  const now = Date.now();
  for (const q of queues) {
    if (q.depth === null) continue;
    const list = state.depth[q.name] || (state.depth[q.name] = []);
    list.push([now, q.depth]);
    if (list.length > 720) list.shift();
  }
}

function depthChart() {
  const names = Object.keys(state.depth).sort();
  return lineChart(names.map((name, k) => ({ name, color: PALETTE[k % PALETTE.length], points: state.depth[name] })),
    { label: "queue depth over time", yFmt: (v) => Math.round(v), dots: false, integer: true, empty: "sampling…" });
}

// -- the views --------------------------------------------------------------------------------

function setView(...children) {
  document.getElementById("view").replaceChildren(...children);
}

function slot(id) { return h("div", { id }); }
function fill(id, ...children) {
  const el = document.getElementById(id);
  if (el) el.replaceChildren(...children);
}

/** What a polled function returns to stop its polling (e.g. once a Job run is final). */
const STOP = Symbol("stop");

function every(ms, fn) {
  const gen = state.generation;
  let busy = false;
  let first = true;
  const timer = {};
  const tick = async () => {
    if (busy || gen !== state.generation) return;
    busy = true;
    try {
      const result = await fn();
      const stamp = `updated ${new Date().toLocaleTimeString()}`;
      if (result === STOP) clearInterval(timer.id);
      document.getElementById("updated").textContent = result === STOP ? `${stamp} · final` : stamp;
    } catch (err) {
      if (gen !== state.generation) return;
      document.getElementById("updated").textContent = `error: ${err.message}`;
      if (first) {
        document.getElementById("view").prepend(h("pre", { class: "error", id: "view-error" }, err.message));
      }
    } finally {
      busy = false;
      first = false;
    }
  };
  timer.tick = tick;
  timer.id = setInterval(tick, ms);
  state.timers.push(timer);
  return tick();
}

function refreshNow() { for (const t of state.timers) t.tick(); }

function hashQuery() {
  const hash = location.hash.replace(/^#/, "");
  const i = hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : "");
}

function setHashQuery(params) {
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  const q = new URLSearchParams(params);
  for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
  const text = q.toString();
  history.replaceState(null, "", `#${path}${text ? `?${text}` : ""}`);
}

/** A paginated instance list with status filters and a task search, for any extra filter. */
function instanceList(baseFilter, options = {}) {
  const q = hashQuery();
  const filter = { status: q.get("status") || "", task: q.get("task") || "" };
  const cursor = { before: null, stack: [] };
  let typing = null;
  const countsSlot = h("div", { class: "counts" });
  const listSlot = h("div", {});
  const pager = h("div", { class: "pager" });
  const search = h("input", {
    type: "search", placeholder: "search task names", value: filter.task, "aria-label": "search task names",
    oninput: () => {
      clearTimeout(typing);
      typing = setTimeout(() => { filter.task = search.value.trim(); remember(); reset(); }, 250);
    },
  });
  const buttons = GROUPS.map((g) => h("button", {
    class: `s-${g}`, "data-group": g,
    onclick: () => { filter.status = g === "all" ? "" : g; remember(); reset(); },
  }, g));
  function remember() {
    if (options.remember) setHashQuery({ ...Object.fromEntries(hashQuery()), status: filter.status, task: filter.task });
    for (const b of buttons) b.classList.toggle("active", (b.dataset.group === "all" ? "" : b.dataset.group) === filter.status);
  }
  remember();
  function reset() { cursor.before = null; cursor.stack = []; load(); }
  async function load() {
    const params = { ...frameParams(), ...baseFilter, status: filter.status, limit: PAGE, before_id: cursor.before };
    if (!baseFilter.task_id) params.task = filter.task;
    const data = await api(`instances${query(params)}`);
    listSlot.replaceChildren(instanceTable(data.instances));
    pager.replaceChildren(
      h("button", { disabled: !cursor.stack.length, onclick: () => { cursor.before = cursor.stack.pop() || null; load(); } }, "← Newer"),
      h("button", { disabled: !data.next_before_id, "data-action": "older", onclick: () => { cursor.stack.push(cursor.before); cursor.before = data.next_before_id; load(); } }, "Older →"),
    );
  }
  const toolbar = h("div", { class: "toolbar" }, h("span", { class: "filters" }, buttons), baseFilter.task_id || baseFilter.schedule ? null : search);
  const el = h("div", {}, toolbar, countsSlot, listSlot, pager);
  return {
    el,
    refresh: () => (cursor.before === null ? load() : Promise.resolve()),
    countsSlot,
  };
}

async function overview() {
  const list = instanceList({}, { remember: true });
  setView(
    h("h1", {}, "Overview"),
    slot("ov-counts"),
    h("section", { class: "panel" }, h("h2", {}, "Executors ", h("span", { class: "muted" }, "alive")), slot("ov-executors")),
    h("section", { class: "panel" }, h("h2", {}, "Schedulers ", h("span", { class: "muted" }, "alive")), slot("ov-schedulers")),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Instances over time ", h("span", { class: "muted" }, "created, by status")), slot("ov-chart")),
      h("section", { class: "panel" }, h("h2", {}, "Queues ", h("span", { class: "muted" }, "depth sampled while this page is open")), slot("ov-queues"), slot("ov-depth"))),
    h("section", { class: "panel" }, h("h2", {}, "Instances"), list.el),
  );
  await every(REFRESH_MS, async () => {
    const [st, chart] = await Promise.all([
      api(`status${query({ since: state.frame.since })}`),
      api(`charts/instances${query({ ...frameParams(), buckets: 40 })}`),
      list.refresh(),
    ]);
    sampleDepth(st.queues);
    const groupCounts = {
      active: ["CREATED", "QUEUED", "RUNNING"], succeeded: ["SUCCESS"], failed: [...FAILED],
      error: ["ERROR"], handled: ["HANDLED"],
    };
    fill("ov-counts", h("div", { class: "counts" }, Object.entries(groupCounts).map(([g, members]) =>
      h("div", { class: `count s-${g === "handled" ? "HANDLED" : g}`, title: members.join(", ") },
        h("div", { class: "n" }, members.reduce((a, m) => a + (st.instances[m] || 0), 0)),
        h("div", { class: "l" }, `${g} · ${frameLabel()}`)))));
    fill("ov-executors", daemonTable(st.executors, "executor"));
    fill("ov-schedulers", daemonTable(st.schedulers, "scheduler"));
    fill("ov-chart", stackedBars(chart));
    fill("ov-queues", table([
      { label: "queue", cell: (q) => q.name },
      { label: "type", cell: (q) => q.type },
      { label: "depth", cell: (q) => dash(q.depth), num: true },
      { label: "consumers", cell: (q) => q.consumers, num: true },
    ], st.queues, "no queues"));
    fill("ov-depth", depthChart());
  });
}

function frameLabel() {
  return state.frame.until || state.frame.since.includes("T") ? "custom" : state.frame.since;
}

async function tasksView() {
  setView(h("h1", {}, "Tasks"), h("section", { class: "panel" }, slot("tasks")));
  await every(REFRESH_MS * 2, async () => {
    const rows = await api(`tasks${query({ since: state.frame.since })}`);
    fill("tasks", table([
      { label: "id", cell: (t) => t.id, num: true },
      { label: "name", cell: (t) => h("a", { href: `#/task/${t.id}` }, t.name) },
      { label: "type", cell: (t) => t.type },
      { label: "running", cell: (t) => t.running, num: true },
      { label: "succeeded", cell: (t) => t.succeeded, num: true },
      { label: "failed", cell: (t) => t.failed, num: true },
      { label: "success", cell: (t) => (t.success_rate === null ? "–" : `${(t.success_rate * 100).toFixed(1)} %`), num: true },
      { label: "next fire", cell: (t) => timeCell(t.next_fire) },
      { label: "", cell: (t) => runTaskButton(t) },
    ], rows, "no tasks saved"));
  });
}

function scheduleTable(rows, withTask) {
  const cols = [{ label: "id", cell: (r) => h("a", { href: `#/schedule/${r.id}` }, `schedule ${r.id}`) }];
  if (withTask) cols.push({ label: "task", cell: (r) => r.task });
  cols.push(
    { label: "when", cell: (r) => h("code", {}, r.when) },
    { label: "tz", cell: (r) => r.timezone },
    { label: "queue", cell: (r) => r.queue },
    {
      label: "state", wrap: true, cell: (r) => [h("span", { class: `status s-${r.state}`, title: r.error || "" }, r.state),
        r.error ? h("div", { class: "muted" }, r.error) : null],
    },
    { label: "next fire", cell: (r) => timeCell(r.next_fire) },
  );
  if (rows.length && rows[0].next_fires) {
    cols.push({ label: "then", cell: (r) => (r.next_fires || []).slice(1).map(fmtTime).join(", ") || "–", wrap: true });
  }
  cols.push(
    { label: "remaining", cell: (r) => dash(r.remaining), num: true },
    { label: "scheduler", cell: (r) => (r.scheduler ? h("a", { href: `#/daemon/${r.scheduler}` }, r.scheduler) : "–") },
    { label: "", cell: (r) => scheduleActions(r) },
  );
  return table(cols, rows, "no schedules");
}

async function schedulesView() {
  setView(h("h1", {}, "Schedules"), h("section", { class: "panel" }, slot("schedules")));
  await every(REFRESH_MS * 2, async () => {
    fill("schedules", scheduleTable(await api("schedules"), true));
  });
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function taskView(id) {
  const list = instanceList({ task_id: id });
  setView(slot("task-head"), h("div", { class: "grid" },
    h("section", { class: "panel" }, h("h2", {}, "Task"), slot("task-facts")),
    h("section", { class: "panel" }, h("h2", {}, "Duration and lateness ", h("span", { class: "muted" }, "latest runs")), slot("task-chart"))),
  h("section", { class: "panel" }, h("h2", {}, "Schedules"), slot("task-schedules")),
  h("section", { class: "panel" }, h("h2", {}, "Instances"), list.el));
  await every(REFRESH_MS * 2, async () => {
    const [data, runs] = await Promise.all([
      api(`tasks/${id}${query({ since: state.frame.since })}`),
      api(`tasks/${id}/runs${query({ ...frameParams(), limit: 200 })}`),
      list.refresh(),
    ]);
    const t = data.task;
    fill("task-head", h("h1", {}, `Task ${t.name}`, runTaskButton(t)));
    fill("task-facts", facts([
      ["id", t.id], ["type", t.type], ["plugin", t.plugin], ["class", h("code", {}, data.record.type_path)],
      ["description", dash(t.description)], ["timeout", t.timeout === null ? "none" : fmtSeconds(t.timeout)],
      [`runs (${frameLabel()})`, `${t.succeeded} succeeded, ${t.failed} failed, ${t.running} running`],
      ["success rate", t.success_rate === null ? "–" : `${(t.success_rate * 100).toFixed(1)} %`],
      ["next fire", timeCell(t.next_fire)],
      ["params", h("pre", { class: "json" }, JSON.stringify(t.params, null, 2))],
    ]));
    fill("task-schedules", scheduleTable(data.schedules, false));
    const pts = (key) => runs.runs.filter((r) => r[key] !== null)
      .map((r) => [new Date(r.started_at || r.created_at).getTime(), r[key], r.status, r.id]);
    fill("task-chart", lineChart([
      { name: "duration", color: "#2f6fe0", points: pts("duration") },
      { name: "lateness", color: "#e8871e", points: pts("lateness") },
    ], { label: "duration and lateness of runs", yFmt: fmtSeconds, empty: "no runs in this time frame" }));
  });
}

async function scheduleView(id) {
  const list = instanceList({ schedule: id });
  setView(slot("sch-head"), h("div", { class: "grid" },
    h("section", { class: "panel" }, h("h2", {}, "Schedule"), slot("sch-facts")),
    h("section", { class: "panel" }, h("h2", {}, "Next fires"), slot("sch-next"))),
  h("section", { class: "panel" }, h("h2", {}, "Instances"), list.el));
  await every(REFRESH_MS * 2, async () => {
    const [data] = await Promise.all([api(`schedules/${id}`), list.refresh()]);
    const r = data.schedule, rec = data.record;
    fill("sch-head", h("h1", {}, `Schedule ${r.id}`, h("span", { class: `status s-${r.state}` }, r.state), scheduleActions(r)));
    fill("sch-facts", facts([
      ["task", h("a", { href: `#/task/${rec.task_id}` }, r.task)], ["when", h("code", {}, r.when)],
      ["spec", h("code", {}, dash(r.spec))], ["kind", r.kind], ["timezone", r.timezone], ["queue", r.queue],
      ["repetitions", r.repetitions || "forever"], ["remaining", dash(r.remaining)],
      ["make up missed fires", r.make_up ? "yes" : "no"],
      ["scheduler", r.scheduler ? h("a", { href: `#/daemon/${r.scheduler}` }, r.scheduler) : "none"],
      ["revision", rec.revision],
    ]));
    fill("sch-next", data.next_fires.length
      ? h("ol", {}, data.next_fires.map((f) => h("li", { title: `${fmtTime(f)} in this browser's time` },
        `${f.slice(0, 10)} ${f.slice(11, 19)} ${(f.match(/([+-]\d\d:\d\d|Z)$/) || [""])[0]} ${r.timezone}`)))
      : h("div", { class: "empty" }, r.state === "paused" ? "paused" : "no more fires"));
  });
}

function logViewer(kind, id) {
  const pre = h("pre", { class: "log", id: "log", "aria-label": "log" });
  const info = h("span", { class: "muted" });
  const follow = h("input", { type: "checkbox", checked: true, id: "follow" });
  let next = -LOG_TAIL_BYTES;
  let done = false;
  let start = null;
  function append(text) {
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
    for (const line of text.split(/(?<=\n)/)) {
      pre.append(line.startsWith("[norc] ") ? h("span", { class: "norc" }, line) : document.createTextNode(line));
    }
    while (pre.childNodes.length > 20000) pre.firstChild.remove(); // keep the page light
    if (follow.checked && atBottom) pre.scrollTop = pre.scrollHeight;
  }
  async function poll() {
    if (done) return;
    let data;
    try {
      data = await api(`${kind}/${id}/log${query({ offset: next })}`);
    } catch (err) {
      if (err.status === 404) { info.textContent = err.message; return; }
      throw err;
    }
    if (start === null) {
      start = data.offset;
      if (start > 0) pre.append(h("span", { class: "norc" }, `… ${start} earlier bytes not shown\n`));
    }
    append(data.text);
    next = data.next_offset;
    info.textContent = `${data.size} bytes (${data.source})${data.final ? "" : " · following"}`;
    if (data.final && data.eof) done = true;
    else if (!data.eof) return poll();
  }
  return {
    el: h("div", {}, h("div", { class: "loginfo" }, info,
      h("label", {}, follow, " follow"),
      h("a", { href: `api/${kind}/${id}/log?offset=0&limit=1048576`, target: "_blank", rel: "noopener" }, "raw (JSON)")), pre),
    poll,
  };
}

async function instanceView(id) {
  const logv = logViewer("instances", id);
  setView(slot("inst-head"),
    h("section", { class: "panel" }, h("h2", {}, "Instance"), slot("inst-facts")),
    h("section", { class: "panel" }, h("h2", {}, "Log"), logv.el));
  let lastTask = null;
  await every(LOG_POLL_MS, async () => {
    const [{ instance: i }] = await Promise.all([api(`instances/${id}`), logv.poll()]);
    lastTask = { id: i.task_id, name: i.task_name };
    const handle = canChange() && FAILED.has(i.status) ? h("button", {
      "data-action": `handle-instance-${i.id}`,
      onclick: () => act(`Mark instance ${i.id} (${i.status}) as HANDLED?`, `instances/${i.id}/handle`, {},
        () => `Instance ${i.id} marked HANDLED`),
    }, "Handle") : null;
    fill("inst-head", h("h1", {}, `Instance #${i.id}`, statusChip(i.status), handle, stopButton(i), runTaskButton(lastTask)));
    fill("inst-facts", facts([
      ["task", h("a", { href: `#/task/${i.task_id}` }, `${i.task_name} (${i.task_type})`)],
      i.task_type === "Job" ? ["graph", h("a", { href: `#/job/${i.id}` }, "this Job run, node by node")] : null,
      ["queue", i.queue], ["attempt", i.attempt], ["priority", i.priority],
      i.job_instance_id ? ["job", h("a", { href: `#/job/${i.job_instance_id}` }, `job instance #${i.job_instance_id} · node ${dash(i.job_node)}`)] : null,
      ["schedule", i.schedule_id ? h("a", { href: `#/schedule/${i.schedule_id}` }, `schedule ${i.schedule_id}`) : "none (enqueued by hand)"],
      ["fire time", timeCell(i.fire_time)], ["created", timeCell(i.created_at)], ["enqueued", timeCell(i.enqueued_at)],
      ["started", timeCell(i.started_at)], ["ended", timeCell(i.ended_at)],
      ["duration", fmtSeconds(i.duration)], ["lateness", fmtSeconds(i.lateness)],
      ["executor", i.executor_id ? h("a", { href: `#/daemon/${i.executor_id}` }, `executor ${i.executor_id}`) : "–"],
      ["host / pid", `${dash(i.host)} / ${dash(i.pid)}`], ["exit code", dash(i.exit_code)],
      ["revision", dash(i.revision)], ["log", h("code", {}, dash(i.log_location || i.log_key))],
      i.error ? ["error", h("pre", { class: "error" }, i.error)] : null,
    ]));
  });
}

async function daemonView(id) {
  const logv = logViewer("daemons", id);
  setView(slot("d-head"), h("section", { class: "panel" }, h("h2", {}, "Details"), slot("d-facts")),
    h("section", { class: "panel" }, h("h2", {}, "Log"), logv.el), slot("d-more"));
  let list = null;
  await every(REFRESH_MS, async () => {
    const [{ daemon: d }] = await Promise.all([api(`daemons/${id}`), logv.poll(), list ? list.refresh() : null]);
    if (list === null && d.kind === "executor") {
      list = instanceList({ executor: id });
      fill("d-more", h("section", { class: "panel" }, h("h2", {}, "Instances it ran"), list.el));
      await list.refresh();
    } else if (d.kind === "scheduler") {
      const rows = (await api("schedules")).filter((r) => r.scheduler === d.id);
      fill("d-more", h("section", { class: "panel" }, h("h2", {}, "Schedules it holds"), scheduleTable(rows, true)));
    }
    fill("d-head", h("h1", {}, `${d.kind} ${d.id}`, statusChip(d.status), daemonActions(d)));
    fill("d-facts", facts([
      ["host", d.host], ["pid", d.pid], d.kind === "executor" ? ["queue", d.queue] : null,
      d.kind === "executor" ? ["concurrency", d.concurrency] : null,
      ["alive", d.alive ? "yes" : "no"], ["heartbeat", `${timeCell(d.heartbeat).textContent} (${dash(d.heartbeat_age)} s ago)`],
      ["pending request", dash(d.request)], ["started", timeCell(d.started_at)], ["ended", timeCell(d.ended_at)],
      d.kind === "executor" ? ["instances", `${d.running} running, ${d.succeeded} succeeded, ${d.failed} failed`] : ["schedules", d.schedules],
      d.error ? ["error", h("pre", { class: "error" }, d.error)] : null,
    ]));
  });
}

async function daemonsView() {
  setView(h("h1", {}, "Daemons"),
    h("section", { class: "panel" }, h("h2", {}, "Executors ", h("span", { class: "muted" }, "alive, or ended in the time frame")), slot("all-ex")),
    h("section", { class: "panel" }, h("h2", {}, "Schedulers"), slot("all-sch")));
  await every(REFRESH_MS, async () => {
    const [ex, sch] = await Promise.all([
      api(`executors${query({ since: state.frame.since, limit: 200 })}`),
      api(`schedulers${query({ since: state.frame.since, limit: 200 })}`),
    ]);
    fill("all-ex", daemonTable(ex, "executor"));
    fill("all-sch", daemonTable(sch, "scheduler"));
  });
}

// -- a Job run: its nodes as a graph (inline SVG) and a table -------------------------------------

const NODE_W = 176, NODE_H = 46, LANE_H = 12, GAP_X = 64, GAP_Y = 16, PAD = 12;

function clip(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

/** A node's parents from its `after` text ("a, b" or "-"), even when names hold ", ". */
function parentsOf(after, names) {
  if (after === "-") return [];
  const found = [];
  let rest = after;
  while (rest) {
    const name = names.filter((n) => rest === n || rest.startsWith(`${n}, `)).sort((a, b) => b.length - a.length)[0];
    if (name === undefined) return after.split(", "); // not ours: plain split
    found.push(name);
    rest = rest.slice(name.length + 2);
  }
  return found;
}

/**
 * A layered drawing: a node's column is its depth (1 + the deepest parent's; roots 1). An
 * edge that skips columns gets a lane (a thin placeholder) in each column it crosses, so it
 * runs between boxes, never behind one. Within a column, items are ordered by the average
 * place of their neighbours (down, up, down again), which keeps edges short and few crossing.
 */
function layout(rows) {
  const names = rows.map((r) => r.node);
  const depth = {};
  const items = {}; // id -> {id, node?, col, prev: [ids], next: [ids]}
  for (const r of rows) { // rows come in dependency order: parents first
    r.parents = parentsOf(r.after, names).filter((p) => depth[p] !== undefined);
    depth[r.node] = r.parents.length ? 1 + Math.max(...r.parents.map((p) => depth[p])) : 1;
    items[r.node] = { id: r.node, row: r, col: depth[r.node] - 1, prev: [], next: [] };
  }
  const edges = [];
  for (const r of rows) {
    for (const p of r.parents) {
      const path = [p];
      for (let c = depth[p]; c < depth[r.node] - 1; c++) {
        const id = `\u0000${p}\u0000${r.node}\u0000${c}`;
        items[id] = { id, lane: true, col: c, prev: [], next: [] };
        path.push(id);
      }
      path.push(r.node);
      for (let k = 1; k < path.length; k++) {
        items[path[k - 1]].next.push(path[k]);
        items[path[k]].prev.push(path[k - 1]);
      }
      edges.push({ from: p, to: r.node, path });
    }
  }
  const columns = [];
  for (const item of Object.values(items)) (columns[item.col] ||= []).push(item);
  const place = {};
  const number = (col) => col.forEach((it, k) => { place[it.id] = k; });
  columns.forEach(number);
  const sweep = (cols, side) => cols.forEach((col) => {
    const key = (it) => (it[side].length ? it[side].reduce((a, n) => a + place[n], 0) / it[side].length : place[it.id]);
    const keys = new Map(col.map((it) => [it, key(it)]));
    col.sort((a, b) => keys.get(a) - keys.get(b) || place[a.id] - place[b.id]);
    number(col);
  });
  sweep(columns.slice(1), "prev");
  sweep(columns.slice(0, -1).reverse(), "next");
  sweep(columns.slice(1), "prev");
  const span = (col) => col.reduce((a, it) => a + (it.lane ? LANE_H : NODE_H), 0) + (col.length - 1) * GAP_Y;
  const height = PAD * 2 + Math.max(...columns.map(span));
  const pos = {};
  columns.forEach((col, c) => {
    let y = (height - span(col)) / 2;
    for (const it of col) {
      const hgt = it.lane ? LANE_H : NODE_H;
      pos[it.id] = { x: PAD + c * (NODE_W + GAP_X), y, h: hgt };
      y += hgt + GAP_Y;
    }
  });
  const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X;
  return { pos, edges, width, height };
}

function jobGraph(rows) {
  if (!rows.length) return h("div", { class: "empty" }, "this Job has no nodes");
  const { pos, edges, width, height } = layout(rows);
  const svg = s("svg", {
    class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `the Job's ${rows.length} nodes and their dependencies`,
  }, s("defs", {}, s("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  // Each edge leaves its parent and enters its child at its own height, in the order of
  // what lies at its other end, so edges do not cross at the boxes or share an arrowhead.
  const outs = {}, ins = {};
  for (const e of edges) { (outs[e.from] ||= []).push(e); (ins[e.to] ||= []).push(e); }
  const portOf = (groups, neighbour) => {
    const at = new Map();
    for (const list of Object.values(groups)) {
      list.sort((a, b) => pos[neighbour(a)].y - pos[neighbour(b)].y);
      list.forEach((e, k) => at.set(e, (k + 1) / (list.length + 1)));
    }
    return at;
  };
  const outAt = portOf(outs, (e) => e.path[1]);
  const inAt = portOf(ins, (e) => e.path[e.path.length - 2]);
  const curve = (x1, y1, x2, y2) => {
    const bend = Math.max(20, (x2 - x1) / 2);
    return `C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
  };
  for (const e of edges) {
    const a = pos[e.from], b = pos[e.to];
    let x = a.x + NODE_W, y = a.y + a.h * outAt.get(e);
    let d = `M${x},${y}`;
    for (const lane of e.path.slice(1, -1)) { // through each lane: in, straight across, out
      const l = pos[lane], ly = l.y + l.h / 2;
      d += ` ${curve(x, y, l.x, ly)} L${l.x + NODE_W},${ly}`;
      x = l.x + NODE_W; y = ly;
    }
    d += ` ${curve(x, y, b.x - 1, b.y + b.h * inAt.get(e))}`;
    svg.append(s("path", { class: "edge", "data-edge": `${e.from} -> ${e.to}`, "marker-end": "url(#arrow)", d }));
  }
  for (const r of rows) {
    const { x, y } = pos[r.node];
    const status = r.status || "PENDING";
    const tip = [`${r.node} (task ${r.task})`, `${status}${r.attempt > 1 ? `, attempt ${r.attempt}` : ""}`,
      r.after === "-" ? "no parents" : `after ${r.after}`, r.error || "",
      r.instance ? `instance #${r.instance}: click to open` : "not started"].filter(Boolean).join("\n");
    const box = s("g", { class: `node s-${status}`, "data-node": r.node, "data-status": status, transform: `translate(${x},${y})` },
      s("title", { text: tip }),
      s("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
      s("text", { class: "name", x: 10, y: 19, text: clip(r.node, 22) }),
      s("text", { class: "sub", x: 10, y: 36, text: clip(`${status}${r.attempt > 1 ? ` ×${r.attempt}` : ""} · ${r.task}`, 28) }));
    svg.append(r.instance ? s("a", { href: `#/instance/${r.instance}`, "data-instance": r.instance }, box) : box);
  }
  return h("div", { class: "graph-wrap" }, svg);
}

function nodeSummary(rows) {
  const counts = {};
  for (const r of rows) counts[r.status] = (counts[r.status] || 0) + 1;
  return h("span", { class: "chips" }, Object.entries(counts).map(([st, n]) => h("span", { class: `status s-${st}` }, `${n} ${st}`)));
}

async function jobView(id) {
  setView(slot("job-head"),
    h("div", { class: "grid job" },
      h("section", { class: "panel" }, h("h2", {}, "Job run"), slot("job-facts")),
      h("section", { class: "panel" }, h("h2", {}, "Graph ", h("span", { class: "muted" }, "columns by dependency depth; click a node for its instance and log")), slot("job-graph"))),
    h("section", { class: "panel" }, h("h2", {}, "Nodes ", h("span", { class: "muted" }, "in dependency order")), slot("job-nodes")));
  await every(REFRESH_MS, async () => {
    const data = await api(`jobs/${id}`);
    const i = data.instance, rows = data.nodes;
    fill("job-head", h("h1", {}, `Job run #${i.id}`, h("span", { class: "muted" }, data.job), statusChip(i.status),
      stopButton(i), runTaskButton({ id: i.task_id, name: i.task_name })));
    fill("job-graph", jobGraph(rows));
    fill("job-facts", facts([
      ["job", h("a", { href: `#/task/${i.task_id}` }, data.job)],
      ["status", statusChip(i.status)], ["nodes", nodeSummary(rows)],
      ["queue", i.queue], ["attempt", i.attempt],
      i.job_instance_id ? ["inside", h("a", { href: `#/job/${i.job_instance_id}` }, `job run #${i.job_instance_id} · node ${dash(i.job_node)}`)] : null,
      ["schedule", i.schedule_id ? h("a", { href: `#/schedule/${i.schedule_id}` }, `schedule ${i.schedule_id}`) : "none (enqueued by hand)"],
      ["created", timeCell(i.created_at)], ["started", timeCell(i.started_at)], ["ended", timeCell(i.ended_at)],
      ["duration", fmtSeconds(i.duration)], ["instance", h("a", { href: `#/instance/${i.id}` }, `instance #${i.id}`)],
      i.error ? ["error", h("pre", { class: "error" }, i.error)] : null,
    ]));
    const duration = (r) => (r.started_at && r.ended_at ? (new Date(r.ended_at) - new Date(r.started_at)) / 1000 : null);
    fill("job-nodes", table([
      { label: "node", cell: (r) => h("strong", {}, r.node) },
      { label: "task", cell: (r) => r.task },
      { label: "after", cell: (r) => r.after, wrap: true },
      { label: "status", cell: (r) => statusChip(r.status) },
      { label: "try", cell: (r) => dash(r.attempt), num: true },
      { label: "started", cell: (r) => timeCell(r.started_at) },
      { label: "ended", cell: (r) => timeCell(r.ended_at) },
      { label: "duration", cell: (r) => fmtSeconds(duration(r)), num: true },
      { label: "error", cell: (r) => h("span", { title: r.error || "" }, dash(r.error && r.error.split("\n")[0])), wrap: true },
      { label: "", cell: (r) => (r.instance ? h("a", { href: `#/instance/${r.instance}` }, `#${r.instance} log`) : "–") },
    ], rows, "this Job has no nodes"));
    return ACTIVE.has(i.status) ? undefined : STOP;
  });
}

// -- routing ----------------------------------------------------------------------------------

const ROUTES = [
  [/^\/?$/, "overview", () => overview()],
  [/^\/tasks$/, "tasks", () => tasksView()],
  [/^\/task\/(\d+)$/, "tasks", (m) => taskView(Number(m[1]))],
  [/^\/schedules$/, "schedules", () => schedulesView()],
  [/^\/schedule\/(\d+)$/, "schedules", (m) => scheduleView(Number(m[1]))],
  [/^\/instance\/(\d+)$/, "overview", (m) => instanceView(Number(m[1]))],
  [/^\/daemons$/, "daemons", () => daemonsView()],
  [/^\/daemon\/(\d+)$/, "daemons", (m) => daemonView(Number(m[1]))],
  [/^\/job\/(\d+)$/, "overview", (m) => jobView(Number(m[1]))],
];

function route() {
  for (const t of state.timers) clearInterval(t.id);
  state.timers = [];
  state.generation += 1;
  const path = (location.hash.replace(/^#/, "") || "/").split("?")[0];
  for (const [pattern, nav, view] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    Promise.resolve(view(m)).catch((err) => setView(h("h1", {}, "Not available"), h("p", {}, err.message)));
    return;
  }
  setView(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

function toLocalInput(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function setupFrame() {
  const saved = sessionStorage.getItem("norc-frame");
  if (saved) state.frame = JSON.parse(saved);
  const buttons = document.querySelectorAll("#frame [data-since]");
  const custom = document.getElementById("custom-frame");
  const mark = () => {
    const isCustom = state.frame.since.includes("T") || state.frame.until;
    for (const b of buttons) b.classList.toggle("active", isCustom ? b.dataset.since === "custom" : b.dataset.since === state.frame.since);
    custom.hidden = !isCustom && custom.hidden;
  };
  for (const b of buttons) {
    b.addEventListener("click", () => {
      if (b.dataset.since === "custom") {
        custom.hidden = false;
        const from = document.getElementById("frame-from");
        if (!from.value) from.value = toLocalInput(new Date(Date.now() - 86400000));
        return;
      }
      custom.hidden = true;
      state.frame = { since: b.dataset.since, until: null };
      sessionStorage.setItem("norc-frame", JSON.stringify(state.frame));
      mark();
      route();
    });
  }
  document.getElementById("frame-apply").addEventListener("click", () => {
    const from = document.getElementById("frame-from").value;
    const to = document.getElementById("frame-to").value;
    if (!from) return;
    state.frame = { since: new Date(from).toISOString(), until: to ? new Date(to).toISOString() : null };
    sessionStorage.setItem("norc-frame", JSON.stringify(state.frame));
    mark();
    route();
  });
  mark();
}

async function start() {
  setupFrame();
  try {
    state.session = await api("session");
  } catch (err) {
    setView(h("h1", {}, "Cannot reach the Norc API"), h("p", {}, err.message));
    return;
  }
  const mode = document.getElementById("mode");
  if (state.session.read_only) mode.append(h("span", { class: "badge", title: "controls are disabled" }, "read-only"));
  if (state.token) mode.append(h("span", { class: "badge" }, "signed in"));
  window.addEventListener("hashchange", route);
  route();
}

start();
