// The Stratos-ES web console: log in for a bearer token, then follow /api/console/stream.
// The stream is read with fetch (not EventSource) so the token stays in a header.
// Every fetch omits credentials: the API's 401s carry a Basic challenge, and with
// credentials the browser would hold the request open behind its own password dialog.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "stratos.token";
const EVENTS_SHOWN = 50;
const collapsed = new Set();  // tree nodes the user closed, kept closed across updates
let token = sessionStorage.getItem(TOKEN_KEY);
let retryMs = 2000;
let abort = null;
let pastAt = null;  // the instant the runtime tree shows, or null when it follows the live stream
let lastState = null;
let selectedMember = null;
let logAbort = null;
let usageTimer = null;
const LOG_LINES_SHOWN = 500;
const MEMBER_KEY = "stratos.member";  // the member whose logs show, kept across a reload

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function badge(status) {
  return el("span", {class: `status s-${String(status).toLowerCase()}`}, status);
}

function showLogin(message = "") {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (abort) abort.abort();
  if (logAbort) logAbort.abort();
  selectedMember = null;
  sessionStorage.removeItem(MEMBER_KEY);
  clearInterval(usageTimer);
  $("#console").hidden = true;
  $("#pages").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  setLive(false);
}

function setLive(on) {
  $("#live").textContent = on ? "live" : "offline";
  $("#live").className = on ? "live on" : "live off";
}

async function login(event) {
  event.preventDefault();
  const reply = await fetch("/api/token", {
    method: "POST", credentials: "omit", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: $("#username").value, password: $("#password").value}),
  });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    $("#login-error").textContent = body.message || `login failed (HTTP ${reply.status})`;
    return;
  }
  token = body.access_token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#password").value = "";
  start();
}

async function start() {
  const reply = await fetch("/api/whoami", {credentials: "omit", headers: {Authorization: `Bearer ${token}`}});
  if (!reply.ok) {
    return showLogin(reply.status === 401 ? "Your session has ended: log in again."
                                          : `The API answered HTTP ${reply.status}: try again.`);
  }
  const me = await reply.json();
  $("#who").textContent = `${me.username} · tenant ${me.tenant}` + (me.role === "admin" ? "" : " · read-only");
  setupOperations(me);
  $("#login").hidden = true;
  $("#console").hidden = false;
  $("#logout").hidden = false;
  follow();
  const remembered = sessionStorage.getItem(MEMBER_KEY);
  if (remembered) selectMember(remembered);
  refreshUsage();
  clearInterval(usageTimer);
  usageTimer = setInterval(refreshUsage, 10000);
}

// Server-sent events over fetch: each complete block (ends at a blank line) goes to `onBlock`.
async function readEvents(reply, onBlock) {
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      onBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function parseBlock(block) {
  let event = "message", id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    else if (line.startsWith("id:")) id = line.slice(3).trim();
  }
  return {event, id, data: data.join("\n")};
}

// --- the log pane: the selected member's lines, followed live ------------------------------
function selectMember(member) {
  if (member === selectedMember) return;
  selectedMember = member;
  sessionStorage.setItem(MEMBER_KEY, member);
  document.querySelectorAll("table.members tr.selected").forEach((row) => row.classList.remove("selected"));
  document.querySelectorAll(`table.members tr[data-member="${CSS.escape(member)}"]`).forEach((row) => row.classList.add("selected"));
  $("#logs-of").textContent = ` of ${member}`;
  $("#log-lines").replaceChildren();
  followLogs(member);
}

