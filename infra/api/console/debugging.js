// The console's debugging page: a cluster's history (its events, decisions and their figures),
// what-if with another autoscaling policy over a chosen period (decided vs would have decided,
// drawn), and a viewer for the reports `stratos simulate` writes. Uses console.js and operate.js.
"use strict";

const PERIOD_MINUTES = 30;  // the period a fresh page proposes: the last half hour

// Every cluster in the live tree: application -> instances -> groups -> clusters.
function followClusters(applications) {
  const ids = new Set();
  const walk = (node) => {
    (node.clusterInstances || []).forEach((c) => ids.add(c.clusterId));
    (node.groupInstances || []).forEach(walk);
  };
  applications.forEach((a) => (a.applicationInstances || []).forEach(walk));
  const sorted = [...ids].sort();
  if (sorted.join() !== [...$("#debug-cluster").options].map((o) => o.value).join()) fillSelect("#debug-cluster", sorted);
}

// datetime-local shows local time without a zone: convert both ways
const localInput = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
const fromInput = (value) => (value ? new Date(value).toISOString() : null);

async function prepareDebugging() {
  if (!$("#debug-from").value) {
    const now = new Date();
    $("#debug-from").value = localInput(new Date(now.getTime() - PERIOD_MINUTES * 60000));
    $("#debug-to").value = localInput(now);
  }
  const reply = await call("GET", "/autoscalingPolicies");
  if (reply.ok) {
    policies = new Map(reply.body.map((p) => [p.id, p]));
    fillSelect("#whatif-policy", [...policies.keys()]);
  }
}
let policies = new Map();

function period() {
  return {from: fromInput($("#debug-from").value), to: fromInput($("#debug-to").value)};
}

async function showHistory() {
  const cluster = $("#debug-cluster").value;
  if (!cluster) return say("#debug-result", "No cluster to show: deploy an application first.", false);
  const {from, to} = period();
  const query = new URLSearchParams();
  if (from) query.set("since", from);
  if (to) query.set("until", to);
  say("#debug-result", `Reading the history of ${cluster}…`);
  const reply = await call("GET", `/cluster/${encodeURIComponent(cluster)}/history?${query}`);
  if (!reply.ok) return say("#debug-result", reply.body.message || `HTTP ${reply.status}`, false);
  const {entries, problems} = reply.body;
  $("#history tbody").replaceChildren(...entries.map((e) => el("tr", {"data-event": e.type,
      class: e.type === "ScalingDecided" ? "decision" : e.command.outcome === "rejected" ? "rejected" : null},
    el("td", {}, new Date(e.time).toLocaleTimeString()), el("td", {}, e.type),
    el("td", {class: "detail"}, figuresText(e.figures)), el("td", {class: "muted"}, e.command.type || ""))));
  $("#history").hidden = false;
  const decisions = entries.filter((e) => e.type === "ScalingDecided").length;
  say("#debug-result", `${entries.length} events of ${cluster}, ${decisions} scaling decisions` +
      (problems.length ? `; ${problems.join("; ")}` : ""));
}

async function runWhatIf() {
  const cluster = $("#debug-cluster").value, policy = policies.get($("#whatif-policy").value);
  if (!cluster || !policy) return say("#debug-result", "Choose a cluster and an autoscaling policy.", false);
  say("#debug-result", `Replaying the recorded figures of ${cluster} through ${policy.id}…`);
  const reply = await call("POST", `/cluster/${encodeURIComponent(cluster)}/whatif`, {policy, ...period()});
  if (!reply.ok) return say("#debug-result", reply.body.message || `HTTP ${reply.status}`, false);
  const {verdicts, totals} = reply.body;
  const summary = `${totals.hops} decisions compared: scale-ups decided ${totals.recorded_scale_ups}, ` +
    `would have been ${totals.what_if_scale_ups}; scale-downs decided ${totals.recorded_scale_downs}, ` +
    `would have been ${totals.what_if_scale_downs}; members started ${totals.recorded_members_started} ` +
    `vs ${totals.what_if_members_started}; ${totals.differing_hops} decisions differ`;
  say("#debug-result", `What-if of ${cluster} with ${policy.id}: nothing was sent.`);
  $("#whatif-figure").hidden = false;
  $("#whatif-figure").dataset.hops = String(verdicts.length);
  $("#whatif-totals").textContent = summary;
  const canvas = $("#whatif-chart");
  canvas.setAttribute("aria-label", `Chart of ${summary}`);
  drawWhatIf(canvas, verdicts);
  const differ = verdicts.filter((v) => v.differs);
  $("#whatif-hops tbody").replaceChildren(...differ.map((v) => el("tr", {},
    el("td", {}, new Date(v.time).toLocaleTimeString()),
    el("td", {class: "detail"}, `+${v.recorded.spawn} −${v.recorded.terminate} (${v.recorded.reason})`),
    el("td", {class: "detail"}, `+${v.what_if.spawn} −${v.what_if.terminate} (${v.what_if.reason})`))));
  $("#whatif-hops").hidden = !differ.length;
}

