//! Set-up (accounts, connections) and the per-connection loop of each mode.
//!
//! Every loop is closed: a connection sends one request, waits for its reply, and
//! only then sends the next, so the offered load adapts to the node's speed and the
//! latency is what one client sees. An op counts when it started after the warm-up
//! and finished before the end of the measured window.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use super::args::{BenchArgs, Mode};
use super::client::{login_message, token_auth_message, Client, Failure, Target};
use super::stats::{Live, Recorder};
use crate::handlers::Request;
use crate::protocol::Reply;

/// How long receivers keep listening after the window, for chat still in flight.
const CHAT_GRACE: Duration = Duration::from_millis(250);
/// Pause before reopening a connection that failed, so a dead node is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

pub struct Account {
    pub name: String,
    pub token: String,
}

/// Everything the connection tasks share.
pub struct Plan {
    pub args: BenchArgs,
    pub targets: Vec<Target>,
    pub binds: Vec<IpAddr>,
    pub accounts: Vec<Account>,
    pub live: Arc<Live>,
}

/// The measured window: ops starting at or after `measure_from` and finishing by
/// `until` count.
#[derive(Clone, Copy)]
pub struct Window {
    /// Origin of the timestamps carried in chat messages.
    pub base: Instant,
    pub measure_from: Instant,
    pub until: Instant,
}

impl Window {
    fn counts(&self, started: Instant, done: Instant) -> bool {
        started >= self.measure_from && done <= self.until
    }
}

/// What a connection task hands back: its measurements and whether it is still open.
pub struct Ended {
    pub recorder: Recorder,
    pub open: bool,
}

impl Plan {
    /// Connection `i` goes to node `i mod nodes`, from local address `i mod binds`.
    fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }

    fn bind(&self, i: usize) -> Option<IpAddr> {
        (!self.binds.is_empty()).then(|| self.binds[i % self.binds.len()])
    }

    fn account(&self, i: usize) -> &Account {
        &self.accounts[i % self.accounts.len()]
    }

    /// Whether a connection of this mode is authenticated before its loop starts.
    fn authenticated(&self) -> bool {
        self.args.mode != Mode::Login
    }

    /// Opens connection `i` and, unless the mode logs in itself, authenticates it
    /// with its account's token.
    pub async fn open(&self, i: usize) -> Result<Client, Failure> {
        let limit = self.args.timeout;
        let opening = async {
            let mut client = Client::connect(self.target(i), self.bind(i)).await?;
            if self.authenticated() {
                client.token_auth(&self.account(i).token, limit).await?;
            }
            Ok(client)
        };
        match tokio::time::timeout(limit, opening).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transport("timeout".into())),
        }
    }
}

