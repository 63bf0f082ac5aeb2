//! The admin API, operator sessions and the command line (docs/ADMIN_API.md), against
//! real node processes on PostgreSQL and Redis. Every response a test provokes is
//! checked against the served OpenAPI document (`openapi.json`), and one test
//! exercises every operation of the document.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "correct horse battery";
const NOT_ALLOWED: &str = "Your role does not allow this";
const BAN_LIMIT: &str = "Moderators may ban for at most 30 days";
const LIFTS_OWN: &str = "Moderators may lift only their own actions";
const BAD_CSRF: &str = "Missing or invalid CSRF token";
const NOT_SIGNED_IN: &str = "Not signed in";
const BAD_CREDENTIALS: &str = "Invalid name or password";
const TOO_MANY: &str = "Too many attempts, try again later";

/// The document the node serves, as built into it.
static OPENAPI: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(include_str!("../../src/admin/openapi.json")).unwrap());

/// The operations (method, path template) the tests of this process provoked
/// responses of, with the statuses seen.
static EXERCISED: LazyLock<Mutex<BTreeSet<(String, String, u16)>>> = LazyLock::new(Mutex::default);

// The OpenAPI check --------------------------------------------------------------------

/// The path template of the document that `path` (without query) falls under.
fn template_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    OPENAPI["paths"].as_object().unwrap().keys().find_map(|template| {
        let parts: Vec<&str> = template.split('/').collect();
        let fits = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        fits.then(|| template.clone())
    })
}

/// Checks a response against the document: the operation exists, documents the
/// status, and the body fits the status's schema. Records the operation as exercised.
fn conform(method: &str, path: &str, status: u16, body: &Value) {
    let path = path.split('?').next().unwrap();
    let Some(template) = template_of(path) else { return };
    let operation = &OPENAPI["paths"][&template][method.to_lowercase()];
    if operation.is_null() {
        // Not an operation of the API (a method the API refuses): nothing to check.
        assert!(status == 405 || status == 404, "{method} {path}: {status} for an undocumented method");
        return;
    }
    let response = &operation["responses"][status.to_string()];
    assert!(!response.is_null(), "{method} {template}: status {status} is not documented (body {body})");
    if let Some(schema) = response["content"]["application/json"].get("schema") {
        if let Err(e) = validate(schema, body, "$") {
            panic!("{method} {template} {status}: body does not fit the document: {e}\nbody: {body}");
        }
    } else {
        assert!(body.is_null(), "{method} {template} {status}: a body where the document has none: {body}");
    }
    EXERCISED.lock().unwrap().insert((method.to_lowercase(), template, status));
}