// Two step lines over the compared decisions: the running total of members started minus
// stopped, as decided (solid) and as the other policy would have decided (dashed).
function drawWhatIf(canvas, verdicts) {
  const width = 900, height = 240, ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = {left: 40, right: 16, top: 12, bottom: 24};
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const running = (pick) => {
    let sum = 0;
    return verdicts.map((v) => [Date.parse(v.time), (sum += pick(v).spawn - pick(v).terminate)]);
  };
  const decided = running((v) => v.recorded), would = running((v) => v.what_if);
  const times = verdicts.map((v) => Date.parse(v.time));
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1000);
  const values = [0, ...decided.map((p) => p[1]), ...would.map((p) => p[1])];
  const low = Math.min(...values), high = Math.max(...values, low + 1);
  const x = (t) => pad.left + (plotW * (t - t0)) / (t1 - t0);
  const y = (v) => pad.top + plotH * (1 - (v - low) / (high - low));
  g.font = "11px sans-serif";
  g.fillStyle = "#4a5560";
  g.strokeStyle = "#d8dde3";
  for (let i = 0; i <= 4; i++) {
    const v = low + ((high - low) * i) / 4;
    g.beginPath(); g.moveTo(pad.left, y(v)); g.lineTo(pad.left + plotW, y(v)); g.stroke();
    g.textAlign = "right";
    g.fillText(v.toFixed(Number.isInteger(v) ? 0 : 1), pad.left - 4, y(v) + 4);
  }
  g.textAlign = "center";
  for (const part of [0, 0.5, 1]) {
    const t = t0 + (t1 - t0) * part;
    g.fillText(new Date(t).toLocaleTimeString(), Math.min(Math.max(x(t), pad.left + 30), width - 40), height - 6);
  }
  const steps = (points, color, dash) => {
    g.strokeStyle = color; g.lineWidth = 2; g.setLineDash(dash); g.beginPath();
    g.moveTo(x(t0), y(0));
    let previous = 0;
    for (const [t, v] of points) { g.lineTo(x(t), y(previous)); g.lineTo(x(t), y(v)); previous = v; }
    g.lineTo(x(t1), y(previous));
    g.stroke(); g.setLineDash([]); g.lineWidth = 1;
  };
  steps(decided, "#1f5fbf", []);
  steps(would, "#b35900", [6, 4]);
  g.fillStyle = "#b3261e";
  verdicts.forEach((v) => { if (v.differs) g.fillRect(x(Date.parse(v.time)) - 2, pad.top, 4, 4); });
}

// --- simulation reports: metrics.json as tables, report.html as it was written ----------------
async function openReport(input) {
  const file = input.files[0];
  if (!file) return;
  const text = await file.text();
  const root = $("#report");
  if (file.name.endsWith(".html")) {
    // the report's own page, without scripts or access to this one
    return root.replaceChildren(el("iframe", {sandbox: "", title: `simulation report ${file.name}`, srcdoc: text,
                                              class: "report-frame"}));
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    return root.replaceChildren(el("p", {class: "error", role: "alert"}, `${file.name} is not JSON: ${error.message}`));
  }
  if (!doc.policies || !doc.ranking) {
    return root.replaceChildren(el("p", {class: "error", role: "alert"},
      `${file.name} is not the metrics.json of stratos simulate (no policies or ranking)`));
  }
  const s = doc.scenario || {};
  const figures = [...new Set(doc.ranking.flatMap((name) => Object.keys(doc.policies[name].total)))];
  const table = (caption, head, rows) => el("table", {class: "report-table"}, el("caption", {}, caption),
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {scope: "col"}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, el("th", {scope: "row"}, r[0]),
      ...r.slice(1).map((v) => el("td", {}, typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v ?? "–")))))));
  const parts = [
    el("h3", {}, String(s.name ?? file.name)),
    el("p", {}, `${s.description || ""} mode ${s.mode || "simulated"}, seed ${s.seed ?? "–"}, ` +
      `${s.duration_s ?? "–"} s at ${s.step_s ?? "–"} s steps. Pareto front: ${(doc.pareto_front || []).join(", ")}.`),
    table("Policies, best first", ["policy", ...figures],
      doc.ranking.map((name) => [name, ...figures.map((f) => doc.policies[name].total[f])])),
  ];
  for (const name of doc.ranking) {
    const clusters = Object.entries(doc.policies[name].clusters || {});
    parts.push(table(`${name}: clusters`, ["cluster", ...figures],
      clusters.map(([id, f]) => [id, ...figures.map((k) => f[k])])));
  }
  root.replaceChildren(el("div", {"data-report": file.name}, ...parts));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#history-show").addEventListener("click", showHistory);
  $("#whatif-run").addEventListener("click", runWhatIf);
  $("#report-file").addEventListener("change", (event) => openReport(event.target));
});
