// The console's actions: definitions in a JSON editor that knows the API's schema, deploy /
// undeploy / limits of applications, tenants and users. Action buttons are drawn only for a
// role the API lets act (a tenant admin; tenants: the super tenant's admin); the API refuses
// the calls of anyone else anyway. Uses `$`, `el`, `token` and `showLogin` of console.js.
"use strict";

const KINDS = [  // the definition routes of infra/api/definitions.py, with each kind's id field
  {path: "cartridges", label: "Cartridges", one: "cartridge", id: "type"},
  {path: "cartridgeGroups", label: "Cartridge groups", one: "cartridge group", id: "name"},
  {path: "networkPartitions", label: "Network partitions", one: "network partition", id: "id"},
  {path: "autoscalingPolicies", label: "Autoscaling policies", one: "autoscaling policy", id: "id"},
  {path: "deploymentPolicies", label: "Deployment policies", one: "deployment policy", id: "id"},
  {path: "applicationPolicies", label: "Application policies", one: "application policy", id: "id"},
  {path: "applications", label: "Applications", one: "application", id: "applicationId"},
  {path: "kubernetesClusters", label: "Kubernetes clusters", one: "Kubernetes cluster", id: "clusterId"},
  {path: "tenants", label: "Tenants", one: "tenant", id: "tenantDomain", people: true},
  {path: "users", label: "Users", one: "user", id: "userName", people: true},
];
const MASK = "********";  // how the API shows a secret; saved back, it would replace the secret
const VENDOR = "/console/vendor/monaco/vs";
let me = null;  // GET /api/whoami
let currentKind = KINDS[0];
let editing = null;  // {kind, id (null: a new one), readOnly}
let editor = null;  // the Monaco editor, or null while the plain text area stands in
let monacoLoading = null;
let openapi = null;

const canChange = (kind) => me && me.role === "admin" && (kind.path !== "tenants" || me.superAdmin);

// --- calls to the API -----------------------------------------------------------------------
async function call(method, path, body) {
  const headers = {Authorization: `Bearer ${token}`};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(`/api${path}`, {method, credentials: "omit", headers,
    body: body === undefined ? undefined : JSON.stringify(body)}).catch(() => null);
  if (!reply) return {ok: false, status: 0, body: {message: "the API cannot be reached"}};
  if (reply.status === 401) showLogin("Your session has ended: log in again.");
  const answer = await reply.json().catch(() => ({}));
  return {ok: reply.ok, status: reply.status, body: answer};
}

function say(target, message, ok = true) {
  const node = $(target);
  node.textContent = message;
  node.className = ok ? "ok" : "error";
}

// --- pages ----------------------------------------------------------------------------------
function showPage(name) {
  document.querySelectorAll("#pages button").forEach((b) =>
    b.dataset.page === name ? b.setAttribute("aria-current", "page") : b.removeAttribute("aria-current"));
  document.querySelectorAll("main .page").forEach((p) => { p.hidden = p.id !== `page-${name}`; });
  closeEditor();
  if (name === "runtime" && me.role === "admin") { refreshPolicies(); refreshSubscriptions(); }
  if (name === "definitions") selectKind(currentKind);
  if (name === "people") refreshPeople();
  if (name === "debugging") prepareDebugging();
}

function setupOperations(whoami) {
  me = whoami;
  document.body.classList.toggle("read-only", me.role !== "admin");
  $("#pages").hidden = false;
  $("#app-actions").hidden = me.role !== "admin";
  // a replay and a what-if read the log through: the API lets a tenant's admins alone run them
  $("#timetravel").hidden = me.role !== "admin";
  document.querySelectorAll(".whatif-control").forEach((node) => { node.hidden = me.role !== "admin"; });
  $("#def-new").hidden = true;
  document.querySelectorAll("[data-new-kind]").forEach((b) => { b.hidden = !canChange(kindOf(b.dataset.newKind)); });
  $("#tenants-panel").hidden = !me.superAdmin;
  renderKinds();
  if (me.role === "admin") refreshPolicies();
}

