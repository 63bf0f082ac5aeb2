//! `ALLOCATOR=agones` on real nodes, against a small fake of the Agones allocator
//! service inside the test process: `POST /gameserverallocation` answered with the
//! shapes of Agones' allocation.proto (AllocationResponse, or grpc-gateway's error
//! body with code 8 / HTTP 429 when no GameServer is free), over HTTP or mTLS; and,
//! for `AGONES_VIA=kubernetes`, the Kubernetes API's `gameserverallocations` create
//! (a GameServerAllocation answered with its `status`).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::stores::{TempDir, TestPki};
use crate::common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const KEYS: (&str, &str) = ("MATCH_TICKET_KEYS", "k1:0123456789abcdef0123456789abcdef");
/// Where every fake GameServer is.
const ADDRESS: &str = "192.0.2.50";

/// What the fake answers one call with.
#[derive(Clone, Debug)]
enum Answer {
    /// 200 with an AllocationResponse for this GameServer and game port.
    Allocated(String, u16),
    /// 429 with grpc-gateway's RESOURCE_EXHAUSTED body.
    Exhausted,
    /// 409 with grpc-gateway's ABORTED body: another allocation won the GameServer.
    Contention,
    /// The inner answer, after a pause.
    After(Duration, Box<Answer>),
    /// 201 with a GameServerAllocation (the Kubernetes API) in `status.state` Allocated,
    /// for this GameServer and game port.
    KubeAllocated(String, u16),
    /// 201 with a GameServerAllocation in `status.state` UnAllocated.
    KubeUnAllocated,
}

type Behaviour = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

/// One request the fake got.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: Value,
}

type Requests = Arc<Mutex<Vec<Seen>>>;

/// The fake allocator service: answers call `n` (from 0) with `behaviour(n)`, and
/// keeps every request it got.
struct Fake {
    addr: SocketAddr,
    requests: Requests,
    /// TLS handshakes the fake refused (mTLS only).
    refused: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (seen, refusals) = (requests.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (behaviour, seen, refusals, tls) = (behaviour.clone(), seen.clone(), refusals.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => match tokio_rustls::TlsAcceptor::from(tls).accept(stream).await {
                            Ok(stream) => serve(TokioIo::new(stream), behaviour, seen).await,
                            Err(_) => *refusals.lock().unwrap() += 1,
                        },
                        None => serve(TokioIo::new(stream), behaviour, seen).await,
                    }
                });
            }
        });
        Fake { addr, requests, refused, task }
    }

    async fn plain(behaviour: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Fake {
        Fake::start(Arc::new(behaviour), None).await
    }

    fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests.lock().unwrap().iter().map(|r| r.body.clone()).collect()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve<I>(io: I, behaviour: Behaviour, seen: Requests)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (behaviour, seen) = (behaviour.clone(), seen.clone());
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let content_type =
                request.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let authorization =
                request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let call = {
                let mut seen = seen.lock().unwrap();
                seen.push(Seen { method, path, content_type, authorization, body });
                seen.len() - 1
            };
            let mut answer = behaviour(call);
            while let Answer::After(pause, inner) = answer {
                tokio::time::sleep(pause).await;
                answer = *inner;
            }
            let (status, body) = match answer {
                Answer::Allocated(name, port) => (
                    200,
                    // An AllocationResponse as the allocator's gateway prints it.
                    json!({
                        "gameServerName": name,
                        "ports": [{"name": "query", "port": port + 1000}, {"name": "default", "port": port}],
                        "address": ADDRESS,
                        "addresses": [{"type": "InternalIP", "address": ADDRESS}],
                        "nodeName": "gke-node-1",
                        "source": "local",
                        "metadata": {"labels": {"agones.dev/fleet": "openchamp"}, "annotations": {}}
                    }),
                ),
                Answer::Exhausted => {
                    (429, json!({"code": 8, "message": "there is no available GameServer to allocate", "details": []}))
                }
                Answer::Contention => (
                    409,
                    json!({"code": 10, "message": "error updating allocated gameserver: conflict", "details": []}),
                ),
                Answer::KubeAllocated(name, port) => (
                    201,
                    // What the API server gives back: the object, with Agones' status.
                    json!({
                        "apiVersion": "allocation.agones.dev/v1",
                        "kind": "GameServerAllocation",
                        "metadata": {"name": name, "namespace": "games", "creationTimestamp": null},
                        "spec": {"selectors": [], "scheduling": "Packed", "metadata": {}},
                        "status": {
                            "state": "Allocated",
                            "gameServerName": name,
                            "ports": [{"name": "query", "port": port + 1000}, {"name": "default", "port": port}],
                            "address": ADDRESS,
                            "nodeName": "gke-node-1",
                            "source": "local"
                        }
                    }),
                ),
                Answer::KubeUnAllocated => (
                    201,
                    json!({
                        "apiVersion": "allocation.agones.dev/v1",
                        "kind": "GameServerAllocation",
                        "metadata": {"creationTimestamp": null},
                        "spec": {"selectors": [], "scheduling": "Packed", "metadata": {}},
                        "status": {"state": "UnAllocated", "gameServerName": "", "source": ""}
                    }),
                ),
                Answer::After(..) => unreachable!(),
            };
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
}