async function followLogs(member) {
  if (logAbort) logAbort.abort();
  const mine = logAbort = new AbortController();
  let after = 0;
  while (token && selectedMember === member) {
    const query = new URLSearchParams({target: member, limit: "200"});
    if (after) query.set("after", String(after));
    try {
      const reply = await fetch(`/api/logs/stream?${query}`, {
        credentials: "omit", headers: {Authorization: `Bearer ${token}`, Accept: "text/event-stream"}, signal: mine.signal});
      if (reply.status === 401) return showLogin("Your session has ended: log in again.");
      if (reply.ok) {
        await readEvents(reply, (block) => {
          const {event, data} = parseBlock(block);
          if (event !== "line" || !data) return;
          const line = JSON.parse(data);
          after = line.seq;
          addLogLine(line);
        });
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

function addLogLine(line) {
  const list = $("#log-lines");
  const item = el("li", {"data-seq": line.seq, "data-level": line.level, class: `l-${line.level.toLowerCase()}`},
    el("span", {class: "t"}, `${new Date(line.at).toLocaleTimeString()} ${line.level} ${line.source}`), line.message);
  const pane = $("#logs-panel");
  const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
  list.append(item);
  while (list.children.length > LOG_LINES_SHOWN) list.firstChild.remove();
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}

// --- the usage chart: member-seconds (running) and pending seconds per cluster --------------
async function refreshUsage() {
  if (!token) return;
  const reply = await fetch("/api/usage?from=24h&groupBy=cluster", {credentials: "omit",
    headers: {Authorization: `Bearer ${token}`}}).catch(() => null);
  if (!reply || !reply.ok) return;
  renderUsage((await reply.json()).rows);
}

function renderUsage(rows) {
  const root = $("#usage");
  if (!rows.length) return root.replaceChildren(el("p", {class: "empty"}, "No usage yet."));
  const widest = Math.max(...rows.map((r) => r.member_seconds + r.pending_seconds), 1);
  root.replaceChildren(...rows.map((r) => {
    const bar = el("div", {class: "usage-bar", role: "img",
                           "aria-label": `${r.member_seconds} member-seconds, ${r.pending_seconds} pending`},
      el("span", {class: "running", style: `width:${(100 * r.member_seconds) / widest}%`}),
      el("span", {class: "pending", style: `width:${(100 * r.pending_seconds) / widest}%`}));
    const figures = `member-seconds ${r.member_seconds.toFixed(0)} · pending ${r.pending_seconds.toFixed(0)} s · ` +
      `scaling actions ${r.scaling_actions}` + (r.requests_served === null ? "" : ` · requests ${r.requests_served}`);
    return el("div", {class: "usage-row", "data-usage": r.cluster},
      el("span", {class: "id"}, r.cluster), el("div", {}, bar, el("p", {class: "figures"}, figures)));
  }));
}

// Server-sent events over fetch: blocks end at a blank line; reconnect after `retry` ms.
async function follow() {
  while (token) {
    abort = new AbortController();
    try {
      const reply = await fetch("/api/console/stream", {
        credentials: "omit", headers: {Authorization: `Bearer ${token}`, Accept: "text/event-stream"}, signal: abort.signal});
      if (reply.status === 401) return showLogin("Your session has ended: log in again.");
      if (reply.ok) {
        setLive(true);
        await readEvents(reply, dispatch);
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    else if (line.startsWith("retry:")) retryMs = Number(line.slice(6)) || retryMs;
  }
  if (event === "state" && data.length) render(JSON.parse(data.join("\n")));
}

function render(state) {
  const treeChanged = !lastState || JSON.stringify(lastState.applications) !== JSON.stringify(state.applications);
  lastState = state;
  // redrawn only when it changed: a reader's focus and place in the tree stay put
  if (pastAt === null && treeChanged) renderApplications(state.applications);
  if (treeChanged) followApplications(state.applications);
  renderCharts(state.clusters);
  if (JSON.stringify(state.events) !== renderedEvents) renderEvents(state.events);
}

// --- runtime tree: application -> instance -> groups -> clusters -> members ---------------
function foldable(key, summary, ...body) {
  const node = el("details", {"data-key": key}, el("summary", {}, ...summary), ...body);
  node.open = !collapsed.has(key);
  node.addEventListener("toggle", () => (node.open ? collapsed.delete(key) : collapsed.add(key)));
  return node;
}

function memberTable(members) {
  if (!members.length) return el("p", {class: "empty"}, "no members");
  const rows = members.map((m) => el("tr", {"data-member": m.memberId, "data-status": m.status,
                                            class: m.memberId === selectedMember ? "selected" : null,
                                            title: "show this member's logs", tabindex: 0},
    el("td", {class: "id"}, m.memberId), el("td", {}, badge(m.status)),
    el("td", {}, m.defaultPrivateIP || "–"), el("td", {}, m.defaultPublicIP || "–"),
    el("td", {}, m.partitionId), el("td", {}, m.networkPartitionId)));
  return el("table", {class: "members"},
    el("thead", {}, el("tr", {}, ...["Member", "Status", "Private IP", "Public IP", "Partition",
      "Network partition"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function clusterNode(cluster) {
  const limits = cluster.minInstances !== undefined ? ` min ${cluster.minInstances} · max ${cluster.maxInstances}` : "";
  return foldable(`cluster:${cluster.clusterId}`,
    ["Cluster ", el("b", {}, cluster.alias || cluster.clusterId), ` (${cluster.serviceName}) `,
     badge(cluster.status), el("span", {class: "muted"}, ` ${cluster.clusterId}${limits}`)],
    memberTable(cluster.member || []));
}

function groupNode(group) {
  return foldable(`group:${group.instanceId}`,
    ["Group ", el("b", {}, group.alias), ` (${group.groupId}) `, badge(group.status)],
    ...group.groupInstances.map(groupNode), ...group.clusterInstances.map(clusterNode));
}

function renderApplications(applications) {
  const root = $("#applications");
  if (!applications.length) return root.replaceChildren(el("p", {class: "empty"}, "No application defined."));
  root.replaceChildren(...applications.map((app) => {
    const key = `application:${app.applicationId}`;
    const instances = app.applicationInstances.map((instance) => el("div", {class: "instance"},
      el("p", {class: "muted"}, `instance ${instance.instanceId} · network partitions `,
        instance.networkPartitionIds.join(", ") || "–"),
      ...instance.groupInstances.map(groupNode), ...instance.clusterInstances.map(clusterNode)));
    const policy = app.applicationPolicyId ? ` policy ${app.applicationPolicyId}` : " not deployed";
    return el("div", {class: "application", "data-application": app.applicationId},
      foldable(key, ["Application ", el("b", {}, app.applicationId), " ", badge(app.status),
        el("span", {class: "muted"}, policy)], ...instances));
  }));
}

// --- charts: member count (steps) and load average (line) per cluster -----------------------
function renderCharts(clusters) {
  const root = $("#charts");
  if (!clusters.length) return root.replaceChildren(el("p", {class: "empty"}, "No cluster yet."));
  const cards = clusters.map((cluster) => {
    const last = cluster.points[cluster.points.length - 1] || [0, 0, 0, null, null];
    const figures = `members ${last[1]} (active ${last[2]}) · load ${last[3] ?? "–"} · memory ${last[4] ?? "–"} %`;
    const canvas = el("canvas", {width: 460, height: 150, "aria-label": `members and load of ${cluster.clusterId}`});
    const card = el("figure", {class: "chart", "data-chart": cluster.clusterId},
      el("figcaption", {}, el("b", {}, cluster.alias), ` (${cluster.applicationId}) `, badge(cluster.status)),
      canvas, el("p", {class: "figures"}, figures));
    drawChart(canvas, cluster.points);
    return card;
  });
  root.replaceChildren(...cards);
}

function drawChart(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.width, height = canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const pad = {left: 34, right: 40, top: 8, bottom: 20};
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const now = points.length ? points[points.length - 1][0] : 0;
  const span = Math.min(300, Math.max(60, now - (points.length ? points[0][0] : now)));  // seconds shown
  const maxMembers = Math.ceil((Math.max(...points.map((p) => p[1]), 0) + 1) / 4) * 4;  // whole ticks
  const maxLoad = Math.max(1, ...points.map((p) => p[3] ?? 0)) * 1.2;
  const x = (t) => pad.left + plotW * (1 - (now - t) / span);
  const yMembers = (v) => pad.top + plotH * (1 - v / maxMembers);
  const yLoad = (v) => pad.top + plotH * (1 - v / maxLoad);

  g.font = "11px sans-serif";
  g.strokeStyle = "#d8dde3";
  g.fillStyle = "#5b6570";
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + (plotH * i) / 4;
    g.beginPath(); g.moveTo(pad.left, y); g.lineTo(pad.left + plotW, y); g.stroke();
    g.textAlign = "right";
    g.fillText(String(Math.round(maxMembers * (1 - i / 4))), pad.left - 4, y + 4);
    g.textAlign = "left";
    g.fillText((maxLoad * (1 - i / 4)).toFixed(1), pad.left + plotW + 4, y + 4);
  }
  g.textAlign = "center";
  for (const part of [1, 2 / 3, 1 / 3, 0]) {
    const ago = Math.round(span * part);
    g.fillText(ago ? `-${ago / 60 | 0}:${String(ago % 60).padStart(2, "0")}` : "now", x(now - ago), height - 5);
  }

  const visible = points.filter((p) => now - p[0] <= span);
  const line = (color, y, value, steps) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false, previous = null;
    for (const p of visible) {
      const v = value(p);
      if (v === null || v === undefined) { started = false; continue; }
      if (!started) g.moveTo(x(p[0]), y(v));
      else if (steps) { g.lineTo(x(p[0]), y(previous)); g.lineTo(x(p[0]), y(v)); }
      else g.lineTo(x(p[0]), y(v));
      started = true; previous = v;
    }
    g.stroke(); g.lineWidth = 1;
  };
  line("#2f6fdf", yMembers, (p) => p[1], true);
  line("#2a9d55", yMembers, (p) => p[2], true);
  line("#e07b1a", yLoad, (p) => p[3], false);
  g.textAlign = "left";
  [["members", "#2f6fdf"], ["active", "#2a9d55"], ["load", "#e07b1a"]].forEach(([name, color], i) => {
    g.fillStyle = color; g.fillText(name, pad.left + 6 + i * 60, pad.top + 11);
  });
}

// --- time travel: the runtime tree as it was (GET /api/replay?at=) -------------------------
async function travel() {
  const secondsAgo = -Number($("#at").value);
  if (secondsAgo === 0) return backToLive();
  const at = new Date(Date.now() - secondsAgo * 1000);
  $("#at-label").textContent = `rebuilding ${at.toLocaleTimeString()}…`;
  const reply = await fetch(`/api/replay?at=${encodeURIComponent(at.toISOString())}`,
    {credentials: "omit", headers: {Authorization: `Bearer ${token}`}});
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    $("#at-label").textContent = body.message || `replay failed (HTTP ${reply.status})`;
    return;
  }
  pastAt = body.at;
  $("#at-label").textContent = `as it was at ${new Date(body.at).toLocaleTimeString()}`;
  $("#back-live").hidden = false;
  renderApplications(body.applications);
}

function backToLive() {
  pastAt = null;
  $("#at").value = 0;
  $("#at-label").textContent = "live";
  $("#back-live").hidden = true;
  if (lastState) renderApplications(lastState.applications);
}

// --- recent events, and why each happened (GET /api/why/{id}) -------------------------------
let renderedEvents = null;

function renderEvents(events) {
  renderedEvents = JSON.stringify(events);
  const rows = events.slice(0, EVENTS_SHOWN).map((e) => {
    const row = el("tr", {"data-event": e.type, "data-id": e.id, class: "clickable", title: "why did it happen?",
                          tabindex: 0},
      el("td", {}, new Date(e.at).toLocaleTimeString()), el("td", {}, e.type),
      el("td", {class: "id"}, e.aggregate), el("td", {class: "detail"}, e.detail));
    row.addEventListener("click", () => explain(e.id));
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") explain(e.id); });
    return row;
  });
  $("#events tbody").replaceChildren(...rows);
}

function figuresText(figures = {}) {
  return Object.entries(figures).filter(([name]) => !["cluster_id", "application_id"].includes(name))
    .map(([name, value]) => (typeof value === "object"
      ? Object.entries(value).map(([k, v]) => `${name}.${k}=${v}`).join(" ") : `${name}=${value}`)).join(" ");
}

async function explain(recordId) {
  $("#why-panel").hidden = false;
  $("#why-of").textContent = recordId;
  $("#why").replaceChildren(el("li", {class: "muted"}, "following the causes…"));
  const reply = await fetch(`/api/why/${encodeURIComponent(recordId)}`,
    {credentials: "omit", headers: {Authorization: `Bearer ${token}`}});
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    return $("#why").replaceChildren(el("li", {class: "error"}, body.message || `HTTP ${reply.status}`));
  }
  const items = body.chain.map((link) => el("li", {"data-type": link.type},
    el("b", {}, link.type), ` ${new Date(link.at).toLocaleTimeString()} `,
    el("span", {class: "muted"}, `${link.topic} · ${link.aggregate.split("/").slice(1).join("/")} `),
    figuresText(link.figures)));
  if (body.missing_cause) items.push(el("li", {class: "muted"}, `${body.missing_cause} (not in the log)`));
  $("#why").replaceChildren(...items);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => showLogin());
  $("#at").addEventListener("change", travel);
  $("#back-live").addEventListener("click", backToLive);
  $("#applications").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-member]");
    if (row) selectMember(row.dataset.member);
  });
  $("#applications").addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-member]");
    if (row && event.key === "Enter") selectMember(row.dataset.member);
  });
  if (token) start(); else showLogin();
  // the documentation site is served at /docs once `make docs` has built it: link it only then
  fetch("/docs/index.html", {method: "HEAD"}).then((r) => { $("#docs").hidden = !r.ok; }, () => {});
});