const kindOf = (path) => KINDS.find((k) => k.path === path);

// --- definitions: the list of a kind --------------------------------------------------------
function renderKinds() {
  $("#def-kinds").replaceChildren(...KINDS.filter((k) => !k.people).map((kind) => el("li", {},
    el("button", {type: "button", "data-kind": kind.path,
                  "aria-current": kind === currentKind ? "true" : null}, kind.label))));
}

async function selectKind(kind) {
  currentKind = kind;
  renderKinds();
  $("#def-kind-title").textContent = kind.label;
  $("#def-new").hidden = !canChange(kind);
  $("#def-new").textContent = `New ${kind.one}`;
  const reply = await call("GET", `/${kind.path}`);
  if (!reply.ok) return say("#def-result", reply.body.message || `HTTP ${reply.status}`, false);
  const rows = reply.body.map((body) => definitionRow(kind, body, [
    el("td", {class: "id"}, body[kind.id]),
    el("td", {}, body.displayName || body.description || body.alias || (body.status ? `status ${body.status}` : "")),
  ]));
  $("#def-list tbody").replaceChildren(...rows.length ? rows
    : [el("tr", {}, el("td", {colspan: 3, class: "empty"}, `No ${kind.one} defined.`))]);
}

function definitionRow(kind, body, cells) {
  const id = body[kind.id];
  const actions = el("td", {class: "row-actions"},
    el("button", {type: "button", "data-edit": id, "aria-label": `${canChange(kind) ? "Edit" : "View"} ${kind.one} ${id}`},
      canChange(kind) ? "Edit" : "View"));
  if (canChange(kind)) {
    const remove = el("button", {type: "button", class: "danger", "data-remove": id,
                                 "aria-label": `Remove ${kind.one} ${id}`}, "Remove");
    remove.addEventListener("click", () => removeDefinition(kind, id, remove.closest("tr")));
    actions.append(remove);
  }
  actions.firstChild.addEventListener("click", () => openEditor(kind, id));
  return el("tr", {"data-id": id}, ...cells, actions);
}

async function removeDefinition(kind, id, row) {
  if (!window.confirm(`Remove ${kind.one} '${id}'?`)) return;
  const result = kind.people ? "#people-result" : "#def-result";
  say(result, `Removing ${kind.one} '${id}'…`);
  const reply = await call("DELETE", `/${kind.path}/${encodeURIComponent(id)}`);
  row.nextElementSibling?.classList.contains("problem") && row.nextElementSibling.remove();
  if (!reply.ok) {
    const message = reply.body.message || `HTTP ${reply.status}`;
    const users = message.match(/ is in use by (.*)$/);
    const problem = el("td", {colspan: row.children.length, role: "alert"},
      users ? el("span", {}, `Cannot remove ${kind.one} '${id}': it is in use by `,
        el("ul", {class: "in-use"}, ...splitUsers(users[1]).map((u) => el("li", {}, u))))
        : `Cannot remove ${kind.one} '${id}': ${message}`);
    row.after(el("tr", {class: "problem", "data-problem": id}, problem));
    return say(result, "");
  }
  say(result, reply.body.message);
  if (kind.people) refreshPeople(); else selectKind(kind);
}

// "application 'a', cartridgeGroup 'g'" -> ["application 'a'", "cartridgeGroup 'g'"]
const splitUsers = (text) => text.match(/[\w-]+ '[^']*'/g) || [text];

// --- the editor -----------------------------------------------------------------------------
function loadMonaco() {
  monacoLoading ??= new Promise((resolve) => {
    const script = el("script", {src: `${VENDOR}/loader.js`});
    script.onload = () => {
      // absolute: the editor's web workers load from this address too
      window.require.config({paths: {vs: new URL(VENDOR, window.location.href).href}});
      window.require(["vs/editor/editor.main"], () => resolve(window.monaco), () => resolve(null));
    };
    script.onerror = () => resolve(null);  // not set up (make console-assets): a text area
    document.head.append(script);
  });
  return monacoLoading;
}

