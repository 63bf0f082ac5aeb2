//! `/admin/v1/*` (the API of `docs/ADMIN_API.md`, described by `openapi.json`) and
//! `/admin/` (the console's assets), on the side port or ADMIN_ADDR, never on the
//! public port.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::{clear_cookie, csrf_ok, set_cookie, BAD_CSRF};
use super::{Admin, ApiError};
use crate::moderation::{rfc3339, Action, Actor, Role};
use crate::store::admin::{AuditEntry, AuditQuery, OperatorRecord, OperatorSession};

type Body = Full<Bytes>;

/// The OpenAPI 3.1 document of the API.
pub const OPENAPI: &str = include_str!("openapi.json");
const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");
/// The console loads nothing from anywhere but the node.
const CSP: &str = "default-src 'self'";

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the admin router serves `path`.
pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Serves one request to the admin router.
pub async fn serve(admin: Arc<Admin>, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = if !is_admin_path(&path) {
        error(&ApiError::new(404, "Not found"))
    } else {
        route(&admin, peer, req, &path).await
    };
    Ok(response)
}

/// Where a request came from, and whether it came over TLS.
struct Client {
    ip: IpAddr,
    secure: bool,
}

fn client(admin: &Admin, peer: SocketAddr, headers: &HeaderMap) -> Client {
    let config = &admin.config;
    let ip = crate::http::client_ip(peer.ip(), headers, &config.trusted_proxies, config.client_ip_header);
    // The node itself serves no TLS: a trusted proxy that ended TLS says so.
    let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("");
    let secure = config.trusted_proxies.contains(&peer.ip()) && proto.eq_ignore_ascii_case("https");
    Client { ip, secure }
}

