//! `ALLOCATOR=agones`: one `POST /gameserverallocation` to the Agones allocator
//! service per try (AGONES_ALLOCATOR_URL; mTLS for `https`), in the JSON form that
//! grpc-gateway gives the `AllocationService.Allocate` RPC.
//!
//! The shapes follow Agones' `proto/allocation/allocation.proto` (googleforgames/agones):
//! `AllocationRequest { namespace = 1; gameServerSelectors = 8 (repeated
//! GameServerSelector { map matchLabels = 1 }); metadata = 7 (MetaPatch { map labels = 1;
//! map annotations = 2 }) }` — `requiredGameServerSelector` and `metaPatch` are the
//! deprecated forms, left out — and `AllocationResponse { gameServerName = 2; ports = 3
//! (GameServerStatusPort { name = 1; int32 port = 2 }); address = 4; nodeName = 5;
//! source = 6 }` (newer releases add `addresses` and `metadata`, which are not needed
//! here). Field names are proto3's lowerCamelCase JSON names.
//!
//! The allocator answers gRPC `RESOURCE_EXHAUSTED` (code 8; HTTP 429 through the
//! gateway) when no GameServer is Ready, and `ABORTED` (code 10; HTTP 409) when another
//! allocation won the GameServer it chose (contention): both are
//! [`Failure::Exhausted`], no server this try. Anything else
//! that is not a usable answer, including no answer within AGONES_TIMEOUT_SECS, is
//! [`Failure::Failed`].
//!
//! `AGONES_VIA=kubernetes`: the in-cluster alternative, a `GameServerAllocation`
//! created through the Kubernetes API (`POST {AGONES_KUBERNETES_API}/apis/
//! allocation.agones.dev/v1/namespaces/{AGONES_NAMESPACE}/gameserverallocations`)
//! with the service account's bearer token, re-read from AGONES_KUBERNETES_TOKEN_FILE
//! on each try since projected tokens rotate. Same selector, metadata, client and
//! port choice; only the envelope differs. The shapes follow Agones'
//! `pkg/apis/allocation/v1/gameserverallocation.go` (googleforgames/agones):
//! `GameServerAllocationSpec {
//! Selectors []GameServerSelector "selectors" (an inline metav1.LabelSelector, so
//! "matchLabels"); MetaPatch MetaPatch "metadata" { "labels", "annotations" } }` and
//! `GameServerAllocationStatus { State "state" (Allocated | UnAllocated |
//! Contention); GameServerName "gameServerName"; Ports "ports"; Address "address";
//! NodeName "nodeName"; Source "source" }`. `UnAllocated` (no Ready GameServer) and
//! `Contention` are [`Failure::Exhausted`], as is HTTP 429 (API priority and fairness).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::{Allocate, Failure, Request, Server};
use crate::config::AgonesSettings;
use crate::config::Allocator;

/// Most of an error body quoted in a failure reason.
const QUOTED: usize = 200;
/// Largest answer read: an AllocationResponse is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// gRPC's RESOURCE_EXHAUSTED, as grpc-gateway's error body carries it.
const RESOURCE_EXHAUSTED: i64 = 8;
/// gRPC's ABORTED: the allocator lost the GameServer it chose to contention.
const ABORTED: i64 = 10;

pub struct Agones {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    namespace: String,
    selector: BTreeMap<String, String>,
    port_name: String,
    timeout: Duration,
    /// With AGONES_VIA=kubernetes: the bearer token file; `None`: the allocator service.
    token_file: Option<PathBuf>,
}

impl Agones {
    /// The allocator the AGONES_* settings describe (checked by `Config::validate`,
    /// which built the TLS configuration).
    pub fn new(settings: &AgonesSettings) -> Agones {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match &settings.tls {
            Some(tls) => builder.with_tls_config(tls.clone()).https_only().enable_http1().wrap_connector(http),
            // Plain HTTP: the TLS half is never used, any configuration does.
            None => {
                builder.with_tls_config(crate::tls::unused_client()).https_or_http().enable_http1().wrap_connector(http)
            }
        };
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Agones {
            client,
            endpoint: settings.endpoint.clone(),
            namespace: settings.namespace.clone(),
            selector: settings.selector.clone(),
            port_name: settings.port_name.clone(),
            timeout: settings.timeout,
            token_file: settings.token_file.clone(),
        }
    }