/// JSON Schema (the subset the document uses): $ref, oneOf, type (with "null"),
/// enum, properties, required, additionalProperties: false, items, maxItems,
/// minLength, maxLength, minimum, format date-time.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/components/schemas/").ok_or(format!("unknown $ref {r}"))?;
        return validate(&OPENAPI["components"]["schemas"][name], value, at);
    }
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = choices.iter().filter(|s| validate(s, value, at).is_ok()).count();
        if fits != 1 {
            let why: Vec<String> = choices.iter().filter_map(|s| validate(s, value, at).err()).collect();
            return Err(format!("{at}: fits {fits} of oneOf ({})", why.join("; ")));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.iter().any(|t| *t == kind || (*t == "number" && kind == "integer"));
        if !fits {
            return Err(format!("{at}: {kind} where {types:?} is expected"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !map.contains_key(key) {
                    return Err(format!("{at}: missing {key}"));
                }
            }
            for (key, v) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => validate(s, v, &format!("{at}.{key}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: unexpected property {key}"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    return Err(format!("{at}: {} items, at most {max}", items.len()));
                }
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(item, v, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| n < min)
                || schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| n > max)
            {
                return Err(format!("{at}: length {n} out of bounds"));
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time")
                && (humantime::parse_rfc3339(s).is_err() || !s.ends_with('Z') || s.contains('.'))
            {
                return Err(format!("{at}: {s} is not RFC 3339 UTC with whole seconds"));
            }
        }
        Value::Number(n) => {
            if let (Some(min), Some(v)) = (schema.get("minimum").and_then(Value::as_f64), n.as_f64()) {
                if v < min {
                    return Err(format!("{at}: {v} below {min}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

// A client of the API ------------------------------------------------------------------

/// An operator's HTTP client: its cookie and CSRF token once signed in.
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    cookie: Option<String>,
    csrf: Option<String>,
    /// Sent as X-Forwarded-For (the node trusts 127.0.0.1 in tests that set it).
    from: Option<String>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {} {}", self.status, self.body))
    }
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api { addr, cookie: None, csrf: None, from: None }
    }

    fn from(addr: SocketAddr, client: &str) -> Api {
        Api { from: Some(client.to_owned()), ..Api::new(addr) }
    }

    /// A request, with the session's cookie and CSRF token (on state-changing methods).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let with_csrf = method != "GET";
        self.raw(method, path, body, with_csrf.then_some(self.csrf.as_deref()).flatten()).await
    }

    /// A request with `csrf` as its CSRF header (none: no header).
    async fn raw(&self, method: &str, path: &str, body: Option<Value>, csrf: Option<&str>) -> Reply {
        let cookie = self.cookie.as_ref().map(|c| format!("ocps_admin={c}"));
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(c) = &cookie {
            headers.push(("Cookie", c));
        }
        if let Some(csrf) = csrf {
            headers.push(("X-CSRF-Token", csrf));
        }
        if let Some(from) = &self.from {
            headers.push(("X-Forwarded-For", from));
        }
        let text = body.map(|b| b.to_string());
        let (status, headers, raw) = http_full(self.addr, method, path, text.as_deref(), &headers).await.unwrap();
        let body = if raw.is_empty() { Value::Null } else { serde_json::from_str(&raw).unwrap_or(Value::String(raw)) };
        conform(method, path, status, &body);
        Reply { status, headers, body }
    }

    async fn login(&self, name: &str, password: &str) -> Reply {
        self.call("POST", "/admin/v1/login", Some(json!({"name": name, "password": password}))).await
    }

    /// Signs in as `name`; panics unless it works.
    async fn signed_in(addr: SocketAddr, name: &str, password: &str) -> Api {
        let mut api = Api::new(addr);
        let reply = api.login(name, password).await;
        assert_eq!(reply.status, 200, "login as {name}: {}", reply.body);
        let cookie = reply.header("set-cookie").expect("a session cookie");
        let value = cookie.split(';').next().unwrap().strip_prefix("ocps_admin=").unwrap();
        api.cookie = Some(value.to_owned());
        api.csrf = Some(reply.body["csrf"].as_str().unwrap().to_owned());
        api
    }

    async fn add_operator(&self, name: &str, role: &str) {
        let reply = self
            .call("POST", "/admin/v1/operators", Some(json!({"name": name, "role": role, "password": ADMIN_PASSWORD})))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }

    async fn audit(&self, query: &str) -> Vec<Value> {
        let reply = self.call("GET", &format!("/admin/v1/audit?{query}"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["entries"].as_array().unwrap().clone()
    }
}

// Fixtures ---------------------------------------------------------------------------

/// Runs `openchampps ARGS` with the cluster's settings, `stdin` on its standard input.
async fn cli(cluster: &Cluster, args: &[&str], stdin: &str) -> Output {
    let env = cluster.env();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_openchampps"))
            .env_clear()
            .envs(env)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A cluster and one node, with an admin `root` created by the command line.
async fn with_admin(extra: &[(&str, &str)]) -> (Cluster, NodeProc) {
    let cluster = Cluster::new().await;
    let node = cluster.node_with(extra).await;
    let out = cli(&cluster, &["operator", "add", "root", "--role", "admin"], &format!("{ADMIN_PASSWORD}\n")).await;
    assert!(out.status.success(), "operator add: {}", text(&out.stderr));
    (cluster, node)
}

/// The OS user the command line audits as.
fn os_user() -> String {
    openchampps::admin::cli::os_user()
}

// Tests --------------------------------------------------------------------------------

#[tokio::test]
async fn an_operator_added_on_the_command_line_signs_in_with_a_strict_cookie_and_signs_out() {
    let (_cluster, node) = with_admin(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let anonymous = Api::new(node.metrics);
    assert_eq!(anonymous.login("root", "wrong password").await.error(), BAD_CREDENTIALS);
    assert_eq!(anonymous.login("nobody", ADMIN_PASSWORD).await.error(), BAD_CREDENTIALS);
    let session = anonymous.call("GET", "/admin/v1/session", None).await;
    assert_eq!((session.status, session.error()), (401, NOT_SIGNED_IN));

    // Names are case-insensitive.
    let reply = anonymous.login("ROOT", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!((reply.body["operator"].as_str(), reply.body["role"].as_str()), (Some("root"), Some("admin")));
    let cookie = reply.header("set-cookie").unwrap().to_owned();
    let attributes: BTreeSet<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    assert_eq!(attributes, BTreeSet::from(["HttpOnly", "SameSite=Strict", "Path=/admin"]), "{cookie}");

    // Over TLS ended by a trusted proxy the cookie is Secure too.
    let mut headers = vec![("Content-Type", "application/json"), ("X-Forwarded-Proto", "https")];
    let body = json!({"name": "root", "password": ADMIN_PASSWORD}).to_string();
    let (status, response_headers, _) =
        http_full(node.metrics, "POST", "/admin/v1/login", Some(&body), &headers).await.unwrap();
    let secure = response_headers.iter().find(|(k, _)| k == "set-cookie").unwrap().1.clone();
    assert_eq!(status, 200);
    assert!(secure.split(';').any(|a| a.trim() == "Secure"), "{secure}");
    headers.truncate(1);

    let api = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    let session = api.call("GET", "/admin/v1/session", None).await;
    assert_eq!(session.status, 200);
    assert_eq!(session.body["csrf"].as_str(), api.csrf.as_deref());

    // Logout needs the CSRF token too, then the cookie opens nothing.
    assert_eq!(api.raw("POST", "/admin/v1/logout", None, None).await.error(), BAD_CSRF);
    let out = api.call("POST", "/admin/v1/logout", None).await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(api.call("GET", "/admin/v1/session", None).await.status, 401);

    let entries = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await.audit("operator=root").await;
    let actions: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap())).collect();
    assert!(actions.contains(&("logout", "ok")), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == ("login", "ok")).count(), 4, "{actions:?}");
    assert!(actions.contains(&("login", "failed")), "{actions:?}");
    assert!(entries.iter().all(|e| e["address"] == "127.0.0.1"), "{entries:?}");
    let by_cli = api_audit_by_cli(&node).await;
    assert!(by_cli.iter().any(|e| e["action"] == "operator-add" && e["target"] == "root"), "{by_cli:?}");
}

async fn api_audit_by_cli(node: &NodeProc) -> Vec<Value> {
    let api = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    api.audit(&format!("operator=cli:{}", os_user())).await
}

#[tokio::test]
async fn a_request_without_the_csrf_token_changes_nothing() {
    let (_cluster, node) = with_admin(&[]).await;
    let api = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    let mut player = node.player("victim").await;
    let target = "/admin/v1/players/someone/kick";
    for csrf in [None, Some("forged"), Some("")] {
        let reply = api.raw("POST", target, Some(json!({"reason": "cross-site"})), csrf).await;
        assert_eq!((reply.status, reply.error()), (403, BAD_CSRF));
    }
    // A cross-site form post: no JSON, no header.
    let cookie = format!("ocps_admin={}", api.cookie.as_deref().unwrap());
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", cookie.as_str())];
    let (status, _) =
        http(node.metrics, "POST", "/admin/v1/operators", Some("name=evil&role=admin"), &headers).await.unwrap();
    assert_eq!(status, 403);
    let patch = api.raw("PATCH", "/admin/v1/operators/root", Some(json!({"disabled": true})), None).await;
    assert_eq!(patch.status, 403);
    // Nothing changed: no operator added, root still enabled, the player still connected.
    let operators = api.call("GET", "/admin/v1/operators", None).await;
    assert_eq!(operators.body["operators"].as_array().unwrap().len(), 1, "{}", operators.body);
    assert_eq!(operators.body["operators"][0]["disabled"], false);
    player.expect_silence(Duration::from_millis(300)).await;
    // Each attempt is in the log as refused.
    let refused = api.audit("operator=root").await;
    let refused = refused.iter().filter(|e| e["outcome"] == "refused").count();
    assert_eq!(refused, 5);
}

#[tokio::test]
async fn a_session_ends_after_its_inactivity_and_activity_keeps_it() {
    let (_cluster, node) = with_admin(&[("ADMIN_SESSION_SECS", "3")]).await;
    let api = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(api.call("GET", "/admin/v1/session", None).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let reply = api.call("GET", "/admin/v1/session", None).await;
    assert_eq!((reply.status, reply.error()), (401, NOT_SIGNED_IN));
}

#[tokio::test]
async fn disabling_an_operator_ends_its_sessions_at_once() {
    let (_cluster, node) = with_admin(&[]).await;
    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    root.add_operator("mia", "moderator").await;
    let exists = root
        .call("POST", "/admin/v1/operators", Some(json!({"name": "MIA", "role": "viewer", "password": ADMIN_PASSWORD})))
        .await;
    assert_eq!((exists.status, exists.error()), (409, "Operator exists"));
    let mia = Api::signed_in(node.metrics, "mia", ADMIN_PASSWORD).await;
    assert_eq!(mia.call("GET", "/admin/v1/session", None).await.body["role"], "moderator");

    let disabled = root.call("PATCH", "/admin/v1/operators/mia", Some(json!({"disabled": true}))).await;
    assert_eq!((disabled.status, &disabled.body["disabled"]), (200, &json!(true)));
    assert_eq!(mia.call("GET", "/admin/v1/session", None).await.status, 401);
    assert_eq!(mia.login("mia", ADMIN_PASSWORD).await.error(), BAD_CREDENTIALS);

    let enabled =
        root.call("PATCH", "/admin/v1/operators/mia", Some(json!({"disabled": false, "role": "viewer"}))).await;
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    let mia = Api::signed_in(node.metrics, "mia", ADMIN_PASSWORD).await;
    assert_eq!(mia.call("GET", "/admin/v1/session", None).await.body["role"], "viewer");
    // An admin does not lock itself out.
    let own = root.call("PATCH", "/admin/v1/operators/root", Some(json!({"disabled": true}))).await;
    assert_eq!(own.status, 409);
    let missing = root.call("PATCH", "/admin/v1/operators/nobody", Some(json!({"role": "viewer"}))).await;
    assert_eq!((missing.status, missing.error()), (404, "No such operator"));

    let actions: Vec<String> = root
        .audit("player=mia")
        .await
        .iter()
        .map(|e| format!("{}:{}", e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    for expected in ["operator-add:ok", "operator-add:failed", "operator-disable:ok", "operator-enable:ok"] {
        assert!(actions.iter().any(|a| a == expected), "{expected} not in {actions:?}");
    }
}

#[tokio::test]
async fn roles_refuse_what_they_do_not_allow_and_each_refusal_is_audited() {
    let (_cluster, node) = with_admin(&[]).await;
    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    root.add_operator("vic", "viewer").await;
    root.add_operator("max", "moderator").await;
    let viewer = Api::signed_in(node.metrics, "vic", ADMIN_PASSWORD).await;
    let moderator = Api::signed_in(node.metrics, "max", ADMIN_PASSWORD).await;
    let player = unique_name("target");
    node.client().await.signed_up(&player).await;
    let on = |action: &str| format!("/admin/v1/players/{player}/{action}");
    let reason = |extra: Value| {
        let mut body = json!({"reason": "spam"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };

    // A viewer reads, and does nothing else.
    for path in ["/admin/v1/players?q=t", "/admin/v1/nodes", "/admin/v1/queues", "/admin/v1/audit"] {
        let reply = viewer.call("GET", path, None).await;
        assert!(reply.status != 401 && reply.status != 403, "{path}: {}", reply.body);
    }
    for (method, action, body) in [
        ("POST", "kick", reason(json!({}))),
        ("POST", "mute", reason(json!({"duration_secs": 60}))),
        ("POST", "ban", reason(json!({"duration_secs": 60}))),
        ("DELETE", "ban", reason(json!({}))),
        ("POST", "reset-name", reason(json!({}))),
    ] {
        let reply = viewer.call(method, &on(action), Some(body)).await;
        assert_eq!((reply.status, reply.error()), (403, NOT_ALLOWED), "viewer {method} {action}");
    }
    // A malformed action is recorded as failed, against the player it named.
    let reply = moderator.call("POST", &on("mute"), Some(reason(json!({"duration_secs": "soon"})))).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let audit = moderator.call("GET", &format!("/admin/v1/audit?player={player}&operator=max"), None).await;
    let last = &audit.body["entries"][0];
    assert_eq!(
        (&last["action"], &last["target"], &last["outcome"]),
        (&json!("mute"), &json!(player), &json!("failed"))
    );
    for api in [&viewer, &moderator] {
        assert_eq!(api.call("GET", "/admin/v1/operators", None).await.error(), NOT_ALLOWED);
        let add = json!({"name": "sneaky", "role": "admin", "password": ADMIN_PASSWORD});
        assert_eq!(api.call("POST", "/admin/v1/operators", Some(add)).await.error(), NOT_ALLOWED);
        let promote = json!({"role": "admin"});
        assert_eq!(api.call("PATCH", "/admin/v1/operators/max", Some(promote)).await.error(), NOT_ALLOWED);
    }

    // A moderator bans for at most 30 days, and revokes no tokens.
    for duration in [json!(null), json!(30 * 86_400 + 1), json!(365 * 86_400)] {
        let reply = moderator.call("POST", &on("ban"), Some(reason(json!({"duration_secs": duration})))).await;
        assert_eq!((reply.status, reply.error()), (403, BAN_LIMIT), "ban for {duration}");
    }
    let no_duration = moderator.call("POST", &on("ban"), Some(json!({"reason": "spam"}))).await;
    assert_eq!(no_duration.error(), BAN_LIMIT);
    let revoke = moderator.call("POST", &on("revoke-tokens"), Some(reason(json!({})))).await;
    assert_eq!((revoke.status, revoke.error()), (403, NOT_ALLOWED));

    // Every refusal is in the log, with who, what, whom, why and from where.
    let refused = root.audit(&format!("player={player}&limit=200")).await;
    let refused: Vec<&Value> = refused.iter().filter(|e| e["outcome"] == "refused").collect();
    assert_eq!(refused.len(), 5 + 4 + 1, "{refused:?}");
    assert!(refused.iter().all(|e| e["reason"] == "spam" && e["address"] == "127.0.0.1"));
    assert_eq!(refused.iter().filter(|e| e["operator"] == "vic").count(), 5);
    let operators = root.audit("operator=max&limit=200").await;
    let refused_ops = operators.iter().filter(|e| e["outcome"] == "refused" && e["action"] != "ban").count();
    assert_eq!(refused_ops, 2 + 1, "{operators:?}");

    // Refusals are counted by action and outcome.
    let scrape = node.metrics_text().await;
    assert!(scrape.contains("openchampps_moderation_actions_total{action=\"ban\",outcome=\"refused\"} 5"), "{scrape}");
}

#[tokio::test]
async fn a_moderator_bans_for_a_week_but_cannot_lift_an_admins_ban() {
    let (_cluster, node) = with_admin(&[]).await;
    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    root.add_operator("max", "moderator").await;
    let moderator = Api::signed_in(node.metrics, "max", ADMIN_PASSWORD).await;
    let (by_admin, by_moderator) = (unique_name("a"), unique_name("b"));
    for name in [&by_admin, &by_moderator] {
        node.client().await.signed_up(name).await;
    }
    let ban = |secs: u64| json!({"reason": "slurs", "duration_secs": secs});
    let reply = root
        .call(
            "POST",
            &format!("/admin/v1/players/{by_admin}/ban"),
            Some(json!({"reason": "slurs", "duration_secs": null})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["until"], Value::Null);
    let reply = moderator.call("POST", &format!("/admin/v1/players/{by_moderator}/ban"), Some(ban(7 * 86_400))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["action"], "ban");

    let lift = json!({"reason": "appeal"});
    let reply = moderator.call("DELETE", &format!("/admin/v1/players/{by_admin}/ban"), Some(lift.clone())).await;
    assert_eq!((reply.status, reply.error()), (403, LIFTS_OWN));
    let reply = moderator.call("DELETE", &format!("/admin/v1/players/{by_moderator}/ban"), Some(lift.clone())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let again = moderator.call("DELETE", &format!("/admin/v1/players/{by_moderator}/ban"), Some(lift)).await;
    assert_eq!((again.status, again.error()), (409, "No active ban"));

    let entries = root.audit(&format!("player={by_admin}")).await;
    assert!(entries.iter().any(|e| e["action"] == "unban" && e["outcome"] == "refused" && e["operator"] == "max"));
    let view = root.call("GET", &format!("/admin/v1/players/{by_admin}"), None).await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.body["ban"]["by"], "root");
    assert!(view.body["audit"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn a_players_password_or_token_opens_no_admin_endpoint() {
    let (_cluster, node) = with_admin(&[]).await;
    let name = unique_name("player");
    let token = node.client().await.signed_up(&name).await;
    let api = Api::new(node.metrics);
    assert_eq!(api.login(&name, PASSWORD).await.error(), BAD_CREDENTIALS);
    let as_cookie = Api { cookie: Some(token.clone()), csrf: Some(token.clone()), ..Api::new(node.metrics) };
    let bearer = format!("Bearer {token}");
    for path in ["/admin/v1/session", "/admin/v1/players?q=", "/admin/v1/audit", "/admin/v1/operators"] {
        assert_eq!(as_cookie.call("GET", path, None).await.status, 401, "{path}");
        let (status, _) = http(node.metrics, "GET", path, None, &[("Authorization", &bearer)]).await.unwrap();
        assert_eq!(status, 401, "{path} with a bearer token");
    }
    let kick = as_cookie.call("POST", &format!("/admin/v1/players/{name}/kick"), Some(json!({"reason": "x"}))).await;
    assert_eq!(kick.status, 401);
}

#[tokio::test]
async fn admin_paths_are_never_served_on_the_public_port() {
    let cluster = Cluster::new().await;
    let dir = std::env::temp_dir().join(unique_name("bootstrap"));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("password");
    std::fs::write(&secret, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let bootstrap = [("ADMIN_BOOTSTRAP_NAME", "boss"), ("ADMIN_BOOTSTRAP_PASSWORD_FILE", secret.to_str().unwrap())];
    let node = cluster.node_with(&bootstrap).await;

    // Metrics at 0 from the first scrape.
    let scrape = node.metrics_text().await;
    for line in [
        "openchampps_moderation_actions_total{action=\"ban\",outcome=\"ok\"} 0",
        "openchampps_moderation_actions_total{action=\"revoke-tokens\",outcome=\"refused\"} 0",
        "openchampps_operator_logins_total{outcome=\"ok\"} 0",
        "openchampps_operator_logins_total{outcome=\"throttled\"} 0",
    ] {
        assert!(scrape.contains(line), "{line} missing");
    }

    for (method, path) in [
        ("GET", "/admin/"),
        ("GET", "/admin/app.js"),
        ("GET", "/admin/v1/openapi.json"),
        ("GET", "/admin/v1/session"),
        ("POST", "/admin/v1/login"),
        ("GET", "/admin/v1/audit"),
    ] {
        let body = (method == "POST").then(|| json!({"name": "boss", "password": ADMIN_PASSWORD}).to_string());
        let (status, _) = http(node.public, method, path, body.as_deref(), &[]).await.unwrap();
        assert_eq!(status, 404, "{method} {path} on the public port");
    }

    // The bootstrap admin signs in on the side port; the console is served there.
    let boss = Api::signed_in(node.metrics, "boss", ADMIN_PASSWORD).await;
    assert_eq!(boss.call("GET", "/admin/v1/session", None).await.body["role"], "admin");
    let (status, headers, body) = http_full(node.metrics, "GET", "/admin/", None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<html"));
    let csp = headers.iter().find(|(k, _)| k == "content-security-policy").map(|(_, v)| v.as_str());
    assert_eq!(csp, Some("default-src 'self'"));
    for asset in ["/admin/app.js", "/admin/app.css"] {
        assert_eq!(http(node.metrics, "GET", asset, None, &[]).await.unwrap().0, 200, "{asset}");
    }
    drop(node);

    // A second start with another password file changes nothing: an operator exists.
    std::fs::write(&secret, "another password\n").unwrap();
    let node = cluster.node_with(&bootstrap).await;
    Api::signed_in(node.metrics, "boss", ADMIN_PASSWORD).await;
    drop(node);

    // With ADMIN_ADDR, the admin API is there and not on the metrics port.
    let node = cluster.node_with(&[("ADMIN_ADDR", "127.0.0.1:0")]).await;
    let admin_addr: SocketAddr = {
        let log = node.log();
        let line = log.lines().find(|l| l.contains("listening")).unwrap().to_owned();
        let start = line.find("admin_addr=").unwrap() + "admin_addr=".len();
        line[start..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_ne!(admin_addr, node.metrics);
    assert_eq!(http(node.metrics, "GET", "/admin/", None, &[]).await.unwrap().0, 404);
    assert_eq!(http(node.metrics, "GET", "/metrics", None, &[]).await.unwrap().0, 200);
    assert_eq!(http(admin_addr, "GET", "/metrics", None, &[]).await.unwrap().0, 404);
    assert_eq!(http(admin_addr, "GET", "/admin/", None, &[]).await.unwrap().0, 200);
    assert_eq!(http(node.public, "GET", "/admin/", None, &[]).await.unwrap().0, 404);
    Api::signed_in(admin_addr, "boss", ADMIN_PASSWORD).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn brute_force_is_throttled_without_locking_the_operator_out() {
    let (_cluster, node) = with_admin(&[("TRUSTED_PROXIES", "127.0.0.1/32"), ("LOGIN_FREE_FAILURES", "3")]).await;
    let attacker = Api::from(node.metrics, "203.0.113.9");
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(attacker.login("root", &format!("guess number {i}")).await.status);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let throttled = attacker.login("root", ADMIN_PASSWORD).await;
    assert_eq!((throttled.status, throttled.error()), (429, TOO_MANY));

    // The real operator, from elsewhere, signs in at once.
    let operator = Api::from(node.metrics, "198.51.100.7");
    let reply = operator.login("root", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    let entries = root.audit("operator=root&limit=200").await;
    let from_attacker: Vec<&Value> = entries.iter().filter(|e| e["address"] == "203.0.113.9").collect();
    assert_eq!(from_attacker.len(), 9, "{from_attacker:?}");
    assert!(from_attacker.iter().all(|e| e["action"] == "login" && e["outcome"] == "failed"));
    assert!(entries.iter().any(|e| e["address"] == "198.51.100.7" && e["outcome"] == "ok"));
    let scrape = node.metrics_text().await;
    assert!(scrape.contains("openchampps_operator_logins_total{outcome=\"throttled\"} 6"), "{scrape}");
    assert!(scrape.contains("openchampps_operator_logins_total{outcome=\"failed\"} 3"), "{scrape}");
}

#[tokio::test]
async fn the_per_name_cap_never_locks_out_a_network_that_signed_in_before() {
    let (_cluster, node) =
        with_admin(&[("TRUSTED_PROXIES", "127.0.0.1/32"), ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "4")]).await;
    let office = Api::from(node.metrics, "192.0.2.10");
    assert_eq!(office.login("root", ADMIN_PASSWORD).await.status, 200);
    // A botnet: one guess from each of many networks, under every per-network limit.
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(Api::from(node.metrics, &format!("198.18.{n}.1")).login("root", "botnet guess").await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    let fresh = Api::from(node.metrics, "198.51.100.77").login("root", ADMIN_PASSWORD).await;
    assert_eq!((fresh.status, fresh.error()), (429, TOO_MANY));
    // The network the operator signed in from before still gets in.
    assert_eq!(Api::from(node.metrics, "192.0.2.11").login("root", ADMIN_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn the_audit_log_filters_pages_and_no_endpoint_alters_it() {
    let (cluster, node) = with_admin(&[]).await;
    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    root.add_operator("vic", "viewer").await;
    let viewer = Api::signed_in(node.metrics, "vic", ADMIN_PASSWORD).await;
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    for (player, n) in [(&alice, 3), (&bob, 2)] {
        for i in 0..n {
            let body = json!({"reason": format!("try {i}")});
            viewer.call("POST", &format!("/admin/v1/players/{player}/kick"), Some(body)).await;
        }
    }
    let about_alice = root.audit(&format!("player={}", alice.to_uppercase())).await;
    assert_eq!(about_alice.len(), 3);
    assert!(about_alice.iter().all(|e| e["target"] == alice.as_str() && e["operator"] == "vic"));
    assert_eq!(about_alice[0]["reason"], "try 2", "newest first");
    let by_vic = root.audit("operator=vic").await;
    assert_eq!(by_vic.len(), 1 + 5, "a login and five refusals: {by_vic:?}");
    assert_eq!(root.audit(&format!("operator=vic&player={bob}")).await.len(), 2);

    // Pages of two, newest first, each entry once.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = root.call("GET", &format!("/admin/v1/audit?{query}"), None).await;
        let entries = page.body["entries"].as_array().unwrap();
        seen.extend(entries.iter().map(|e| e["id"].as_i64().unwrap()));
        match page.body["next_before"].as_i64() {
            Some(before) => query = format!("limit=2&before={before}"),
            None => break,
        }
    }
    let all = root.audit("limit=200").await;
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(root.call("GET", "/admin/v1/audit?limit=0", None).await.status, 400);
    assert_eq!(root.call("GET", "/admin/v1/audit?limit=201", None).await.status, 400);
    assert_eq!(root.call("GET", "/admin/v1/audit?before=x", None).await.status, 400);

    // No method or path alters an entry.
    let id = ids[0];
    let change = json!({"outcome": "ok", "reason": "nothing happened"});
    for method in ["PUT", "PATCH", "DELETE", "POST"] {
        let reply = root.call(method, "/admin/v1/audit", Some(change.clone())).await;
        assert_eq!(reply.status, 405, "{method} /admin/v1/audit");
        for path in [format!("/admin/v1/audit/{id}"), format!("/admin/v1/audit?id={id}")] {
            let reply = root.call(method, &path, Some(change.clone())).await;
            assert!(matches!(reply.status, 404 | 405), "{method} {path}: {}", reply.status);
        }
    }
    let after = root.audit("limit=200").await;
    assert_eq!(&after[after.len() - all.len()..], &all[..], "entries changed");
    // Not even the database lets them change.
    let db = cluster.psql().await;
    assert!(db.execute("UPDATE audit_log SET outcome = 'ok'", &[]).await.is_err());
    assert!(db.execute("DELETE FROM audit_log", &[]).await.is_err());
    assert!(db.execute("TRUNCATE audit_log", &[]).await.is_err());
}

#[tokio::test]
async fn the_command_line_acts_and_is_audited_as_the_os_user() {
    let (cluster, node) = with_admin(&[]).await;
    let name = unique_name("griefer");
    node.client().await.signed_up(&name).await;
    let user = os_user();
    // Whatever the action's outcome, the attempt is recorded as the command line's.
    let _ = cli(&cluster, &["ban", &name, "--for", "7d", "--reason", "griefing"], "").await;
    let out = cli(&cluster, &["audit", "--player", &name, "--json"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &entries[0];
    assert_eq!(entry["operator"], format!("cli:{user}"));
    assert_eq!((entry["action"].as_str(), entry["reason"].as_str()), (Some("ban"), Some("griefing")));
    // Operators: set-role, disable, list.
    let out = cli(&cluster, &["operator", "add", "helper", "--role", "viewer"], "short\n").await;
    assert!(!out.status.success(), "a short password is refused");
    let out = cli(&cluster, &["operator", "add", "helper", "--role", "viewer"], "long enough password\n").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(cli(&cluster, &["operator", "set-role", "helper", "--role", "moderator"], "").await.status.success());
    assert!(cli(&cluster, &["operator", "disable", "helper"], "").await.status.success());
    let list = text(&cli(&cluster, &["operator", "list"], "").await.stdout);
    assert!(list.lines().any(|l| l.contains("helper") && l.contains("moderator") && l.contains("disabled")), "{list}");
    assert_eq!(Api::new(node.metrics).login("helper", "long enough password").await.status, 401);
    // A password is never a flag.
    let out = cli(&cluster, &["operator", "add", "x", "--role", "admin", "--password", "flagged-pass"], "").await;
    assert!(!out.status.success());
    let out = cli(&cluster, &["audit", "--operator", &format!("cli:{user}")], "").await;
    let log = text(&out.stdout);
    for action in ["operator-add", "operator-set-role", "operator-disable", "ban"] {
        assert!(log.contains(action), "{action} not in\n{log}");
    }
}

#[tokio::test]
async fn the_command_line_bans_and_shows_the_player() {
    let (cluster, node) = with_admin(&[]).await;
    let name = unique_name("griefer");
    node.client().await.signed_up(&name).await;
    let out = cli(&cluster, &["ban", &name, "--for", "7d", "--reason", "griefing"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&cluster, &["player", &name, "--json"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["ban"]["by"], format!("cli:{}", os_user()));
    assert_eq!(view["audit"][0]["operator"], format!("cli:{}", os_user()));
    assert!(cli(&cluster, &["unban", &name, "--reason", "appeal"], "").await.status.success());
}

/// Every operation of the document is exercised here, and every response checked.
#[tokio::test]
async fn the_api_conforms_to_its_openapi_document() {
    let (_cluster, node) = with_admin(&[]).await;
    let anonymous = Api::new(node.metrics);
    let (status, _, doc) = http_full(node.metrics, "GET", "/admin/v1/openapi.json", None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&doc).unwrap(), *OPENAPI, "the served document is the checked one");
    anonymous.call("GET", "/admin/v1/openapi.json", None).await;
    anonymous.call("POST", "/admin/v1/login", Some(json!({"nope": 1}))).await;
    anonymous.login("root", "wrong password").await;
    let root = Api::signed_in(node.metrics, "root", ADMIN_PASSWORD).await;
    root.add_operator("vic", "viewer").await;
    let viewer = Api::signed_in(node.metrics, "vic", ADMIN_PASSWORD).await;
    let player = unique_name("subject");
    let mut client = node.client().await;
    client.signed_up(&player).await;

    let reason = json!({"reason": "conformance"});
    let every = [
        ("GET", "/admin/v1/session".to_owned(), None),
        ("GET", "/admin/v1/players?q=sub&limit=5".to_owned(), None),
        ("GET", "/admin/v1/players?limit=0".to_owned(), None),
        ("GET", format!("/admin/v1/players/{player}"), None),
        ("GET", "/admin/v1/players/nobody_at_all".to_owned(), None),
        ("POST", format!("/admin/v1/players/{player}/mute"), Some(json!({"reason": "c", "duration_secs": 60}))),
        ("POST", format!("/admin/v1/players/{player}/mute"), Some(json!({"reason": "c"}))),
        ("DELETE", format!("/admin/v1/players/{player}/mute"), Some(reason.clone())),
        ("POST", format!("/admin/v1/players/{player}/reset-name"), Some(reason.clone())),
        ("POST", format!("/admin/v1/players/{player}/kick"), Some(json!({"reason": " "}))),
        ("POST", format!("/admin/v1/players/{player}/ban"), Some(json!({"reason": "c", "duration_secs": 60}))),
        ("DELETE", format!("/admin/v1/players/{player}/ban"), Some(reason.clone())),
        ("POST", "/admin/v1/players/nobody_at_all/revoke-tokens".to_owned(), Some(reason.clone())),
        ("POST", format!("/admin/v1/players/{player}/revoke-tokens"), Some(reason.clone())),
        ("POST", format!("/admin/v1/players/{player}/kick"), Some(reason.clone())),
        ("GET", "/admin/v1/nodes".to_owned(), None),
        ("GET", "/admin/v1/queues".to_owned(), None),
        ("GET", "/admin/v1/audit?limit=3".to_owned(), None),
        ("GET", "/admin/v1/audit?before=nope".to_owned(), None),
        ("GET", "/admin/v1/operators".to_owned(), None),
        (
            "POST",
            "/admin/v1/operators".to_owned(),
            Some(json!({"name": "bad name!", "role": "viewer", "password": ADMIN_PASSWORD})),
        ),
        ("PATCH", "/admin/v1/operators/vic".to_owned(), Some(json!({"role": "moderator"}))),
        ("PATCH", "/admin/v1/operators/vic".to_owned(), Some(json!({"colour": "red"}))),
    ];
    for (method, path, body) in every.iter().cloned() {
        root.call(method, &path, body).await;
    }
    for (method, path, body) in every.iter().cloned() {
        viewer.call(method, &path, body).await;
        anonymous.call(method, &path, None).await;
    }
    viewer.raw("POST", format!("/admin/v1/players/{player}/kick").as_str(), Some(reason.clone()), None).await;
    root.call("POST", "/admin/v1/logout", None).await;

    // Every operation answered, and answered with success at least once (so its
    // success schema was checked against a real body, not only its errors).
    let exercised = EXERCISED.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (template, operations) in OPENAPI["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let seen = |ok: fn(u16) -> bool| exercised.iter().any(|(m, t, s)| m == method && t == template && ok(*s));
            if !seen(|_| true) {
                missing.push(format!("{method} {template}: never exercised"));
            } else if !seen(|s| (200..300).contains(&s)) {
                missing.push(format!("{method} {template}: never succeeded"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
