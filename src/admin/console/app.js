// The operator console: plain ES modules, no framework, served by the node under
// `Content-Security-Policy: default-src 'self'`. The API is docs/ADMIN_API.md.
//
// Every piece of server data is put on the page as text (textContent, text nodes,
// attribute values): player names are hostile input. Nothing here uses innerHTML.

const API = "/admin/v1";

/** The signed-in operator: {operator, role, csrf}, or null. */
let me = null;

// --- DOM helpers ----------------------------------------------------------------

/**
 * Builds an element. `props`: `class`, `test` (the data-test attribute), `text`,
 * `on<event>` handlers, and anything else as an attribute (a `false`/`null` value
 * leaves it out). Children: nodes, or strings/numbers turned into text nodes.
 */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "test") node.dataset.test = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const $ = (test) => document.querySelector(`[data-test="${test}"]`);

/** A table: `columns` are [heading, (row) => cell content]. */
function table(test, columns, rows, rowTest) {
  return h(
    "table",
    { test },
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", { test: rowTest }, columns.map(([, cell]) => h("td", {}, cell(row))))),
    ),
  );
}

function facts(test, pairs) {
  return h(
    "dl",
    { class: "facts", test },
    pairs.map(([term, value, valueTest]) => [h("dt", {}, term), h("dd", { test: valueTest }, value)]),
  );
}

/** An RFC 3339 time as the operator reads it (UTC, as the server stores it). */
function when(value) {
  if (value === null || value === undefined) return "—";
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) return String(value);
  return t.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
}

function secs(n) {
  if (n === null || n === undefined) return "—";
  if (n < 120) return `${n} s`;
  if (n < 7200) return `${Math.round(n / 60)} min`;
  return `${(n / 3600).toFixed(1)} h`;
}

function untilText(until) {
  return until ? `until ${when(until)}` : "permanently";
}