    /// Who answers, in failure reasons.
    fn peer(&self) -> &'static str {
        if self.token_file.is_some() {
            "Kubernetes API"
        } else {
            "Agones allocator"
        }
    }

    /// The request body for one match: an AllocationRequest, or with
    /// AGONES_VIA=kubernetes a GameServerAllocation with the same selector and metadata.
    fn body(&self, request: &Request<'_>) -> Body {
        let players = serde_json::to_string(&request.players).unwrap_or_default();
        let selectors = vec![GameServerSelector { match_labels: self.selector.clone() }];
        let mut annotations = BTreeMap::from([
            ("openchamp/match-id".into(), request.match_id.to_owned()),
            ("openchamp/queue".into(), request.queue.to_owned()),
            ("openchamp/players".into(), players),
        ]);
        // The game server's credential for confirming and ending its match.
        if !request.token.is_empty() {
            annotations.insert("openchamp/match-token".into(), request.token.to_owned());
        }
        let metadata = MetaPatch {
            // A UUID is a valid label value: operators can select a match's server.
            labels: BTreeMap::from([("openchamp/match-id".into(), request.match_id.to_owned())]),
            annotations,
        };
        if self.token_file.is_some() {
            Body::Kubernetes(GameServerAllocation {
                api_version: "allocation.agones.dev/v1",
                kind: "GameServerAllocation",
                spec: GameServerAllocationSpec { selectors, metadata },
            })
        } else {
            Body::Service(AllocationRequest {
                namespace: self.namespace.clone(),
                game_server_selectors: selectors,
                metadata,
            })
        }
    }

    /// One request and its whole answer.
    async fn post(&self, body: Vec<u8>) -> Result<(StatusCode, Bytes), Failure> {
        let mut request = hyper::Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(file) = &self.token_file {
            // Read on each try: a projected token is replaced before it expires.
            let path = file.clone();
            let token = tokio::task::spawn_blocking(move || crate::config::read_token(&path))
                .await
                .map_err(|e| Failure::Failed(format!("token read failed: {e}")))?
                .map_err(Failure::Failed)?;
            let mut value = hyper::header::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Failure::Failed("AGONES_KUBERNETES_TOKEN_FILE: not a usable token".into()))?;
            value.set_sensitive(true);
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Failed(format!("cannot build the allocation request: {e}")))?;
        let peer = self.peer();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Failure::Failed(format!("{peer} unreachable: {}", error_chain(&e))))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Failed(format!("{peer} answer cut off: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    /// A Kubernetes API answer to the GameServerAllocation create (201, or 200).
    fn kubernetes_answer(&self, status: StatusCode, body: &[u8]) -> Result<Server, Failure> {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Exhausted("Kubernetes API throttled the allocation (429)".into()));
        }
        if !status.is_success() {
            // The API server's error body is a metav1.Status, with `message`.
            let why = match serde_json::from_slice::<Status>(body) {
                Ok(s) if !s.message.is_empty() => s.message,
                _ => String::from_utf8_lossy(body).into_owned(),
            };
            return Err(Failure::Failed(format!("Kubernetes API answered {status}: {}", quote(&why))));
        }
        let answer: GameServerAllocationAnswer = serde_json::from_slice(body).map_err(|e| {
            Failure::Failed(format!("Kubernetes API gave no GameServerAllocation: {}", quote(&e.to_string())))
        })?;
        let status = answer.status;
        match status.state.as_str() {
            "Allocated" => self.server(AllocationResponse {
                game_server_name: status.game_server_name,
                ports: status.ports,
                address: status.address,
                node_name: status.node_name,
                source: status.source,
            }),
            "UnAllocated" => Err(Failure::Exhausted("Agones has no GameServer to allocate (UnAllocated)".into())),
            "Contention" => Err(Failure::Exhausted("Agones allocation lost to contention".into())),
            other => Err(Failure::Failed(format!("GameServerAllocation in state {:?}", quote(other)))),
        }
    }
}

#[async_trait]
impl Allocate for Agones {
    fn kind(&self) -> Allocator {
        Allocator::Agones
    }