// Each kind's body schema as the API publishes it (OpenAPI components), one per model file name.
async function schemas() {
  if (!openapi) {
    const reply = await fetch("/api/openapi.json", {credentials: "omit"}).catch(() => null);
    openapi = reply && reply.ok ? await reply.json() : {paths: {}, components: {}};
  }
  return KINDS.flatMap((kind) => {
    const body = openapi.paths[`/api/${kind.path}`]?.post?.requestBody?.content?.["application/json"]?.schema;
    if (!body) return [];
    return [{uri: `inmemory://schemas/${kind.path}`, fileMatch: [`${kind.path}.json`],
             schema: {...body, components: openapi.components}}];
  });
}

async function editorText(text, kind, readOnly) {
  const monaco = await loadMonaco();
  if (!monaco) {
    editor = null;
    const area = $("#editor textarea") || el("textarea", {"aria-labelledby": "editor-title", "aria-describedby": "editor-help", spellcheck: "false"});
    area.value = text;
    area.readOnly = readOnly;
    $("#editor").replaceChildren(area);
    return;
  }
  if (!editor) {
    monaco.languages.json.jsonDefaults.setDiagnosticsOptions({validate: true, enableSchemaRequest: false,
                                                              schemas: await schemas()});
    editor = monaco.editor.create($("#editor"), {
      language: "json", automaticLayout: true, minimap: {enabled: false}, scrollBeyondLastLine: false,
      tabSize: 2, fixedOverflowWidgets: true, ariaLabel: "definition JSON (Ctrl+M, then Tab, leaves the editor)",
      accessibilitySupport: "on",
    });
    editor.onDidChangeModelContent(() => clearErrors());
  }
  const uri = monaco.Uri.parse(`inmemory://definitions/${kind.path}.json`);
  const model = monaco.editor.getModel(uri) || monaco.editor.createModel("", "json", uri);
  model.setValue(text);
  editor.setModel(model);
  editor.updateOptions({readOnly});
}

function editorValue() {
  return editor ? editor.getValue() : $("#editor textarea").value;
}

async function openEditor(kind, id) {
  const readOnly = !canChange(kind);
  let body = {[kind.id]: ""};
  if (id !== null) {
    const reply = await call("GET", `/${kind.path}/${encodeURIComponent(id)}`);
    if (!reply.ok) return say(kind.people ? "#people-result" : "#def-result", reply.body.message, false);
    body = reply.body;
    if (kind.path === "applications") delete body.status;  // the application's state, not its definition
  }
  editing = {kind, id, readOnly};
  busy(true);
  $("#editor-panel").hidden = false;
  $("#editor-title").textContent = id === null ? `New ${kind.one}` : `${readOnly ? "" : "Edit "}${kind.one} ${id}`;
  $("#editor-save").hidden = readOnly;
  $("#editor-file").closest("label").hidden = readOnly;
  clearErrors();
  await editorText(JSON.stringify(body, null, 2), kind, readOnly);
  busy(false);
  $("#editor-panel").scrollIntoView({block: "nearest"});
  (editor || $("#editor textarea")).focus();
}

// While the editor loads, nothing can be loaded into it or saved from it.
function busy(loading) {
  $("#editor-panel").setAttribute("aria-busy", String(loading));
  $("#editor-save").disabled = loading;
  $("#editor-file").disabled = loading;
}

function closeEditor() {
  editing = null;
  $("#editor-panel").hidden = true;
  clearErrors();
}