/// Creates (or logs into) the load generator's accounts and returns their tokens.
pub async fn create_accounts(
    args: &BenchArgs,
    targets: &[Target],
    binds: &[IpAddr],
    prefix: &str,
) -> Result<Vec<Account>, String> {
    // Each account costs one argon2id hash on the node: a few at a time keeps the
    // node's hash queue short.
    let concurrency = (args.accounts as usize).min(4);
    let mut accounts: Vec<(usize, Account)> = stream::iter(0..args.accounts as usize)
        .map(|i| async move {
            let name = format!("{prefix}{i}");
            let target = &targets[i % targets.len()];
            let bind = (!binds.is_empty()).then(|| binds[i % binds.len()]);
            let token = async {
                let mut client = Client::connect(target, bind).await?;
                client.register_or_login(&name, &args.account_password, args.timeout).await
            }
            .await
            .map_err(|e| format!("cannot create or log into account {name} on {}: {}", target.url, e.text()))?;
            Ok::<_, String>((i, Account { name, token }))
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    accounts.sort_by_key(|(i, _)| *i);
    Ok(accounts.into_iter().map(|(_, a)| a).collect())
}

/// Opens every connection, `--connect-concurrency` at a time. Returns the clients
/// (`None` where opening failed) and a recorder holding the set-up latency of each
/// opened connection and the errors of the others.
pub async fn open_all(plan: &Arc<Plan>) -> (Vec<Option<Client>>, Recorder) {
    let n = plan.args.connections as usize;
    let results: Vec<(usize, Duration, Result<Client, Failure>)> = stream::iter(0..n)
        .map(|i| {
            let plan = plan.clone();
            async move {
                let started = Instant::now();
                let result = plan.open(i).await;
                if result.is_ok() {
                    plan.live.open.fetch_add(1, Ordering::Relaxed);
                }
                (i, started.elapsed(), result)
            }
        })
        .buffer_unordered(plan.args.connect_concurrency as usize)
        .collect()
        .await;
    let mut clients: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    let mut recorder = Recorder::default();
    for (i, took, result) in results {
        match result {
            Ok(client) => {
                recorder.op(took);
                clients[i] = Some(client);
            }
            Err(e) => recorder.error(&format!("set-up: {}", e.text())),
        }
    }
    (clients, recorder)
}

/// The request of op number `seq` on connection `i`, and the reply type it expects.
fn request(plan: &Plan, i: usize, seq: u64, fixed: &str) -> (String, &'static str) {
    match plan.args.mode {
        Mode::TokenAuth => (fixed.to_owned(), "auth_success"),
        Mode::Login => (fixed.to_owned(), "auth_success"),
        Mode::Count => (fixed.to_owned(), "player_count"),
        Mode::SetUsername => {
            let name = format!("lg{i}-{seq}");
            (Request::SetUsername(name).to_json(), "display_name_updated")
        }
        Mode::GlobalChat | Mode::Idle | Mode::Resume => unreachable!("not a request/reply mode"),
    }
}

/// `token_auth`, `login`, `set_username`, `count`: request, reply, repeat.
pub async fn closed_loop(plan: Arc<Plan>, i: usize, mut client: Option<Client>, window: Window) -> Ended {
    let live = &plan.live;
    let mut recorder = Recorder::default();
    let account = plan.account(i);
    let fixed = match plan.args.mode {
        Mode::TokenAuth => token_auth_message(&account.token),
        Mode::Login => login_message(&account.name, &plan.args.account_password),
        Mode::Count => Request::Count.to_json(),
        _ => String::new(),
    };
    let mut seq = 0;
    loop {
        let now = Instant::now();
        if now >= window.until {
            break;
        }
        let Some(c) = client.as_mut() else {
            client = reopen(&plan, i, window, &mut recorder).await;
            continue;
        };
        let (text, expect) = request(&plan, i, seq, &fixed);
        seq += 1;
        // Never wait much past the window for a node that stopped answering.
        let limit = plan.args.timeout.min(window.until + Duration::from_secs(1) - now);
        let started = Instant::now();
        let result = c.request_within(text, expect, limit).await;
        let done = Instant::now();
        let counts = window.counts(started, done);
        match result {
            Ok(_) => {
                live.op();
                if counts {
                    recorder.op(done - started);
                }
            }
            Err(failure) => {
                live.error();
                if counts {
                    recorder.error(failure.text());
                }
                if let Failure::Transport(_) = failure {
                    client = None;
                    live.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ended { recorder, open: client.is_some() }
}

/// Reopens a failed connection; counts the failure and pauses when it cannot.
async fn reopen(plan: &Plan, i: usize, window: Window, recorder: &mut Recorder) -> Option<Client> {
    match plan.open(i).await {
        Ok(client) => {
            plan.live.open.fetch_add(1, Ordering::Relaxed);
            Some(client)
        }
        Err(failure) => {
            plan.live.error();
            let now = Instant::now();
            if now >= window.measure_from && now <= window.until {
                recorder.error(failure.text());
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
            None
        }
    }
}

/// `idle`: keeps an authenticated connection open (answering pings) until `until`.
pub async fn hold(plan: Arc<Plan>, client: Option<Client>, until: Instant) -> Ended {
    let mut recorder = Recorder::default();
    let Some(mut client) = client else {
        return Ended { recorder, open: false };
    };
    loop {
        match tokio::time::timeout_at(until, client.recv()).await {
            Err(_) => return Ended { recorder, open: true },
            Ok(Ok(_)) => {} // chat or anything else: an idle client ignores it
            Ok(Err(failure)) => {
                plan.live.error();
                plan.live.open.fetch_sub(1, Ordering::Relaxed);
                recorder.error(failure.text());
                return Ended { recorder, open: false };
            }
        }
    }
}

/// `global_chat`: a sender sends a message, then reads until its own copy comes
/// back (an op), and repeats; every connection records the delivery latency of each
/// message it receives, from the send time carried in the message.
pub async fn chat(plan: Arc<Plan>, i: usize, mut client: Option<Client>, window: Window, sender: bool) -> Ended {
    let live = &plan.live;
    let mut recorder = Recorder::default();
    let mut seq: u64 = 0;
    // The op in flight: its sequence number and send time.
    let mut pending: Option<(u64, Instant)> = None;
    let listen_until = window.until + CHAT_GRACE;
    loop {
        let now = Instant::now();
        if now >= listen_until || (sender && pending.is_none() && now >= window.until) {
            break;
        }
        let Some(c) = client.as_mut() else {
            pending = None;
            client = reopen(&plan, i, window, &mut recorder).await;
            continue;
        };
        if sender && pending.is_none() {
            let sent = Instant::now();
            let stamp = (sent - window.base).as_micros();
            let text = Request::GlobalChat(chat_text(i, seq, stamp, plan.args.message_bytes)).to_json();
            if let Err(failure) = c.send(text).await {
                live.error();
                recorder.error(failure.text());
                client = None;
                live.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            pending = Some((seq, sent));
            seq += 1;
        }
        let deadline = match pending {
            Some((_, sent)) => (sent + plan.args.timeout).min(listen_until),
            None => listen_until,
        };
        let frame = match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(text)) => text,
            Ok(Err(failure)) => {
                live.error();
                if Instant::now() <= window.until {
                    recorder.error(failure.text());
                }
                client = None;
                live.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                if let Some((_, sent)) = pending.take() {
                    if Instant::now() >= sent + plan.args.timeout {
                        live.error();
                        if window.counts(sent, sent) {
                            recorder.error("timeout waiting for the sender's own global_chat");
                        }
                    }
                }
                continue;
            }
        };
        let received = Instant::now();
        let Some((from, from_seq, sent)) = parse_chat(&frame, window.base) else {
            continue;
        };
        // Deliveries count when the message was sent inside the window.
        if sent >= window.measure_from && sent <= window.until {
            live.deliveries.fetch_add(1, Ordering::Relaxed);
            recorder.delivery(received.saturating_duration_since(sent));
        }
        if from == i && pending.is_some_and(|(s, _)| s == from_seq) {
            let (_, op_sent) = pending.take().expect("checked");
            live.op();
            if window.counts(op_sent, received) {
                recorder.ops += 1;
            }
        }
    }
    Ended { recorder, open: client.is_some() }
}

/// A load-generator chat message: sender connection, sequence, send time, then
/// padding up to `bytes` (when longer).
fn chat_text(i: usize, seq: u64, stamp: u128, bytes: usize) -> String {
    let mut text = format!("lg {i} {seq} {stamp}");
    if text.len() + 1 < bytes {
        text.push(' ');
        let pad = bytes - text.len();
        text.extend(std::iter::repeat_n('x', pad));
    }
    text
}

/// Reads a load-generator chat frame: sender connection, sequence, send time.
fn parse_chat(text: &str, base: Instant) -> Option<(usize, u64, Instant)> {
    let Some(Reply::GlobalChat(line)) = Reply::parse(text) else {
        return None;
    };
    let mut parts = line.message.strip_prefix("lg ")?.split(' ');
    let from = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let micros: u64 = parts.next()?.parse().ok()?;
    Some((from, seq, base + Duration::from_micros(micros)))
}

/// `resume`: each op drops the connection and resumes on the next node with the
/// positions processed, until `resumed`; its latency is connect + handshake +
/// `token_auth` + the replay. Frames replayed are counted as deliveries.
pub async fn resume_loop(plan: Arc<Plan>, i: usize, client: Option<Client>, window: Window) -> Ended {
    drop(client); // opened without positions: this mode opens its own
    let live = &plan.live;
    let mut recorder = Recorder::default();
    let token = plan.account(i).token.clone();
    let mut positions = serde_json::json!(true);
    let mut seq = i;
    let mut open = false;
    loop {
        let now = Instant::now();
        if now >= window.until {
            break;
        }
        let target = &plan.targets[seq % plan.targets.len()];
        seq += 1;
        let limit = plan.args.timeout.min(window.until + Duration::from_secs(1) - now);
        let started = Instant::now();
        let resumed = tokio::time::timeout(limit, resume_once(target, plan.bind(i), &token, &mut positions)).await;
        let done = Instant::now();
        let counts = window.counts(started, done);
        match resumed {
            Ok(Ok(replayed)) => {
                live.op();
                live.deliveries.fetch_add(replayed, Ordering::Relaxed);
                open = true;
                if counts {
                    recorder.op(done - started);
                }
            }
            Ok(Err(failure)) => {
                live.error();
                if counts {
                    recorder.error(failure.text());
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            Err(_) => {
                live.error();
                if counts {
                    recorder.error("timeout");
                }
            }
        }
    }
    Ended { recorder, open }
}

/// One resume: connect, `token_auth` with `positions` (the first time `true`), read
/// up to `resumed` (the first time, the reply's own positions), keeping the last
/// position of each stream. Returns the frames replayed.
async fn resume_once(
    target: &super::client::Target,
    bind: Option<IpAddr>,
    token: &str,
    positions: &mut serde_json::Value,
) -> Result<u64, Failure> {
    let mut client = Client::connect(target, bind).await?;
    let request = serde_json::json!({"type": "token_auth", "payload": {"token": token, "resume": positions.clone()}});
    let first = positions.is_boolean();
    client.send(request.to_string()).await?;
    let mut replayed = 0;
    loop {
        let text = client.recv().await?;
        let frame: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| Failure::Reply("reply is not JSON".into()))?;
        match frame["type"].as_str() {
            Some("auth_success") if first => {
                *positions = frame["positions"].clone();
                return Ok(0);
            }
            Some("auth_success") => {}
            Some("resumed") => return Ok(replayed),
            Some("auth_error" | "error") => return Err(Failure::Reply(text)),
            _ => {
                if let Some(pos) = frame["pos"].as_str() {
                    let stream = if pos.starts_with("g:") { "global" } else { "personal" };
                    positions[stream] = serde_json::json!(pos);
                    replayed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_are_padded_to_the_asked_size() {
        assert_eq!(chat_text(3, 7, 1234, 0), "lg 3 7 1234");
        assert_eq!(chat_text(3, 7, 1234, 5), "lg 3 7 1234", "never cut");
        let padded = chat_text(3, 7, 1234, 16_000);
        assert_eq!(padded.len(), 16_000);
        let mut parts = padded.split(' ');
        assert_eq!(
            [parts.next(), parts.next(), parts.next(), parts.next()],
            [Some("lg"), Some("3"), Some("7"), Some("1234")]
        );
    }
}