/// `n` signed-in players on `node`, with their usernames.
async fn sign_up(node: &Endpoint, n: usize) -> Vec<(String, Client)> {
    let mut players = Vec::new();
    for i in 0..n {
        let name = unique_name(&format!("ag{i}"));
        let mut client = node.client().await;
        client.signed_up(&name).await;
        players.push((name, client));
    }
    players
}

async fn queue_all(players: &mut [(String, Client)]) {
    for (_, p) in players.iter_mut() {
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
}

/// Every player's next `match_found` names the game server `container` at `port`.
async fn all_seated_on(players: &mut [(String, Client)], container: &str, port: u64) {
    for (_, p) in players.iter_mut() {
        let found = p.next_of("match_found").await;
        assert_eq!((&found["payload"]["containerID"], &found["payload"]["port"]), (&json!(container), &json!(port)));
    }
}

/// The `openchampps_allocations_total` line for the agones allocator and `result`.
fn allocations(scrape: &str, result: &str) -> Option<u64> {
    let prefix = format!(r#"openchampps_allocations_total{{allocator="agones",result="{result}"}} "#);
    scrape.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap())
}

fn match_error() -> Value {
    json!({"type": "match_error", "payload": {"message": "Failed to start game server"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_gets_the_game_server_agones_allocates() {
    let fake = Fake::plain(|_| Answer::Allocated("openchamp-x7k2p-9fz4q".into(), 7654)).await;
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = cluster
        .node_with(&[
            KEYS,
            ("ALLOCATOR", "agones"),
            ("AGONES_ALLOCATOR_URL", &url),
            ("AGONES_NAMESPACE", "games"),
            ("AGONES_FLEET", "openchamp"),
            ("AGONES_SELECTOR_LABELS", "region=eu, tier=ranked"),
        ])
        .await;
    let scrape = node.metrics_text().await;
    assert_eq!(allocations(&scrape, "ok"), Some(0), "series registered at 0:\n{scrape}");

    let (names, match_id) = matched(&node, "openchamp-x7k2p-9fz4q", 7654).await;

    // One AllocationRequest, with the published field names.
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let Seen { method, path, content_type, authorization, body } = &requests[0];
    assert_eq!(authorization, "", "no bearer token to the allocator service");
    assert_eq!(
        (method.as_str(), path.as_str(), content_type.as_str()),
        ("POST", "/gameserverallocation", "application/json")
    );
    assert_eq!(body["namespace"], "games");
    assert_eq!(
        body["gameServerSelectors"],
        json!([{"matchLabels": {"agones.dev/fleet": "openchamp", "region": "eu", "tier": "ranked"}}])
    );
    let annotations = &body["metadata"]["annotations"];
    assert_eq!(annotations["openchamp/match-id"], match_id.as_str());
    assert_eq!(annotations["openchamp/queue"], "default");
    let listed: Value = serde_json::from_str(annotations["openchamp/players"].as_str().unwrap()).unwrap();
    assert_eq!(listed, json!(names));
    assert_eq!(body["metadata"]["labels"]["openchamp/match-id"], match_id.as_str());

    let scrape = node.metrics_text().await;
    assert_eq!(allocations(&scrape, "ok"), Some(1), "{scrape}");
    assert_eq!(allocations(&scrape, "exhausted"), Some(0));
    assert_eq!(allocations(&scrape, "failed"), Some(0));
}

/// Two players queue on `node` and both get `match_found` for game server `name`
/// at ADDRESS:`port` (the port named `default`); returns their names and the match id.
async fn matched(node: &NodeProc, name: &str, port: u16) -> (Vec<String>, String) {
    let mut players = sign_up(node, 2).await;
    queue_all(&mut players).await;
    let names: Vec<String> = players.iter().map(|(n, _)| n.clone()).collect();
    let mut match_id = String::new();
    for (_, p) in &mut players {
        let found = p.next_of("match_found").await;
        assert_eq!(found["payload"]["host"], ADDRESS);
        assert_eq!(found["payload"]["port"], port, "the port named `default`");
        assert_eq!(found["payload"]["containerID"], name);
        assert_eq!(found["payload"]["players"], json!(names));
        match_id = found["payload"]["match_id"].as_str().unwrap().to_owned();
    }
    (names, match_id)
}

/// Two players queue on `node` (ALLOCATION_ATTEMPTS=3) and both get `match_error`
/// after exactly three exhausted tries, and no more; returns them.
async fn gives_up_after_three_exhausted_tries(node: &NodeProc, fake: &Fake) -> Vec<(String, Client)> {
    let mut players = sign_up(node, 2).await;
    queue_all(&mut players).await;
    for (_, p) in &mut players {
        assert_eq!(p.next_of("match_error").await, match_error());
    }
    // Exactly ALLOCATION_ATTEMPTS calls, and no more after the match gave up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls(), 3);
    let scrape = node.metrics_text().await;
    assert_eq!(allocations(&scrape, "exhausted"), Some(3), "{scrape}");
    assert_eq!(allocations(&scrape, "failed"), Some(0), "{scrape}");
    players
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_game_server_gives_match_error_after_every_attempt() {
    let fake = Fake::plain(|_| Answer::Exhausted).await;
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = cluster
        .node_with(&[KEYS, ("ALLOCATOR", "agones"), ("AGONES_ALLOCATOR_URL", &url), ("ALLOCATION_ATTEMPTS", "3")])
        .await;
    let mut players = gives_up_after_three_exhausted_tries(&node, &fake).await;
    // The players are free to queue again.
    for (_, p) in &mut players {
        assert_eq!(p.request(json!({"type": "queue_status"})).await["payload"], json!({"queued": false}));
        assert_eq!(p.request(json!({"type": "join_queue"})).await, json!({"type": "queued"}));
    }
}

/// Another allocation won the GameServer the allocator chose (409, gRPC ABORTED): the
/// try counts as no server free, and the next try gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_is_retried() {
    let fake =
        Fake::plain(|call| if call == 0 { Answer::Contention } else { Answer::Allocated("gs-second".into(), 7100) })
            .await;
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = cluster.node_with(&[KEYS, ("ALLOCATOR", "agones"), ("AGONES_ALLOCATOR_URL", &url)]).await;
    let mut players = sign_up(&node, 2).await;
    queue_all(&mut players).await;
    all_seated_on(&mut players, "gs-second", 7100).await;
    assert_eq!(fake.calls(), 2);
    let scrape = node.metrics_text().await;
    assert_eq!((allocations(&scrape, "exhausted"), allocations(&scrape, "ok")), (Some(1), Some(1)), "{scrape}");
}

/// Matches formed at once on two nodes, against a fleet of three GameServers that
/// Agones hands out once each: three matches get three different servers, and the
/// fourth gets `match_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_matches_never_share_a_game_server() {
    let fleet = Arc::new(Mutex::new(VecDeque::from([
        ("gs-a".to_owned(), 7001),
        ("gs-b".to_owned(), 7002),
        ("gs-c".to_owned(), 7003),
    ])));
    let fake = Fake::plain(move |_| match fleet.lock().unwrap().pop_front() {
        Some((name, port)) => Answer::After(Duration::from_millis(100), Box::new(Answer::Allocated(name, port))),
        None => Answer::Exhausted,
    })
    .await;
    let cluster = Cluster::new().await;
    let url = fake.url();
    let settings =
        [KEYS, ("ALLOCATOR", "agones"), ("AGONES_ALLOCATOR_URL", url.as_str()), ("ALLOCATION_ATTEMPTS", "2")];
    let (a, b) = (cluster.node_with(&settings).await, cluster.node_with(&settings).await);
    let mut everyone = sign_up(&a, 4).await;
    everyone.extend(sign_up(&b, 4).await);
    for (_, p) in &mut everyone {
        p.send(json!({"type": "join_queue"})).await;
    }
    let mut servers: std::collections::HashMap<String, HashSet<String>> = std::collections::HashMap::new();
    let mut errors = 0;
    for (_, p) in &mut everyone {
        loop {
            let frame = p.next_text(Duration::from_secs(15)).await.expect("a match result");
            match frame["type"].as_str().unwrap() {
                "match_found" => {
                    let id = frame["payload"]["match_id"].as_str().unwrap().to_owned();
                    servers.entry(id).or_default().insert(frame["payload"]["containerID"].as_str().unwrap().to_owned());
                    break;
                }
                "match_error" => {
                    errors += 1;
                    break;
                }
                _ => continue,
            }
        }
    }
    assert_eq!(servers.len(), 3, "three matches started: {servers:?}");
    assert!(servers.values().all(|s| s.len() == 1), "one server per match: {servers:?}");
    let distinct: HashSet<&String> = servers.values().flatten().collect();
    assert_eq!(distinct.len(), 3, "no server twice: {servers:?}");
    assert_eq!(errors, 2, "the two players of the fourth match");
    assert_eq!(fake.calls(), 3 + 2, "three allocations, then two tries for the fourth match");
}

/// An allocator slower than AGONES_TIMEOUT_SECS: that try fails, the next succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_allocator_is_a_failed_try() {
    let fake = Fake::plain(|call| {
        let server = Answer::Allocated(format!("gs-{call}"), 7200 + call as u16);
        if call == 0 {
            Answer::After(Duration::from_secs(4), Box::new(server))
        } else {
            server
        }
    })
    .await;
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = cluster
        .node_with(&[KEYS, ("ALLOCATOR", "agones"), ("AGONES_ALLOCATOR_URL", &url), ("AGONES_TIMEOUT_SECS", "1")])
        .await;
    let mut players = sign_up(&node, 2).await;
    queue_all(&mut players).await;
    let started = std::time::Instant::now();
    // The second try's server.
    all_seated_on(&mut players, "gs-1", 7201).await;
    assert!(started.elapsed() < Duration::from_secs(4), "did not wait for the slow answer");
    assert_eq!(fake.calls(), 2);
    let scrape = node.metrics_text().await;
    assert_eq!((allocations(&scrape, "failed"), allocations(&scrape, "ok")), (Some(1), Some(1)), "{scrape}");
    assert!(node.log().contains("did not answer within 1 s"), "the reason is logged");
}

// AGONES_VIA=kubernetes -------------------------------------------------------------

const KUBE_PATH: &str = "/apis/allocation.agones.dev/v1/namespaces/games/gameserverallocations";

/// A service account token file holding `token`, in a directory removed with the
/// returned guard.
fn token_file(token: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("token");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    (dir, file)
}

/// A node allocating through the Kubernetes API at `url`, in namespace `games`, with
/// the service account token in `token`.
async fn kube_node(cluster: &Cluster, url: &str, token: &Path, extra: &[(&str, &str)]) -> NodeProc {
    let mut settings = vec![
        KEYS,
        ("ALLOCATOR", "agones"),
        ("AGONES_VIA", "kubernetes"),
        ("AGONES_KUBERNETES_API", url),
        ("AGONES_KUBERNETES_TOKEN_FILE", path(token)),
        ("AGONES_NAMESPACE", "games"),
    ];
    settings.extend_from_slice(extra);
    cluster.node_with(&settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_kubernetes_a_game_server_allocation_with_the_bearer_token() {
    let fake = Fake::plain(|_| Answer::KubeAllocated("openchamp-k8s-1".into(), 7655)).await;
    let (_dir, token) = token_file("eyJhbGciOi.first");
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node =
        kube_node(&cluster, &url, &token, &[("AGONES_FLEET", "openchamp"), ("AGONES_SELECTOR_LABELS", "region=eu")])
            .await;
    let (names, match_id) = matched(&node, "openchamp-k8s-1", 7655).await;

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let Seen { method, path, content_type, authorization, body } = &requests[0];
    assert_eq!((method.as_str(), path.as_str(), content_type.as_str()), ("POST", KUBE_PATH, "application/json"));
    assert_eq!(authorization, "Bearer eyJhbGciOi.first");
    assert_eq!(body["apiVersion"], "allocation.agones.dev/v1");
    assert_eq!(body["kind"], "GameServerAllocation");
    assert_eq!(body["spec"]["selectors"], json!([{"matchLabels": {"agones.dev/fleet": "openchamp", "region": "eu"}}]));
    let metadata = &body["spec"]["metadata"];
    assert_eq!(metadata["labels"], json!({"openchamp/match-id": match_id}));
    assert_eq!(metadata["annotations"]["openchamp/match-id"], match_id.as_str());
    assert_eq!(metadata["annotations"]["openchamp/queue"], "default");
    let listed: Value = serde_json::from_str(metadata["annotations"]["openchamp/players"].as_str().unwrap()).unwrap();
    assert_eq!(listed, json!(names));
    assert!(body.get("namespace").is_none(), "the namespace is in the path");

    let scrape = node.metrics_text().await;
    assert_eq!(allocations(&scrape, "ok"), Some(1), "{scrape}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_kubernetes_unallocated_every_time_gives_match_error() {
    let fake = Fake::plain(|_| Answer::KubeUnAllocated).await;
    let (_dir, token) = token_file("tok");
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = kube_node(&cluster, &url, &token, &[("ALLOCATION_ATTEMPTS", "3")]).await;
    gives_up_after_three_exhausted_tries(&node, &fake).await;
}

/// Projected service account tokens rotate: the file is read again for each call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_kubernetes_a_rotated_token_is_used_on_the_next_call() {
    let fake = Fake::plain(|call| Answer::KubeAllocated(format!("gs-k{call}"), 7400 + call as u16)).await;
    let (_dir, token) = token_file("token-before");
    let cluster = Cluster::new().await;
    let url = fake.url();
    let node = kube_node(&cluster, &url, &token, &[]).await;
    for (round, expected) in [(0, "gs-k0"), (1, "gs-k1")] {
        if round == 1 {
            // As the kubelet does it: a new file moved into place.
            let next = token.with_extension("new");
            std::fs::write(&next, "token-after\n").unwrap();
            std::fs::rename(&next, &token).unwrap();
        }
        let mut players = sign_up(&node, 2).await;
        queue_all(&mut players).await;
        for (_, p) in &mut players {
            assert_eq!(p.next_of("match_found").await["payload"]["containerID"], expected);
        }
    }
    let seen: Vec<String> = fake.requests.lock().unwrap().iter().map(|r| r.authorization.clone()).collect();
    assert_eq!(seen, ["Bearer token-before", "Bearer token-after"]);
    assert!(!node.log().contains("token-after"), "the token is never logged");
}

// mTLS ----------------------------------------------------------------------------

/// A server configuration with `pki`'s server certificate that, with
/// `client_certs`, requires a client certificate from `pki`'s CA (the allocator
/// service's mTLS); without, asks for none (the Kubernetes API, where the bearer
/// token authenticates).
fn server_config(pki: &TestPki, client_certs: bool) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = if client_certs {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(pki.ca()).unwrap()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain =
        rustls::pki_types::CertificateDer::pem_file_iter(pki.cert()).unwrap().collect::<Result<_, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.key()).unwrap();
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// AGONES_VIA=kubernetes over https: the API server's certificate must chain to
/// AGONES_CA_FILE; the bearer token goes over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_kubernetes_over_https_trusting_the_ca_file() {
    let pki = TestPki::generate();
    let fake =
        Fake::start(Arc::new(|_| Answer::KubeAllocated("gs-k8s-tls".into(), 7500)), Some(server_config(&pki, false)))
            .await;
    let (_dir, token) = token_file("tls-token");
    let api = format!("https://{}", fake.addr);
    let cluster = Cluster::new().await;
    let node = kube_node(&cluster, &api, &token, &[("AGONES_CA_FILE", path(&pki.ca()))]).await;
    let mut players = sign_up(&node, 2).await;
    queue_all(&mut players).await;
    all_seated_on(&mut players, "gs-k8s-tls", 7500).await;
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].path.as_str(), requests[0].authorization.as_str()), (KUBE_PATH, "Bearer tls-token"));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A node allocating from the allocator service at `url` over mTLS: client
/// certificate and key `(cert, key)`, trusting the CA in `ca`.
async fn mtls_node(
    cluster: &Cluster,
    url: &str,
    (cert, key): (&Path, &Path),
    ca: &Path,
    extra: &[(&str, &str)],
) -> NodeProc {
    let mut settings = vec![
        KEYS,
        ("ALLOCATOR", "agones"),
        ("AGONES_ALLOCATOR_URL", url),
        ("AGONES_CLIENT_CERT", path(cert)),
        ("AGONES_CLIENT_KEY", path(key)),
        ("AGONES_CA_FILE", path(ca)),
    ];
    settings.extend_from_slice(extra);
    cluster.node_with(&settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_the_right_client_certificate_and_only_with_it() {
    let pki = TestPki::generate();
    let fake =
        Fake::start(Arc::new(|_| Answer::Allocated("gs-tls".into(), 7300)), Some(server_config(&pki, true))).await;
    let (cert, key) = pki.issue("openchampps", &["openchampps"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let url = format!("https://{}", fake.addr);
    let cluster = Cluster::new().await;
    let node = mtls_node(&cluster, &url, (&cert, &key), &pki.ca(), &[]).await;
    let mut players = sign_up(&node, 2).await;
    queue_all(&mut players).await;
    all_seated_on(&mut players, "gs-tls", 7300).await;
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.bodies()[0]["namespace"], "default");

    // A client certificate of another CA: the allocator refuses the handshake, and
    // every try fails. (A cluster of its own: on the first one, the first node could
    // form this match.)
    let stranger = TestPki::generate();
    let (cert, key) = stranger.issue("openchampps", &["openchampps"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let elsewhere = Cluster::new().await;
    let outsider = mtls_node(&elsewhere, &url, (&cert, &key), &pki.ca(), &[("ALLOCATION_ATTEMPTS", "2")]).await;
    let mut refused = sign_up(&outsider, 2).await;
    queue_all(&mut refused).await;
    for (_, p) in &mut refused {
        assert_eq!(p.next_of("match_error").await, match_error());
    }
    assert_eq!(fake.calls(), 1, "no request got through");
    assert!(*fake.refused.lock().unwrap() >= 2, "the handshakes were refused");
    let scrape = outsider.metrics_text().await;
    assert_eq!(allocations(&scrape, "failed"), Some(2), "{scrape}");

    // A server certificate the configured CA did not sign: refused by the node.
    let wrong_ca = stranger.ca();
    let (cert, key) = pki.issue("openchampps2", &["openchampps"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    drop(outsider);
    let distrustful = mtls_node(&elsewhere, &url, (&cert, &key), &wrong_ca, &[("ALLOCATION_ATTEMPTS", "1")]).await;
    let mut unsure = sign_up(&distrustful, 2).await;
    queue_all(&mut unsure).await;
    for (_, p) in &mut unsure {
        assert_eq!(p.next_of("match_error").await, match_error());
    }
    assert_eq!(fake.calls(), 1, "no request to an allocator the node does not trust");
}

/// The one-line error a node stops with (exit 2) under `settings`.
fn startup_error(settings: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_openchampps"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .envs(settings.iter().copied())
        .output()
        .expect("run openchampps");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{settings:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn bad_agones_settings_stop_the_node_with_one_line() {
    let pki = TestPki::generate();
    let (cert, key) = pki.issue("node", &["node"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let (other_cert, _) = pki.issue("other", &["other"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let (cert, key, ca, other_cert) = (path(&cert), path(&key), pki.ca(), path(&other_cert).to_owned());
    let ca = path(&ca);
    let https = ("AGONES_ALLOCATOR_URL", "https://agones-allocator.agones-system:443");
    let agones = ("ALLOCATOR", "agones");
    let missing = pki.dir().join("missing.key");
    let not_pem = pki.dir().join("not.pem");
    std::fs::write(&not_pem, "not a key\n").unwrap();
    let kube = ("AGONES_VIA", "kubernetes");
    let token = pki.dir().join("token");
    std::fs::write(&token, "secret-token-value\n").unwrap();
    let empty = pki.dir().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![agones], "ALLOCATOR=agones needs AGONES_ALLOCATOR_URL"),
        (vec![agones, ("AGONES_ALLOCATOR_URL", "ftp://allocator")], "invalid AGONES_ALLOCATOR_URL"),
        (vec![agones, https, ("AGONES_CA_FILE", ca)], "needs AGONES_CLIENT_CERT and AGONES_CLIENT_KEY"),
        (vec![agones, https, ("AGONES_CLIENT_CERT", cert), ("AGONES_CLIENT_KEY", key)], "needs AGONES_CA_FILE"),
        (
            vec![
                agones,
                https,
                ("AGONES_CLIENT_CERT", cert),
                ("AGONES_CLIENT_KEY", path(&missing)),
                ("AGONES_CA_FILE", ca),
            ],
            "AGONES_CLIENT_KEY",
        ),
        (
            vec![
                agones,
                https,
                ("AGONES_CLIENT_CERT", cert),
                ("AGONES_CLIENT_KEY", path(&not_pem)),
                ("AGONES_CA_FILE", ca),
            ],
            "AGONES_CLIENT_KEY",
        ),
        (
            vec![
                agones,
                https,
                ("AGONES_CLIENT_CERT", path(&not_pem)),
                ("AGONES_CLIENT_KEY", key),
                ("AGONES_CA_FILE", ca),
            ],
            "AGONES_CLIENT_CERT",
        ),
        (
            vec![
                agones,
                https,
                ("AGONES_CLIENT_CERT", &other_cert),
                ("AGONES_CLIENT_KEY", key),
                ("AGONES_CA_FILE", ca),
            ],
            "do not make a usable client certificate",
        ),
        (vec![agones, ("AGONES_ALLOCATOR_URL", "http://127.0.0.1:9"), ("AGONES_CLIENT_CERT", cert)], "not https"),
        // AGONES_VIA=kubernetes: no allocator URL needed, but a readable token and CA.
        (
            vec![
                agones,
                kube,
                ("AGONES_KUBERNETES_API", "http://127.0.0.1:9"),
                ("AGONES_KUBERNETES_TOKEN_FILE", path(&missing)),
            ],
            "AGONES_KUBERNETES_TOKEN_FILE",
        ),
        (
            vec![
                agones,
                kube,
                ("AGONES_KUBERNETES_API", "http://127.0.0.1:9"),
                ("AGONES_KUBERNETES_TOKEN_FILE", path(&empty)),
            ],
            "no token",
        ),
        (vec![agones, kube, ("AGONES_KUBERNETES_TOKEN_FILE", path(&token))], "serviceaccount/ca.crt"),
        (
            vec![agones, kube, ("AGONES_KUBERNETES_TOKEN_FILE", path(&token)), ("AGONES_CA_FILE", path(&missing))],
            "AGONES_CA_FILE",
        ),
        (
            vec![
                agones,
                kube,
                ("AGONES_KUBERNETES_TOKEN_FILE", path(&token)),
                ("AGONES_CA_FILE", ca),
                ("AGONES_CLIENT_CERT", cert),
                ("AGONES_CLIENT_KEY", key),
            ],
            "AGONES_VIA=kubernetes does not use them",
        ),
        (
            vec![agones, kube, ("AGONES_KUBERNETES_API", "ftp://x"), ("AGONES_KUBERNETES_TOKEN_FILE", path(&token))],
            "invalid AGONES_KUBERNETES_API",
        ),
    ];
    for (settings, expected) in cases {
        let error = startup_error(&settings);
        assert!(error.contains(expected), "{settings:?}: expected {expected:?} in {error:?}");
        assert!(!error.contains("PRIVATE KEY"), "no key material in the error: {error}");
        assert!(!error.contains("secret-token-value"), "no token in the error: {error}");
    }
}

#[test]
fn help_lists_the_agones_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_openchampps")).env_clear().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in [
        "AGONES_ALLOCATOR_URL",
        "AGONES_NAMESPACE",
        "AGONES_FLEET",
        "AGONES_SELECTOR_LABELS",
        "AGONES_CLIENT_CERT",
        "AGONES_CLIENT_KEY",
        "AGONES_CA_FILE",
        "AGONES_PORT_NAME",
        "AGONES_TIMEOUT_SECS",
        "AGONES_VIA",
        "AGONES_KUBERNETES_API",
        "AGONES_KUBERNETES_TOKEN_FILE",
    ] {
        assert!(help.contains(setting), "{setting} missing from --help");
    }
    assert!(help.contains("agones"), "ALLOCATOR lists agones");
}