async function saveDefinition() {
  const {kind, id} = editing;
  let body;
  try {
    body = JSON.parse(editorValue());
  } catch (error) {
    return showErrors([{field: null, message: `not JSON: ${error.message}`}]);
  }
  const masked = maskedPaths(body);
  if (masked.length) {
    return showErrors(masked.map((path) => ({field: path,
      message: "a hidden secret: type the secret again (saved as it is, it would replace the secret)"})));
  }
  const reply = await call(id === null ? "POST" : "PUT", `/${kind.path}`, body);
  if (!reply.ok) return showErrors(fieldErrors(reply.body.message || `HTTP ${reply.status}`));
  closeEditor();
  say(kind.people ? "#people-result" : "#def-result", reply.body.message);
  if (kind.people) refreshPeople(); else selectKind(kind);
  if (kind.path === "applicationPolicies" || kind.path === "applications") refreshPolicies();
}

function maskedPaths(value, path = []) {
  if (value === MASK) return [path.join(".")];
  if (value && typeof value === "object") {
    return Object.entries(value).flatMap(([key, v]) => maskedPaths(v, [...path, key]));
  }
  return [];
}

// The API's 400 names fields as `path.to.field: reason; other.path: reason` (infra/api/app.py).
function fieldErrors(message) {
  return message.split(/; (?=[\w$.-]+: )/).map((part) => {
    const named = part.match(/^([\w$.-]+): ([\s\S]*)$/);
    return named && named[1] !== "body" ? {field: named[1], message: named[2]} : {field: null, message: part};
  });
}

// Where each value of a well-formed JSON text is: "a.0.b" -> {start, end} (a member: its key).
function jsonSpots(text) {
  const spots = new Map();
  let i = 0;
  const blank = () => { while (/\s/.test(text[i] || "")) i++; };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const value = (path, from) => {
    blank();
    const start = i;
    const many = (close, item) => {
      i++;
      blank();
      if (text[i] === close) { i++; return; }
      for (let n = 0; ; n++) {
        item(n);
        blank();
        if (text[i++] !== ",") return;
      }
    };
    if (text[i] === "{") {
      many("}", () => { blank(); const at = i; const key = string(); blank(); i++; value([...path, key], at); });
    } else if (text[i] === "[") {
      many("]", (n) => value([...path, String(n)], null));
    } else if (text[i] === '"') {
      string();
    } else {
      while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
    }
    spots.set(path.join("."), {start: from ?? start, end: i});
  };
  value([], null);
  return spots;
}

// The field itself, or the nearest of its parents that is written (a missing field: its object).
function spotOf(spots, field) {
  const parts = field ? field.split(".") : [];
  for (let n = parts.length; n >= 0; n--) {
    const spot = spots.get(parts.slice(0, n).join("."));
    if (spot) return spot;
  }
  return {start: 0, end: 1};
}

function lineOf(text, offset) {
  return text.slice(0, offset).split("\n").length;
}

function showErrors(errors) {
  const text = editorValue();
  let spots = new Map();
  try { spots = jsonSpots(text); } catch { /* not JSON: no field to point at */ }
  const placed = errors.map((error) => {
    const spot = error.field === null ? null : spotOf(spots, error.field);
    return {...error, spot, line: spot ? lineOf(text, spot.start) : null};
  });
  $("#editor-errors").replaceChildren(...placed.map((e) => {
    const item = el("li", {"data-field": e.field ?? "", role: "alert"},
      e.field ? el("code", {}, e.field) : null, e.field ? `: ${e.message}` : e.message);
    if (e.line) {
      const go = el("button", {type: "button", class: "link"}, `line ${e.line}`);
      go.addEventListener("click", () => reveal(e.line));
      item.append(" (", go, ")");
    }
    return item;
  }));
  if (editor) {
    const model = editor.getModel();
    const range = (e) => {
      const from = model.getPositionAt(e.spot.start), to = model.getPositionAt(e.spot.end);
      return {startLineNumber: from.lineNumber, startColumn: from.column, endLineNumber: to.lineNumber, endColumn: to.column};
    };
    const located = placed.filter((e) => e.spot);
    window.monaco.editor.setModelMarkers(model, "api", located.map((e) => ({
      ...range(e), message: e.message, severity: window.monaco.MarkerSeverity.Error, source: "the API"})));
    editor.apiErrors?.clear();
    // the API's words beside the field they name, at the end of its line
    editor.apiErrors = editor.createDecorationsCollection(located.map((e) => {
      const line = model.getPositionAt(e.spot.start).lineNumber;
      const end = model.getLineMaxColumn(line);
      return {range: {startLineNumber: line, startColumn: end, endLineNumber: line, endColumn: end},
              options: {description: "api-error", showIfCollapsed: true,
                        after: {content: `  ← ${e.message}`, inlineClassName: "api-error-inline"}}};
    }));
    if (located.length) reveal(located[0].line);
  }
}