// --- the API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** One API call; resolves to the parsed body, rejects with an ApiError carrying the server's text. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && me) headers["X-CSRF-Token"] = me.csrf;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, `The node did not answer (${e.message})`);
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    if (response.status === 401 && path !== "/login" && path !== "/session") signedOut(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

const enc = encodeURIComponent;

// --- messages -------------------------------------------------------------------

let flashTimer = 0;

/** A message across the top: `kind` "ok" or "bad". Refusals stay until the next one. */
function flash(message, kind = "ok") {
  const box = $("flash");
  box.textContent = message;
  box.className = `flash ${kind}`;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(flashTimer);
  if (kind === "ok") flashTimer = setTimeout(() => (box.hidden = true), 8000);
}

function clearFlash() {
  clearTimeout(flashTimer);
  $("flash").hidden = true;
}

function errorBox(test, message) {
  return h("p", { class: "error", role: "alert", test }, message);
}

// --- session --------------------------------------------------------------------

function signedIn(session) {
  me = session;
  $("signin").hidden = true;
  $("topbar").hidden = false;
  $("whoami").textContent = session.operator;
  $("role").textContent = session.role;
  $("nav-operators").hidden = session.role !== "admin";
  route();
}

function signedOut(message) {
  me = null;
  $("topbar").hidden = true;
  $("view").hidden = true;
  $("view").replaceChildren();
  clearFlash();
  const form = $("signin-form");
  form.reset();
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("signin").hidden = false;
  $("signin-name").focus();
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  const button = $("signin-submit");
  button.disabled = true;
  try {
    const session = await api("POST", "/login", {
      name: form.elements.name.value.trim(),
      password: form.elements.password.value,
    });
    form.reset();
    $("signin-error").hidden = true;
    signedIn(session);
  } catch (e) {
    const error = $("signin-error");
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await api("POST", "/logout");
  } catch {
    // Signed out either way: the cookie is the server's to forget.
  }
  if (location.hash !== "") history.replaceState(null, "", location.pathname);
  signedOut();
}

// --- routing --------------------------------------------------------------------

/** `#/players/bob?x=1` → {parts: ["players", "bob"], query: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(search) };
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Each navigation gets a number: a slow answer for an earlier page is dropped. */
let generation = 0;

async function route() {
  if (!me) return;
  const { parts, query } = parseHash();
  const section = parts[0] || "players";
  for (const link of document.querySelectorAll(".top nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === `#/${section}`);
  }
  const mine = ++generation;
  const view = $("view");
  view.hidden = false;
  view.dataset.page = section;
  const show = (...children) => {
    if (mine !== generation) return false;
    view.replaceChildren();
    append(view, children);
    return true;
  };
  show(h("p", { class: "muted", test: "loading" }, "Loading…"));
  try {
    if (section === "players" && parts[1] !== undefined) await playerPage(parts[1], show);
    else if (section === "players") await searchPage(query.get("q") || "", show);
    else if (section === "nodes") await nodesPage(show);
    else if (section === "queues") await queuesPage(show);
    else if (section === "audit") await auditPage(query, show);
    else if (section === "operators") await operatorsPage(show);
    else show(h("h1", {}, "Not found"), h("p", {}, "No such page."));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    show(h("h1", {}, "Could not load this page"), errorBox("page-error", e.message));
  }
}

// --- players --------------------------------------------------------------------

async function searchPage(q, show) {
  const form = h(
    "form",
    {
      class: "row panel",
      test: "search-form",
      onsubmit: (event) => {
        event.preventDefault();
        const value = event.target.elements.q.value.trim();
        go(`#/players?q=${enc(value)}`);
      },
    },
    h(
      "label",
      {},
      "Username or email starts with",
      h("input", { name: "q", type: "search", test: "search-input", autocomplete: "off", autofocus: true }),
    ),
    h("button", { type: "submit", test: "search-submit" }, "Search"),
  );
  form.elements.q.value = q;
  if (!q) {
    show(h("h1", {}, "Players"), form, h("p", { class: "muted" }, "Search by the start of a username or email."));
    form.elements.q.focus();
    return;
  }
  const { players } = await api("GET", `/players?q=${enc(q)}&limit=50`);
  const results = players.length
    ? table(
        "search-results",
        [
          ["Username", (p) => h("a", { href: `#/players/${enc(p.username)}`, test: "player-link" }, p.username)],
          ["Email", (p) => p.email ?? "—"],
          ["Id", (p) => p.id],
          [
            "Online",
            (p) => (p.online > 0 ? h("span", { class: "badge ok" }, `${p.online} session(s)`) : h("span", { class: "muted" }, "offline")),
          ],
        ],
        players,
        "search-result",
      )
    : h("p", { class: "muted", test: "search-empty" }, "No player starts with that.");
  if (show(h("h1", {}, "Players"), form, results)) form.elements.q.focus();
}

const BAN_DURATIONS = [
  ["1 hour", 3600],
  ["1 day", 86400],
  ["7 days", 7 * 86400],
  ["30 days", 30 * 86400],
  ["Permanent", null],
];
const MUTE_DURATIONS = [
  ["10 minutes", 600],
  ["1 hour", 3600],
  ["1 day", 86400],
  ["7 days", 7 * 86400],
  ["30 days", 30 * 86400],
];

/** The actions of the 360 page: what the API takes and how the form reads. */
const ACTIONS = [
  { id: "mute", label: "Mute", method: "POST", path: "mute", durations: MUTE_DURATIONS, done: "Muted" },
  { id: "unmute", label: "Unmute", method: "DELETE", path: "mute", done: "Unmuted" },
  { id: "kick", label: "Kick", method: "POST", path: "kick", done: "Kicked" },
  { id: "ban", label: "Ban", method: "POST", path: "ban", durations: BAN_DURATIONS, danger: true, done: "Banned" },
  { id: "unban", label: "Unban", method: "DELETE", path: "ban", done: "Unbanned" },
  { id: "reset-name", label: "Reset name", method: "POST", path: "reset-name", done: "Name reset for" },
  { id: "revoke-tokens", label: "Revoke tokens", method: "POST", path: "revoke-tokens", danger: true, done: "Tokens revoked for" },
];

function sanctionBox(kind, sanction) {
  const title = kind === "ban" ? "Banned" : "Muted";
  return h(
    "div",
    { class: "panel sanction", test: `active-${kind}` },
    h("h2", {}, `${title} ${untilText(sanction.until)}`),
    facts(`${kind}-facts`, [
      ["Reason", sanction.reason, `${kind}-reason`],
      ["By", sanction.by],
      ["Since", when(sanction.at)],
      ["Until", sanction.until ? when(sanction.until) : "permanent"],
    ]),
  );
}

function auditTable(test, entries) {
  if (!entries.length) return h("p", { class: "muted", test: `${test}-empty` }, "No entries.");
  return table(
    test,
    [
      ["When", (e) => when(e.at)],
      ["Operator", (e) => h("a", { href: `#/audit?operator=${enc(e.operator)}` }, e.operator)],
      ["Action", (e) => h("span", { test: "audit-action" }, e.action)],
      [
        "Target",
        (e) => (e.target === null || e.target === undefined ? "—" : h("a", { href: `#/players/${enc(e.target)}`, test: "audit-target" }, e.target)),
      ],
      ["Reason", (e) => h("span", { test: "audit-reason" }, e.reason ?? "—")],
      [
        "Outcome",
        (e) => h("span", { class: `badge ${e.outcome === "ok" ? "ok" : e.outcome === "refused" ? "warn" : "bad"}`, test: "audit-outcome" }, e.outcome),
      ],
      ["Address", (e) => e.address ?? "—"],
    ],
    entries,
    "audit-entry",
  );
}

async function playerPage(username, show) {
  let player;
  try {
    player = await api("GET", `/players/${enc(username)}`);
  } catch (e) {
    if (e.status === 404) {
      show(h("h1", {}, username), errorBox("page-error", e.message), h("a", { href: "#/players" }, "Back to search"));
      return;
    }
    throw e;
  }
  const { account, sessions, matchmaking, ban, mute } = player;

  const actionSlot = h("div", { test: "action-slot" });
  const buttons = h(
    "div",
    { class: "actions", test: "actions" },
    ACTIONS.map((action) =>
      h(
        "button",
        {
          type: "button",
          class: action.danger ? "danger" : "secondary",
          test: `action-${action.id}`,
          onclick: () => openAction(action, account.username, actionSlot),
        },
        action.label,
      ),
    ),
  );

  const sessionsBlock = sessions.length
    ? table(
        "sessions",
        [
          ["Node", (s) => h("span", { test: "session-node" }, s.node)],
          ["Display name", (s) => h("span", { test: "session-display-name" }, s.display_name)],
          ["Address", (s) => h("span", { class: "mono" }, s.address)],
          ["Connected since", (s) => when(s.connected_since)],
          ["Signed in by", (s) => s.auth],
        ],
        sessions,
        "session",
      )
    : h("p", { class: "muted", test: "sessions-empty" }, "No live session.");

  const mm = matchmaking
    ? facts("matchmaking", [
        ["Queue", matchmaking.queue ?? "—"],
        ["Position", matchmaking.position ?? "—"],
        ["Waiting", secs(matchmaking.waiting_secs)],
        ["Pending match", matchmaking.pending_match ?? "—"],
      ])
    : h("p", { class: "muted", test: "matchmaking-none" }, "Not in matchmaking.");

  show(
    h("p", {}, h("a", { href: "#/players" }, "← Players")),
    h("h1", { test: "player-name" }, account.username),
    h(
      "div",
      { class: "row" },
      sessions.length ? h("span", { class: "badge ok" }, `online: ${sessions.length}`) : h("span", { class: "badge" }, "offline"),
      ban ? h("span", { class: "badge bad", test: "badge-banned" }, "banned") : null,
      mute ? h("span", { class: "badge warn", test: "badge-muted" }, "muted") : null,
    ),
    ban ? sanctionBox("ban", ban) : null,
    mute ? sanctionBox("mute", mute) : null,
    h("div", { class: "panel" }, h("h2", {}, "Actions"), buttons, actionSlot),
    h(
      "div",
      { class: "grid2" },
      h(
        "div",
        { class: "panel" },
        h("h2", {}, "Account"),
        facts("account", [
          ["Id", account.id],
          ["Username", account.username, "account-username"],
          ["Email", account.email ?? "—"],
          ["Created", when(account.created)],
          ["Last login", when(account.last_login)],
          ["Failed logins (current window)", player.failed_logins, "failed-logins"],
        ]),
      ),
      h("div", { class: "panel" }, h("h2", {}, "Matchmaking"), mm),
    ),
    h("div", { class: "panel" }, h("h2", {}, "Sessions"), sessionsBlock),
    h(
      "div",
      { class: "panel" },
      h("h2", {}, "Recent audit"),
      auditTable("player-audit", player.audit || []),
      h("p", {}, h("a", { href: `#/audit?player=${enc(account.username)}`, test: "player-audit-all" }, "Whole audit log of this player")),
    ),
  );
}

/** The form of one action, in place of the previous one: reason (and duration), then the call. */
function openAction(action, username, slot) {
  clearFlash();
  const error = h("p", { class: "error", role: "alert", test: "action-error", hidden: true });
  const duration = action.durations
    ? h(
        "label",
        {},
        "Duration",
        h(
          "select",
          { name: "duration", test: "action-duration" },
          action.durations.map(([label, value]) => h("option", { value: value === null ? "permanent" : String(value) }, label)),
        ),
      )
    : null;
  const submit = h("button", { type: "submit", class: action.danger ? "danger" : "", test: "action-submit" }, action.label);
  const form = h(
    "form",
    { test: `action-form-${action.id}` },
    h("h2", {}, `${action.label} ${username}`),
    duration,
    h(
      "label",
      {},
      "Reason (required, shown in the audit log" + (action.id === "ban" ? " and to the player" : "") + ")",
      h("textarea", { name: "reason", required: true, maxlength: 500, test: "action-reason" }),
    ),
    h(
      "div",
      { class: "actions" },
      submit,
      h("button", { type: "button", class: "secondary", test: "action-cancel", onclick: () => slot.replaceChildren() }, "Cancel"),
    ),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = form.elements.reason.value.trim();
    if (!reason) {
      error.textContent = "A reason is required.";
      error.hidden = false;
      return;
    }
    const body = { reason };
    if (action.durations) {
      const value = form.elements.duration.value;
      body.duration_secs = value === "permanent" ? null : Number(value);
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      const result = await api(action.method, `/players/${enc(username)}/${action.path}`, body);
      const until = action.id === "ban" || action.id === "mute" ? ` ${untilText(result.until)}` : "";
      slot.replaceChildren();
      await route();
      flash(`${action.done} ${result.player}${until}: ${result.sessions} live session(s) reached.`, "ok");
    } catch (e) {
      if (e.status === 401) return;
      error.textContent = e.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
  slot.replaceChildren(h("div", { class: "panel action-form" }, form));
  form.elements.reason.focus();
}

// --- cluster --------------------------------------------------------------------

function refreshButton() {
  return h("button", { type: "button", class: "secondary", test: "refresh", onclick: () => route() }, "Refresh");
}

async function nodesPage(show) {
  const { nodes } = await api("GET", "/nodes");
  const state = (v) => h("span", { class: `badge ${v === "up" || v === "ready" ? "ok" : "bad"}` }, v);
  show(
    h("div", { class: "row" }, h("h1", {}, "Nodes"), refreshButton()),
    nodes.length
      ? table(
          "nodes",
          [
            ["Node", (n) => h("span", { test: "node-id" }, n.id)],
            ["Version", (n) => n.version],
            ["Status", (n) => state(n.status)],
            ["Players", (n) => n.players],
            ["Redis", (n) => state(n.redis)],
            ["PostgreSQL", (n) => state(n.postgres)],
            ["Started", (n) => when(n.started)],
            ["Last heartbeat", (n) => when(n.last_heartbeat)],
          ],
          nodes,
          "node",
        )
      : h("p", { class: "muted" }, "No live node."),
  );
}

async function queuesPage(show) {
  const { queues } = await api("GET", "/queues");
  show(
    h("div", { class: "row" }, h("h1", {}, "Queues"), refreshButton()),
    queues.length
      ? table(
          "queues",
          [
            ["Queue", (q) => h("span", { test: "queue-name" }, q.queue)],
            ["Waiting", (q) => q.waiting],
            ["Oldest wait", (q) => secs(q.oldest_wait_secs)],
            ["Pending allocation", (q) => q.pending_allocation],
            ["Servers leased", (q) => q.servers_leased ?? "—"],
            ["Servers free", (q) => q.servers_free ?? "—"],
          ],
          queues,
          "queue",
        )
      : h("p", { class: "muted" }, "No queue."),
  );
}

// --- audit ----------------------------------------------------------------------

async function auditPage(query, show) {
  const player = query.get("player") || "";
  const operator = query.get("operator") || "";
  const filter = (before) => {
    const params = new URLSearchParams();
    if (player) params.set("player", player);
    if (operator) params.set("operator", operator);
    if (before !== undefined) params.set("before", String(before));
    params.set("limit", "50");
    return `/audit?${params}`;
  };
  const form = h(
    "form",
    {
      class: "row panel",
      test: "audit-filter",
      onsubmit: (event) => {
        event.preventDefault();
        const params = new URLSearchParams();
        const p = event.target.elements.player.value.trim();
        const o = event.target.elements.operator.value.trim();
        if (p) params.set("player", p);
        if (o) params.set("operator", o);
        const search = params.toString();
        go(search ? `#/audit?${search}` : "#/audit");
      },
    },
    h("label", {}, "Player", h("input", { name: "player", test: "audit-player", autocomplete: "off" })),
    h("label", {}, "Operator", h("input", { name: "operator", test: "audit-operator", autocomplete: "off" })),
    h("button", { type: "submit", test: "audit-apply" }, "Filter"),
  );
  form.elements.player.value = player;
  form.elements.operator.value = operator;

  const first = await api("GET", filter());
  const entries = [...first.entries];
  const list = h("div", { test: "audit-list" }, auditTable("audit", entries));
  const older = h("button", { type: "button", class: "secondary", test: "audit-older" }, "Older entries");
  const error = h("p", { class: "error", role: "alert", test: "audit-error", hidden: true });
  let next = first.next_before;
  older.hidden = next === null || next === undefined;
  older.addEventListener("click", async () => {
    older.disabled = true;
    try {
      const page = await api("GET", filter(next));
      entries.push(...page.entries);
      list.replaceChildren(auditTable("audit", entries));
      next = page.next_before;
      older.hidden = next === null || next === undefined;
      error.hidden = true;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      older.disabled = false;
    }
  });
  show(h("div", { class: "row" }, h("h1", {}, "Audit log"), refreshButton()), form, list, h("p", {}, older), error);
}

// --- operators ------------------------------------------------------------------

const ROLES = ["viewer", "moderator", "admin"];

async function operatorsPage(show) {
  const { operators } = await api("GET", "/operators");
  const error = h("p", { class: "error", role: "alert", test: "operators-error", hidden: true });
  const fail = (e) => {
    if (e.status === 401) return;
    error.textContent = e.message;
    error.hidden = false;
  };
  const patch = async (name, change, done) => {
    error.hidden = true;
    try {
      await api("PATCH", `/operators/${enc(name)}`, change);
      await route();
      flash(done, "ok");
    } catch (e) {
      fail(e);
    }
  };
  const roleSelect = (op) => {
    const select = h(
      "select",
      { test: "operator-role", "aria-label": `Role of ${op.name}` },
      ROLES.map((r) => h("option", { value: r, selected: r === op.role }, r)),
    );
    select.addEventListener("change", () => patch(op.name, { role: select.value }, `${op.name} is now ${select.value}.`));
    return select;
  };
  const toggle = (op) =>
    h(
      "button",
      {
        type: "button",
        class: op.disabled ? "secondary" : "danger",
        test: op.disabled ? "operator-enable" : "operator-disable",
        onclick: () => patch(op.name, { disabled: !op.disabled }, `${op.name} ${op.disabled ? "enabled" : "disabled"}.`),
      },
      op.disabled ? "Enable" : "Disable",
    );

  const add = h(
    "form",
    { class: "row panel", test: "operator-add-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, autocomplete: "off", test: "operator-add-name" })),
    h(
      "label",
      {},
      "Role",
      h("select", { name: "role", test: "operator-add-role" }, ROLES.map((r) => h("option", { value: r }, r))),
    ),
    h(
      "label",
      {},
      "Password",
      h("input", { name: "password", type: "password", required: true, autocomplete: "new-password", test: "operator-add-password" }),
    ),
    h("button", { type: "submit", test: "operator-add-submit" }, "Add operator"),
  );
  add.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = add.elements;
    error.hidden = true;
    try {
      const op = await api("POST", "/operators", { name: f.name.value.trim(), role: f.role.value, password: f.password.value });
      await route();
      flash(`Operator ${op.name} added as ${op.role}.`, "ok");
    } catch (e) {
      fail(e);
    }
  });

  show(
    h("h1", {}, "Operators"),
    table(
      "operators",
      [
        ["Name", (op) => h("span", { test: "operator-name" }, op.name)],
        ["Role", (op) => (op.name === me.operator ? op.role : roleSelect(op))],
        ["State", (op) => (op.disabled ? h("span", { class: "badge bad" }, "disabled") : h("span", { class: "badge ok" }, "active"))],
        ["Created", (op) => when(op.created)],
        ["", (op) => (op.name === me.operator ? h("span", { class: "muted" }, "you") : toggle(op))],
      ],
      operators,
      "operator",
    ),
    error,
    h("h2", {}, "Add an operator"),
    add,
  );
}

// --- start ----------------------------------------------------------------------

async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => {
    clearFlash();
    route();
  });
  try {
    signedIn(await api("GET", "/session"));
  } catch (e) {
    signedOut(e.status === 401 || e.status === undefined ? "" : e.message);
  }
}

start();