async fn route(admin: &Admin, peer: SocketAddr, req: Request<Incoming>, path: &str) -> Response<Body> {
    let method = req.method().clone();
    match (&method, path) {
        (&Method::GET, "/admin") => redirect("/admin/"),
        (&Method::GET, "/admin/") => asset(INDEX_HTML, "text/html; charset=utf-8"),
        (&Method::GET, "/admin/app.js") => asset(APP_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/admin/app.css") => asset(APP_CSS, "text/css; charset=utf-8"),
        (_, "/admin" | "/admin/" | "/admin/app.js" | "/admin/app.css") => not_allowed(),
        (&Method::GET, "/admin/v1/openapi.json") => {
            let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => match path.strip_prefix("/admin/v1/") {
            Some(rest) => api(admin, peer, req, rest).await.unwrap_or_else(|e| error(&e)),
            None => error(&ApiError::new(404, "Not found")),
        },
    }
}

async fn api(admin: &Admin, peer: SocketAddr, req: Request<Incoming>, rest: &str) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let client = client(admin, peer, req.headers());
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = req.uri().query().unwrap_or("").to_owned();
    let known = matches!(
        segments[..],
        ["login" | "logout" | "session" | "players" | "nodes" | "queues" | "audit" | "operators" | "openapi.json"]
            | ["players", _]
            | ["operators", _]
            | ["players", _, "ban" | "mute" | "kick" | "reset-name" | "revoke-tokens"]
    );
    if !known {
        return Err(ApiError::new(404, "Not found"));
    }
    let allowed: &[Method] = match segments[..] {
        ["login" | "logout"] => &[Method::POST],
        ["operators"] => &[Method::GET, Method::POST],
        ["operators", _] => &[Method::PATCH],
        ["players", _, "ban" | "mute"] => &[Method::POST, Method::DELETE],
        ["players", _, _] => &[Method::POST],
        _ => &[Method::GET],
    };
    if !allowed.contains(&method) {
        return Err(ApiError::new(405, "Method not allowed"));
    }
    if segments[..] == ["login"] {
        return login(admin, req, &client).await;
    }
    let (session, hash) = admin.signed_in(req.headers()).await?;
    let actor = Actor { name: session.operator.clone(), role: session.role, address: Some(client.ip) };
    if method != Method::GET && !csrf_ok(&session, req.headers()) {
        let action = match segments[..] {
            ["logout"] => "logout".to_owned(),
            ["operators"] => "operator-add".to_owned(),
            ["operators", _] => "operator-set-role".to_owned(),
            ["players", _, "ban"] if method == Method::DELETE => "unban".to_owned(),
            ["players", _, "mute"] if method == Method::DELETE => "unmute".to_owned(),
            ["players", _, action] => action.to_owned(),
            _ => "unknown".to_owned(),
        };
        let target = match segments[..] {
            ["players", name, _] | ["operators", name] => Some(name.to_owned()),
            _ => None,
        };
        let refused = ApiError::new(403, BAD_CSRF);
        return Err(admin.record_error(&actor, &action, target.as_deref(), None, refused).await);
    }
    match segments[..] {
        ["logout"] => {
            admin.logout(&session, &hash, client.ip).await?;
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            set_header(&mut response, SET_COOKIE, &clear_cookie(client.secure));
            Ok(response)
        }
        ["session"] => Ok(json_ok(session_json(&session))),
        ["players"] => {
            let q = param(&query, "q").unwrap_or_default();
            let limit = limit_param(&query, 20, 100)?;
            let players = admin.moderation.players(&q, limit).await?;
            Ok(json_ok(json!({ "players": players })))
        }
        ["players", name] => {
            let view = admin.moderation.player(name).await?;
            let query = AuditQuery { player: Some(view.account.username.clone()), limit: 50, ..Default::default() };
            let entries = admin.audit.entries(&query).await?;
            let mut body = serde_json::to_value(&view).unwrap_or(Value::Null);
            body["audit"] = entries.iter().map(entry_json).collect();
            Ok(json_ok(body))
        }
        ["players", name, what] => {
            let body = read_json(req).await;
            let action = action_of(&method, what, &body);
            let reason = body.as_ref().ok().and_then(|b| b.get("reason")).and_then(Value::as_str).unwrap_or("");
            let action = match action {
                Ok(action) => action,
                Err(e) => {
                    // Recorded too: a malformed request is a failed one.
                    let action = match (&method, what) {
                        (&Method::DELETE, "ban") => "unban",
                        (&Method::DELETE, "mute") => "unmute",
                        (_, what) => what,
                    };
                    return Err(admin.record_error(&actor, action, Some(name), Some(reason), e).await);
                }
            };
            let acted = admin.act(&actor, name, action, reason).await?;
            Ok(json_ok(serde_json::to_value(&acted).unwrap_or(Value::Null)))
        }
        // Every role reads players, nodes, queues and the audit log.
        ["nodes"] => Ok(json_ok(json!({ "nodes": admin.moderation.nodes().await? }))),
        ["queues"] => Ok(json_ok(json!({ "queues": admin.moderation.queues().await? }))),
        ["audit"] => {
            let limit = limit_param(&query, 50, 200)?;
            let before = match param(&query, "before") {
                Some(b) if !b.is_empty() => {
                    Some(b.parse::<i64>().map_err(|_| ApiError::new(400, "before must be an entry id"))?)
                }
                _ => None,
            };
            let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
            let query = AuditQuery {
                player: nonempty(param(&query, "player")),
                operator: nonempty(param(&query, "operator")),
                before,
                limit,
            };
            let entries = admin.audit.entries(&query).await?;
            let next_before = (entries.len() == limit as usize).then(|| entries.last().map(|e| e.id)).flatten();
            Ok(json_ok(json!({
                "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
                "next_before": next_before,
            })))
        }
        ["operators"] if method == Method::GET => {
            super::require_admin(&actor)?;
            let all = admin.operators.list_operators().await?;
            Ok(json_ok(json!({ "operators": all.iter().map(operator_json).collect::<Vec<_>>() })))
        }
        ["operators"] => {
            #[derive(Deserialize)]
            struct NewOperator {
                name: String,
                role: Role,
                password: String,
            }
            let body = read_json(req).await;
            let parsed = body.and_then(|b| {
                serde_json::from_value::<NewOperator>(b).map_err(|_| ApiError::new(400, "Invalid request body"))
            });
            let new = match parsed {
                Ok(new) => new,
                Err(e) => {
                    // Refused by role before the body counts; else a failed request.
                    let e = super::require_admin(&actor).err().unwrap_or(e);
                    return Err(admin.record_error(&actor, "operator-add", None, None, e).await);
                }
            };
            let created = admin.add_operator(&actor, &new.name, new.role, &new.password).await?;
            let mut response = json_ok(operator_json(&created));
            *response.status_mut() = StatusCode::CREATED;
            Ok(response)
        }
        ["operators", name] => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Change {
                role: Option<Role>,
                disabled: Option<bool>,
                password: Option<String>,
            }
            let parsed = read_json(req).await.and_then(|b| {
                serde_json::from_value::<Change>(b).map_err(|_| ApiError::new(400, "Invalid request body"))
            });
            let change = match parsed {
                Ok(change) => change,
                Err(e) => {
                    let e = super::require_admin(&actor).err().unwrap_or(e);
                    return Err(admin.record_error(&actor, "operator-set-role", Some(name), None, e).await);
                }
            };
            let updated =
                admin.update_operator(&actor, name, change.role, change.disabled, change.password.as_deref()).await?;
            Ok(json_ok(operator_json(&updated)))
        }
        _ => Err(ApiError::new(404, "Not found")),
    }
}