function clearErrors() {
  $("#editor-errors").replaceChildren();
  if (editor && editor.getModel()) {
    window.monaco.editor.setModelMarkers(editor.getModel(), "api", []);
    editor.apiErrors?.clear();
  }
}

function reveal(line) {
  if (editor) {
    editor.revealLineInCenter(line);
    editor.setPosition({lineNumber: line, column: 1});
    editor.focus();
  }
}

async function loadFile(input) {
  const file = input.files[0];
  if (!file) return;
  const text = await file.text();
  input.value = "";
  clearErrors();
  if (editor) editor.getModel().setValue(text); else $("#editor textarea").value = text;
}

// --- applications: deploy, undeploy, limits -------------------------------------------------
let deployed = new Map();  // application id -> its status in the live stream

async function refreshPolicies() {
  const reply = await call("GET", "/applicationPolicies");
  if (!reply.ok) return;
  fillSelect("#act-policy", reply.body.map((p) => p.id));
}

function fillSelect(selector, values, labels = values) {
  const select = $(selector);
  const keep = select.value;
  select.replaceChildren(...values.map((v, n) => el("option", {value: v}, labels[n])));
  if (values.includes(keep)) select.value = keep;
}

// Called by console.js with each live state: the choices follow the applications that exist.
function followApplications(applications) {
  deployed = new Map(applications.map((a) => [a.applicationId, a.status]));
  const ids = [...deployed.keys()];
  const before = $("#act-app").value;
  fillSelect("#act-app", ids, ids.map((id) => `${id} (${deployed.get(id)})`));
  if ($("#act-app").value !== before) refreshSubscriptions();
  followClusters(applications);
}

function subscriptions(components) {
  return [...(components?.cartridges || []),
          ...(components?.groups || []).flatMap((group) => subscriptions(group))];
}

// When the operator last typed a limit: an answer asked for before that must not overwrite it
// (a slow GET that lands after the operator typed a new max would send the old one).
let limitsTypedAt = 0;

async function refreshSubscriptions() {
  const asked = performance.now();
  const id = $("#act-app").value;
  if (!id) return fillSelect("#act-alias", []);
  const reply = await call("GET", `/applications/${encodeURIComponent(id)}`);
  if (!reply.ok) return;
  const subs = subscriptions(reply.body.components);
  fillSelect("#act-alias", subs.map((s) => s.subscribableInfo.alias),
             subs.map((s) => `${s.subscribableInfo.alias} (${s.type})`));
  if (limitsTypedAt < asked) showLimits(subs);
}

function showLimits(subs) {
  const sub = subs.find((s) => s.subscribableInfo.alias === $("#act-alias").value);
  $("#act-min").value = sub ? sub.cartridgeMin : "";
  $("#act-max").value = sub ? sub.cartridgeMax : "";
}

async function deploy() {
  const id = $("#act-app").value, policy = $("#act-policy").value;
  if (!id || !policy) return say("#act-result", "Choose an application and an application policy.", false);
  say("#act-result", `Deploying ${id}…`);
  const reply = await call("POST", `/applications/${encodeURIComponent(id)}/deploy/${encodeURIComponent(policy)}`);
  say("#act-result", reply.body.message || `HTTP ${reply.status}`, reply.ok);
}

