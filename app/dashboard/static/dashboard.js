// waorch dashboard: plain JS over the public API, polling every POLL_MS (docs/dashboard.md).
// Data only ever reaches the page as text (textContent), never as HTML. The API key lives in
// sessionStorage and in the X-API-Key header, never in the DOM.
"use strict";

const POLL_MS = 2000;
const KEY_STORE = "waorch.dashboard.key";
const QR_STATUSES = new Set(["starting", "pairing"]);

const state = {
  key: null,
  timer: null,
  polling: false,
  generation: 0,        // bumped on logout: answers of an older login are dropped
  qr: new Map(),        // session id -> {figure, img, url, busy}
  tracked: null,        // id of the message sent from this page
  alertsMissing: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// --- API ----------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  if (body && typeof body === "object" && body.message) {
    const fields = body.errors && typeof body.errors === "object" ? Object.entries(body.errors) : [];
    const detail = fields.length ? `: ${fields[0][0]} ${[].concat(fields[0][1]).join(" ")}` : "";
    return `${body.message}${detail}`;
  }
  return status ? `HTTP ${status}` : "the gateway does not answer";
}

async function api(method, path, { body, accept, key } = {}) {
  const headers = { "X-API-Key": key || state.key, Accept: accept || "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
  } catch (err) {
    throw new ApiFailure(0, null);
  }
  if (accept === "image/png" && response.ok) return response.blob();
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch (err) { data = null; }
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

// --- formatting ---------------------------------------------------------------------------

function ago(now, then) {
  if (!then) return "—";
  const s = Math.max(0, now - then);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function notice(text, isError = false) {
  const box = $("notice");
  box.textContent = text;
  box.className = isError ? "notice error" : "notice";
}

// Rows keyed by id, updated in place: buttons stay attached while the data refreshes.
function syncRows(tbody, items, key, cells, actions) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  const wanted = new Set();
  items.forEach((item, index) => {
    const id = key(item);
    wanted.add(id);
    const values = cells(item);
    let row = existing.get(id);
    if (!row) {
      row = el("tr", { "data-key": id });
      values.forEach((_, i) => row.append(el("td", { "data-col": String(i) })));
      if (actions) row.append(el("td", { class: "actions" }, ...actions(item)));
    }
    values.forEach((value, i) => {
      const cell = row.cells[i];
      const [text, cls] = Array.isArray(value) ? value : [value, ""];
      const shown = text === null || text === undefined || text === "" ? "—" : String(text);
      if (cell.textContent !== shown) cell.textContent = shown;
      if (cell.className !== cls) cell.className = cls;
    });
    if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] || null);
  });
  for (const [id, row] of existing) if (!wanted.has(id)) row.remove();
}

function button(label, action, id) {
  return el("button", { type: "button", text: label, "data-action": action, "data-id": id });
}

// --- rendering ----------------------------------------------------------------------------

function renderSessions(sessions, overview) {
  const load = new Map((overview.sessions || []).map((s) => [s.id, s]));
  syncRows($("sessions"), sessions, (s) => s.id, (s) => {
    const l = load.get(s.id) || {};
    return [
      s.id, `+${s.phone}`, s.label, [s.status, `status status-${s.status}`], s.trust_level,
      s.proxy ? s.proxy.url : "", ago(overview.now, s.last_ping),
      l.queue_depth ?? "", l.sends_24h ?? "", s.restarts,
    ];
  }, (s) => [button("Restart", "restart", s.id)]);
  renderSenders(sessions);
  renderPairing(sessions);
}

function renderSenders(sessions) {
  const select = document.querySelector("#send-form select[name=from]");
  const phones = sessions.filter((s) => s.status === "connected").map((s) => `+${s.phone}`);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join() === phones.join()) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "any session" }),
    ...phones.map((p) => el("option", { value: p, text: p })));
  select.value = phones.includes(chosen) ? chosen : "";
}

function renderPairing(sessions) {
  const waiting = sessions.filter((s) => QR_STATUSES.has(s.status));
  const ids = new Set(waiting.map((s) => s.id));
  for (const [id, entry] of state.qr) {
    if (!ids.has(id)) {
      entry.figure.remove();
      if (entry.url) URL.revokeObjectURL(entry.url);
      state.qr.delete(id);
    }
  }
  for (const s of waiting) {
    let entry = state.qr.get(s.id);
    if (!entry) {
      const img = el("img", { alt: `QR code for +${s.phone}`, width: 200, height: 200, hidden: true });
      const caption = el("figcaption", { text: `+${s.phone}: waiting for a QR code…` });
      const figure = el("figure", { class: "qr", "data-session": s.id }, img, caption);
      $("pairing").append(figure);
      entry = { figure, img, caption, url: null, busy: false };
      state.qr.set(s.id, entry);
    }
    refreshQr(s, entry);
  }
}