async fn login(admin: &Admin, req: Request<Incoming>, client: &Client) -> Result<Response<Body>, ApiError> {
    #[derive(Deserialize)]
    struct Credentials {
        name: String,
        password: String,
    }
    let body = read_json(req).await?;
    let credentials: Credentials =
        serde_json::from_value(body).map_err(|_| ApiError::new(400, "Invalid request body"))?;
    let signed_in = admin.login(&credentials.name, &credentials.password, client.ip).await?;
    let mut response = json_ok(session_json(&signed_in.session));
    set_header(&mut response, SET_COOKIE, &set_cookie(&signed_in.token, client.secure));
    Ok(response)
}

/// The action a request asks for, from its method, path and body.
fn action_of(method: &Method, what: &str, body: &Result<Value, ApiError>) -> Result<Action, ApiError> {
    let body = body.as_ref().map_err(Clone::clone)?;
    if !body.is_object() {
        return Err(ApiError::new(400, "Invalid request body"));
    }
    let duration = |required: bool| -> Result<Option<u64>, ApiError> {
        let bad = || ApiError::new(400, "duration_secs must be a positive whole number of seconds");
        match body.get("duration_secs") {
            None | Some(Value::Null) if !required => Ok(None),
            Some(v) => v.as_u64().filter(|s| *s > 0).map(Some).ok_or_else(bad),
            None => Err(bad()),
        }
    };
    Ok(match (method, what) {
        (&Method::POST, "ban") => Action::Ban { secs: duration(false)? },
        (&Method::DELETE, "ban") => Action::Unban,
        (&Method::POST, "mute") => Action::Mute { secs: duration(true)?.unwrap_or_default() },
        (&Method::DELETE, "mute") => Action::Unmute,
        (&Method::POST, "kick") => Action::Kick,
        (&Method::POST, "reset-name") => Action::ResetName,
        (&Method::POST, "revoke-tokens") => Action::RevokeTokens,
        _ => return Err(ApiError::new(405, "Method not allowed")),
    })
}

/// The request's body as JSON (`{}` when empty), or 400.
async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bad = || ApiError::new(400, "Invalid request body");
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let Ok(Ok(body)) = tokio::time::timeout(BODY_TIMEOUT, body).await else { return Err(bad()) };
    let body = body.to_bytes();
    if body.trim_ascii().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|_| bad())
}

pub fn session_json(session: &OperatorSession) -> Value {
    json!({"operator": session.operator, "role": session.role, "csrf": session.csrf})
}

pub fn operator_json(o: &OperatorRecord) -> Value {
    json!({"name": o.name, "role": o.role, "disabled": o.disabled, "created": rfc3339(o.created_at)})
}

pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "operator": e.operator,
        "action": e.action,
        "target": e.target,
        "reason": e.reason,
        "outcome": e.outcome.as_str(),
        "address": e.address,
    })
}

/// A query parameter, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

fn limit_param(query: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match param(query, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::new(400, format!("limit must be 1 to {max}"))),
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn set_header(response: &mut Response<Body>, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn json_ok(body: Value) -> Response<Body> {
    json_response(StatusCode::OK, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &json!({ "error": e.message }))
}

fn not_allowed() -> Response<Body> {
    error(&ApiError::new(405, "Method not allowed"))
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(hyper::header::LOCATION, HeaderValue::from_static(to));
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(hyper::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(hyper::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(param("q=b%C3%B6b&limit=5", "q").as_deref(), Some("böb"));
        assert_eq!(param("q=a+b", "q").as_deref(), Some("a b"));
        assert_eq!(param("limit=5", "q"), None);
        assert_eq!(limit_param("limit=0", 20, 100).unwrap_err().status, 400);
        assert_eq!(limit_param("", 20, 100).unwrap(), 20);
    }
}