async function undeploy() {
  const id = $("#act-app").value;
  if (!id || !window.confirm(`Undeploy ${id}? Its members are terminated.`)) return;
  say("#act-result", `Undeploying ${id}…`);
  const reply = await call("POST", `/applications/${encodeURIComponent(id)}/undeploy`);
  say("#act-result", reply.body.message || `HTTP ${reply.status}`, reply.ok);
}

// Stratos's live update: the application's definition again with the subscription's new limits.
async function updateLimits() {
  const id = $("#act-app").value, alias = $("#act-alias").value;
  const low = Number($("#act-min").value), high = Number($("#act-max").value);
  const reply = await call("GET", `/applications/${encodeURIComponent(id)}`);
  if (!reply.ok) return say("#act-result", reply.body.message, false);
  const body = reply.body;
  delete body.status;
  const sub = subscriptions(body.components).find((s) => s.subscribableInfo.alias === alias);
  if (!sub) return say("#act-result", `No subscription '${alias}' in ${id}.`, false);
  sub.cartridgeMin = low;
  sub.cartridgeMax = high;
  const put = await call("PUT", "/applications", body);
  say("#act-result", put.ok ? `Limits of ${alias} are now min ${low}, max ${high}: ${put.body.message}`
                            : put.body.message || `HTTP ${put.status}`, put.ok);
}

// --- tenants and users ----------------------------------------------------------------------
async function refreshPeople() {
  const users = kindOf("users"), tenants = kindOf("tenants");
  const reply = await call("GET", "/users");
  if (reply.ok) {
    $("#user-list tbody").replaceChildren(...reply.body.map((u) => definitionRow(users, u, [
      el("td", {class: "id"}, u.userName), el("td", {}, u.role || "user"),
      el("td", {}, [u.firstName, u.lastName].filter(Boolean).join(" ")), el("td", {}, u.email || "")])));
  } else {
    say("#people-result", reply.body.message || `HTTP ${reply.status}`, false);
  }
  if (!me.superAdmin) return;
  const listed = await call("GET", "/tenants");
  if (!listed.ok) return;
  $("#tenant-list tbody").replaceChildren(...listed.body.map((t) => definitionRow(tenants, t, [
    el("td", {class: "id"}, t.tenantDomain), el("td", {}, t.admin), el("td", {}, t.email || ""),
    el("td", {}, t.active === false ? "no" : "yes")])));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#pages").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-page]");
    if (button) showPage(button.dataset.page);
  });
  $("#def-kinds").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-kind]");
    if (button) { closeEditor(); selectKind(kindOf(button.dataset.kind)); }
  });
  $("#def-new").addEventListener("click", () => openEditor(currentKind, null));
  document.querySelectorAll("[data-new-kind]").forEach((b) =>
    b.addEventListener("click", () => openEditor(kindOf(b.dataset.newKind), null)));
  $("#editor-save").addEventListener("click", saveDefinition);
  $("#editor-close").addEventListener("click", closeEditor);
  $("#editor-file").addEventListener("change", (event) => loadFile(event.target));
  $("#editor-panel").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeEditor();
    if ((event.ctrlKey || event.metaKey) && event.key === "s" && editing && !editing.readOnly) {
      event.preventDefault();
      saveDefinition();
    }
  });
  $("#act-app").addEventListener("change", refreshSubscriptions);
  $("#act-alias").addEventListener("change", refreshSubscriptions);
  for (const limit of ["#act-min", "#act-max"]) {
    $(limit).addEventListener("input", () => { limitsTypedAt = performance.now(); });
  }
  $("#deploy").addEventListener("click", deploy);
  $("#undeploy").addEventListener("click", undeploy);
  $("#update-limits").addEventListener("click", updateLimits);
});