async function refreshQr(session, entry) {
  if (entry.busy) return;
  entry.busy = true;
  const generation = state.generation;
  try {
    const blob = await api("GET", `/api/sessions/${encodeURIComponent(session.id)}/qr`,
      { accept: "image/png" });
    if (generation !== state.generation || !state.qr.has(session.id)) return;
    const url = URL.createObjectURL(blob);
    const old = entry.url;
    entry.url = url;
    entry.img.src = url;
    entry.img.hidden = false;
    entry.caption.textContent = `+${session.phone}: scan with WhatsApp (Linked devices)`;
    if (old) URL.revokeObjectURL(old);
  } catch (err) {
    if (err.status === 404) entry.caption.textContent = `+${session.phone}: waiting for a QR code…`;
  } finally {
    entry.busy = false;
  }
}

function renderProxies(proxies, now) {
  syncRows($("proxies"), proxies, (p) => p.id, (p) => [
    p.id, p.url, [p.status, `status proxy-${(p.status || "").toLowerCase()}`],
    `${p.sessions} / ${p.ceiling}`, p.consecutive_failures, ago(now, p.last_check), p.last_error,
  ], (p) => [button("Check", "check", p.id)]);
}

function renderQueues(queues) {
  const figures = [
    ["unrouted", queues.unrouted], ["routed (waiting for a slot)", queues.routed],
    ["scheduled", queues.scheduled], ["claimed", queues.claimed],
    ...Object.entries(queues.celery || {}).map(([name, n]) => [`celery ${name}`, n]),
    ["celery unacked", queues.celery_unacked], ["webhook dead letters", queues.dead_letters],
  ];
  $("queues").replaceChildren(...figures.map(([name, n]) => el("div", {},
    el("dt", { text: name }), el("dd", { text: String(n ?? "—"), "data-queue": name }))));
}

function renderMessages(overview) {
  const now = overview.now;
  syncRows($("recent-messages"), overview.recent_messages || [], (m) => m.id, (m) => [
    m.id, [m.status, `status msg-${m.status}`], m.to ? `+${m.to}` : "", m.from ? `+${m.from}` : "",
    m.session, m.text_preview, ago(now, m.updated_at),
  ]);
  syncRows($("recent-failures"), overview.recent_failures || [], (m) => m.id, (m) => [
    m.id, m.reason, m.to ? `+${m.to}` : "", m.session, m.attempts, ago(now, m.updated_at),
  ]);
}

function renderAlerts(alerts, now) {
  $("alerts-unavailable").hidden = !state.alertsMissing;
  if (!alerts) return;
  const active = alerts.active || [];
  $("alerts-active").replaceChildren(...(active.length ? active.map((a) => el("li", {
    class: `alert severity-${a.severity}`,
    text: `${a.kind} ${a.subject}: ${a.message} (${ago(now, a.at)})`,
  })) : [el("li", { class: "muted", text: "No active alerts." })]));
  syncRows($("alert-events"), (alerts.events || []).slice(0, 20), (e) => e.id, (e) => [
    ago(now, e.at), e.state, e.kind, e.subject, e.message,
  ]);
}

async function renderTracked() {
  if (!state.tracked) return;
  try {
    const m = await api("GET", `/api/messages/${encodeURIComponent(state.tracked)}`);
    const reason = m.reason ? ` (${m.reason})` : "";
    $("sent").textContent = `Message ${m.id} to +${m.to}: ${m.status}${reason}`;
    $("sent").dataset.status = m.status;
  } catch (err) {
    $("sent").textContent = `Message ${state.tracked}: ${err.message}`;
  }
}

// --- polling ------------------------------------------------------------------------------

async function fetchAlerts() {
  try {
    const alerts = await api("GET", "/api/alerts");
    state.alertsMissing = false;
    return alerts;
  } catch (err) {
    // another part of waorch provides /api/alerts; until it exists, say so and keep asking
    if (err.status === 404) { state.alertsMissing = true; return null; }
    throw err;
  }
}

async function refresh() {
  if (state.polling || !state.key) return;
  state.polling = true;
  const generation = state.generation;
  try {
    const [sessions, proxies, overview, alerts] = await Promise.all([
      api("GET", "/api/sessions"), api("GET", "/api/proxies"),
      api("GET", "/api/dashboard/overview"), fetchAlerts(),
    ]);
    if (generation !== state.generation) return;
    renderSessions(sessions.sessions, overview);
    renderProxies(proxies.proxies, overview.now);
    renderQueues(overview.queues);
    renderMessages(overview);
    renderAlerts(alerts, overview.now);
    await renderTracked();
    const updated = $("updated");
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.className = "muted";
  } catch (err) {
    if (generation !== state.generation) return;
    if (err.status === 401 || err.status === 403) {
      logout(`Logged out: ${err.message}`);
      return;
    }
    $("updated").textContent = `update failed: ${err.message}`;
    $("updated").className = "error";
  } finally {
    state.polling = false;
  }
}