    async fn allocate(&self, request: &Request<'_>) -> Result<Server, Failure> {
        let body = serde_json::to_vec(&self.body(request)).expect("serializable");
        let (status, body) = tokio::time::timeout(self.timeout, self.post(body)).await.map_err(|_| {
            Failure::Failed(format!("{} did not answer within {} s", self.peer(), self.timeout.as_secs()))
        })??;
        if self.token_file.is_some() {
            return self.kubernetes_answer(status, &body);
        }
        let status_error = serde_json::from_slice::<Status>(&body).ok().filter(|s| s.code != 0);
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::CONFLICT
            || status_error.as_ref().is_some_and(|s| s.code == RESOURCE_EXHAUSTED || s.code == ABORTED)
        {
            let why = status_error.map(|s| quote(&s.message)).filter(|m| !m.is_empty());
            let why = why.map_or_else(|| "Agones has no GameServer to allocate".into(), |m| format!("Agones: {m}"));
            return Err(Failure::Exhausted(why));
        }
        if !status.is_success() {
            let why = match status_error {
                Some(s) => format!("code {}: {}", s.code, s.message),
                None => String::from_utf8_lossy(&body).into_owned(),
            };
            return Err(Failure::Failed(format!("Agones allocator answered {status}: {}", quote(&why))));
        }
        let answer: AllocationResponse = serde_json::from_slice(&body)
            .map_err(|e| Failure::Failed(format!("Agones allocator gave no AllocationResponse: {e}")))?;
        self.server(answer)
    }
}

impl Agones {
    /// Where players go, from an AllocationResponse.
    fn server(&self, answer: AllocationResponse) -> Result<Server, Failure> {
        if answer.game_server_name.is_empty() || answer.address.is_empty() {
            return Err(Failure::Failed("Agones AllocationResponse without gameServerName or address".into()));
        }
        let port = answer
            .ports
            .iter()
            .find(|p| p.name == self.port_name)
            .or_else(|| answer.ports.first())
            .ok_or_else(|| Failure::Failed(format!("GameServer {} has no ports", answer.game_server_name)))?;
        let port = u16::try_from(port.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Failure::Failed(format!("GameServer {} has port {}", answer.game_server_name, port.port)))?;
        tracing::debug!(
            server = %answer.game_server_name,
            node = %answer.node_name,
            source = %answer.source,
            "Agones allocated a GameServer"
        );
        Ok(Server { host: answer.address, port, server_id: answer.game_server_name })
    }
}

/// The first `QUOTED` characters of `text`, on one line.
fn quote(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(QUOTED).collect();
    line.trim().to_owned()
}

/// An error and its causes, which is where hyper's client puts the useful part.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    quote(&text)
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body {
    Service(AllocationRequest),
    Kubernetes(GameServerAllocation),
}

/// A GameServerAllocation as created.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GameServerAllocation {
    api_version: &'static str,
    kind: &'static str,
    spec: GameServerAllocationSpec,
}

/// A GameServerAllocation as the API server answers it: only `status` is needed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GameServerAllocationAnswer {
    status: GameServerAllocationStatus,
}