function schedule() {
  clearTimeout(state.timer);
  const generation = state.generation;
  state.timer = setTimeout(async () => {
    await refresh();
    if (generation === state.generation && state.key) schedule();
  }, POLL_MS);
}

// --- login --------------------------------------------------------------------------------

async function verify(key) {
  // the overview is admin-only: a key that reads it can use every panel
  try {
    await api("GET", "/api/dashboard/overview", { key });
    return null;
  } catch (err) {
    if (err.status === 401) return "That API key is not valid.";
    if (err.status === 403) return "That key is not an admin key: the dashboard needs the admin scope.";
    return `Cannot log in: ${err.message}`;
  }
}

function showApp(on) {
  $("login-panel").hidden = on;
  $("app").hidden = !on;
  $("logout").hidden = !on;
}

async function start(key) {
  state.key = key;
  state.generation += 1;
  showApp(true);
  await refresh();
  schedule();
}

function logout(message = "") {
  state.key = null;
  state.generation += 1;
  state.tracked = null;
  clearTimeout(state.timer);
  sessionStorage.removeItem(KEY_STORE);
  for (const entry of state.qr.values()) if (entry.url) URL.revokeObjectURL(entry.url);
  state.qr.clear();
  for (const id of ["sessions", "proxies", "recent-messages", "recent-failures", "alert-events",
    "alerts-active", "queues", "pairing"]) $(id).replaceChildren();
  $("sent").textContent = "";
  $("updated").textContent = "";
  notice("");
  showApp(false);
  $("login-error").textContent = message;
}

async function onLogin(event) {
  event.preventDefault();
  const input = $("login-key");
  const key = input.value.trim();
  input.value = "";
  $("login-error").textContent = "";
  const problem = await verify(key);
  if (problem) {
    $("login-error").textContent = problem;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  await start(key);
}

// --- actions ------------------------------------------------------------------------------

async function act(work) {
  try {
    notice(await work());
  } catch (err) {
    notice(err.message, true);
  }
  refresh();
}

function formData(form) {
  return Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v).trim()]));
}

function onSessionAction(event) {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const id = target.dataset.id;
  if (target.dataset.action === "restart") {
    act(async () => {
      const s = await api("POST", `/api/sessions/${encodeURIComponent(id)}/restart`);
      return `Session ${s.id} is restarting.`;
    });
  }
}

function onProxyAction(event) {
  const target = event.target.closest("button[data-action]");
  if (!target || target.dataset.action !== "check") return;
  const id = target.dataset.id;
  target.disabled = true;
  act(async () => {
    try {
      const p = await api("POST", `/api/proxies/${encodeURIComponent(id)}/check`);
      const change = p.change ? `, ${p.change}` : "";
      return `Proxy ${p.id} checked: ${p.status}${change}${p.last_error ? ` (${p.last_error})` : ""}.`;
    } finally {
      target.disabled = false;
    }
  });
}

function onAddProxy(event) {
  event.preventDefault();
  const form = event.target;
  const { url } = formData(form);
  form.reset(); // the URL may hold credentials: do not leave them in the page
  act(async () => {
    const p = await api("POST", "/api/proxies", { body: { url } });
    return `Proxy ${p.id} (${p.url}) is in the inventory: ${p.status}, ${p.sessions} / ${p.ceiling} sessions.`;
  });
}

function onCreateSession(event) {
  event.preventDefault();
  const form = event.target;
  const { phone, label } = formData(form);
  act(async () => {
    const s = await api("POST", "/api/sessions", { body: { phone, label } });
    form.reset();
    return `Session ${s.id} created for +${s.phone}; scan its QR code below.`;
  });
}

function onSend(event) {
  event.preventDefault();
  const form = event.target;
  const values = formData(form);
  const body = { to: values.to, text: values.text };
  if (values.from) body.from = values.from;
  act(async () => {
    const accepted = await api("POST", "/api/send", { body });
    state.tracked = accepted.id;
    $("sent").textContent = `Message ${accepted.id}: ${accepted.status}`;
    $("sent").dataset.status = accepted.status;
    form.querySelector("input[name=text]").value = "";
    return `Message ${accepted.id} accepted.`;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => logout());
  $("sessions").addEventListener("click", onSessionAction);
  $("proxies").addEventListener("click", onProxyAction);
  $("proxy-form").addEventListener("submit", onAddProxy);
  $("session-form").addEventListener("submit", onCreateSession);
  $("send-form").addEventListener("submit", onSend);
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) {
    verify(saved).then((problem) => (problem ? logout(problem) : start(saved)));
  }
});