#[derive(Serialize)]
struct GameServerAllocationSpec {
    selectors: Vec<GameServerSelector>,
    metadata: MetaPatch,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GameServerAllocationStatus {
    state: String,
    game_server_name: String,
    ports: Vec<GameServerStatusPort>,
    address: String,
    node_name: String,
    source: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllocationRequest {
    namespace: String,
    game_server_selectors: Vec<GameServerSelector>,
    metadata: MetaPatch,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GameServerSelector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct MetaPatch {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// grpc-gateway leaves out fields at their zero value: all default.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AllocationResponse {
    game_server_name: String,
    ports: Vec<GameServerStatusPort>,
    address: String,
    node_name: String,
    source: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GameServerStatusPort {
    name: String,
    port: i64,
}

/// grpc-gateway's error body (a `google.rpc.Status`).
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator of these flags, as `Config::validate` checks them (with
    /// AGONES_VIA=kubernetes, a token file that exists while it is checked; these
    /// tests never send a request).
    fn agones(flags: &[&str]) -> Agones {
        let token = std::env::temp_dir().join(format!("ocps-agones-token-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&token, "test-token\n").unwrap();
        let mut args = vec!["--allocator", "agones", "--agones-allocator-url", "http://127.0.0.1:1"];
        args.extend_from_slice(&["--agones-kubernetes-token-file", token.to_str().unwrap()]);
        args.extend_from_slice(flags);
        let settings = crate::config::Config::from_flags(&args).unwrap().validate();
        std::fs::remove_file(&token).unwrap();
        match settings.unwrap().allocator {
            crate::config::AllocatorSettings::Agones(settings) => Agones::new(&settings),
            other => panic!("not agones: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_request_has_the_published_field_names() {
        let a = agones(&["--agones-namespace", "games", "--agones-fleet", "oc", "--agones-selector-labels", "a=b"]);
        let request = Request { match_id: "m-1", queue: "default", players: vec!["al", "bo"], token: "" };
        let body = serde_json::to_value(a.body(&request)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "namespace": "games",
                "gameServerSelectors": [{"matchLabels": {"agones.dev/fleet": "oc", "a": "b"}}],
                "metadata": {
                    "labels": {"openchamp/match-id": "m-1"},
                    "annotations": {
                        "openchamp/match-id": "m-1",
                        "openchamp/queue": "default",
                        "openchamp/players": "[\"al\",\"bo\"]"
                    }
                }
            })
        );
        assert_eq!(a.endpoint.to_string(), "http://127.0.0.1:1/gameserverallocation");
    }

    #[tokio::test]
    async fn the_named_port_or_else_the_first() {
        let answer = |ports: serde_json::Value| -> AllocationResponse {
            serde_json::from_value(serde_json::json!({
                "gameServerName": "gs-1", "address": "10.0.0.9", "ports": ports, "nodeName": "n"
            }))
            .unwrap()
        };
        let a = agones(&[]);
        let two = serde_json::json!([{"name": "query", "port": 7001}, {"name": "default", "port": 7002}]);
        assert_eq!(a.server(answer(two)).unwrap().port, 7002);
        assert_eq!(a.server(answer(serde_json::json!([{"name": "game", "port": 7003}]))).unwrap().port, 7003);
        assert!(matches!(a.server(answer(serde_json::json!([]))), Err(Failure::Failed(_))));
        assert!(matches!(a.server(answer(serde_json::json!([{"port": 70000}]))), Err(Failure::Failed(_))));
    }

    #[tokio::test]
    async fn via_kubernetes_a_game_server_allocation_with_the_same_selector() {
        let a = agones(&[
            "--agones-via",
            "kubernetes",
            "--agones-kubernetes-api",
            "http://127.0.0.1:2/",
            "--agones-namespace",
            "games",
            "--agones-fleet",
            "oc",
        ]);
        let request = Request { match_id: "m-2", queue: "q", players: vec!["al"], token: "t0k" };
        let body = serde_json::to_value(a.body(&request)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "allocation.agones.dev/v1",
                "kind": "GameServerAllocation",
                "spec": {
                    "selectors": [{"matchLabels": {"agones.dev/fleet": "oc"}}],
                    "metadata": {
                        "labels": {"openchamp/match-id": "m-2"},
                        "annotations": {
                            "openchamp/match-id": "m-2",
                            "openchamp/queue": "q",
                            "openchamp/players": "[\"al\"]",
                            "openchamp/match-token": "t0k"
                        }
                    }
                }
            })
        );
        assert_eq!(
            a.endpoint.to_string(),
            "http://127.0.0.1:2/apis/allocation.agones.dev/v1/namespaces/games/gameserverallocations"
        );
    }

    #[tokio::test]
    async fn kubernetes_answers_by_state() {
        let a = agones(&["--agones-via", "kubernetes", "--agones-kubernetes-api", "http://127.0.0.1:2"]);
        let answer = |state: &str| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "allocation.agones.dev/v1", "kind": "GameServerAllocation",
                "status": {"state": state, "gameServerName": "gs-9", "address": "10.0.0.7",
                           "ports": [{"name": "default", "port": 7777}], "nodeName": "n", "source": "local"}
            }))
            .unwrap()
        };
        let server = a.kubernetes_answer(StatusCode::CREATED, &answer("Allocated")).unwrap();
        assert_eq!((server.server_id.as_str(), server.host.as_str(), server.port), ("gs-9", "10.0.0.7", 7777));
        for state in ["UnAllocated", "Contention"] {
            assert!(matches!(a.kubernetes_answer(StatusCode::CREATED, &answer(state)), Err(Failure::Exhausted(_))));
        }
        assert!(matches!(a.kubernetes_answer(StatusCode::TOO_MANY_REQUESTS, b""), Err(Failure::Exhausted(_))));
        let forbidden =
            br#"{"kind":"Status","status":"Failure","message":"gameserverallocations is forbidden","code":403}"#;
        match a.kubernetes_answer(StatusCode::FORBIDDEN, forbidden) {
            Err(Failure::Failed(why)) => assert!(why.contains("403") && why.contains("forbidden"), "{why}"),
            _ => panic!("403 is a failed try"),
        }
        assert!(matches!(a.kubernetes_answer(StatusCode::CREATED, b"<html>"), Err(Failure::Failed(_))));
        assert!(matches!(a.kubernetes_answer(StatusCode::CREATED, &answer("Pending")), Err(Failure::Failed(_))));
    }
}
