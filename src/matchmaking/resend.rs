//! `match_found` again for a session that begins while its account's match is
//! joinable (a player back on a new connection, as in the original's flow).
//!
//! Every fresh session must ask, and almost none has a match: so the asks of all the
//! sessions that began since the last read are answered by one read of the queue
//! store ([`MatchQueue::joinable_many`]), by one task, instead of a task and a round
//! trip per session (issue #20: a reconnect spent ~9k instructions on it). An answer
//! is never waited for by the auth reply, which is written first.

use std::sync::Arc;
use std::time::Duration;

use hyper_tungstenite::tungstenite::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::FORM_EVERY;
use crate::error::store_skipped;
use crate::outbox::{Outbox, Outgoing};
use crate::store::{Joinable, MatchQueue};

/// Most sessions answered by one read.
const BATCH: usize = 256;
/// Asks waiting for the resend task before an ask waits in a task of its own.
const BACKLOG: usize = 4096;

type Ask = (String, Outbox);

/// Where sessions ask; cheap to clone.
#[derive(Clone)]
pub struct Resends {
    tx: mpsc::Sender<Ask>,
}

/// The asks, for [`run`].
pub struct Asks(mpsc::Receiver<Ask>);

pub fn channel() -> (Resends, Asks) {
    let (tx, rx) = mpsc::channel(BACKLOG);
    (Resends { tx }, Asks(rx))
}

impl Resends {
    /// Sends `account`'s session (`outbox`) the `match_found` of its match, if one is
    /// joinable, or once the match being formed for it is announced.
    pub fn ask(&self, account: String, outbox: Outbox) {
        if let Err(mpsc::error::TrySendError::Full(ask)) = self.tx.try_send((account, outbox)) {
            // A reconnect storm outran the reads: this one waits its turn, not lost.
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(ask).await });
        }
    }
}

/// Answers the asks in batches until shutdown. `ticket_ttl_secs` bounds how long a
/// session waits for a match being formed.
pub async fn run(asks: Asks, queue: Arc<dyn MatchQueue>, ticket_ttl_secs: u64, shutdown: CancellationToken) {
    let Asks(mut rx) = asks;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
        }
        batch.retain(|(_, outbox): &Ask| !outbox.is_closed());
        let accounts: Vec<&str> = batch.iter().map(|(account, _)| account.as_str()).collect();
        match queue.joinable_many(&accounts).await {
            Ok(answers) => {
                for ((account, outbox), answer) in batch.drain(..).zip(answers) {
                    match answer {
                        Joinable::Found(frame) => _ = outbox.offer(Outgoing::Frame(Message::text(frame))),
                        Joinable::Forming => {
                            tokio::spawn(await_forming(queue.clone(), account, outbox, ticket_ttl_secs));
                        }
                        Joinable::None => {}
                    }
                }
            }
            Err(e) => {
                store_skipped(e, "match_found not sent again");
                batch.clear();
            }
        }
    }
}

/// A match is being formed for the account (rare: one allocation try long): asks
/// again every formation round until it is announced, gone, or the session is.
async fn await_forming(queue: Arc<dyn MatchQueue>, account: String, outbox: Outbox, ticket_ttl_secs: u64) {
    // A forming match lasts at most one allocation try; its pending state at most this.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(ticket_ttl_secs);
    while !outbox.is_closed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(FORM_EVERY).await;
        match queue.joinable(&account).await {
            Ok(Joinable::Found(frame)) => {
                outbox.offer(Outgoing::Frame(Message::text(frame)));
                return;
            }
            Ok(Joinable::Forming) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox;
    use crate::store::memory::MemoryShared;
    use crate::store::Ticket;

    /// A reconnect storm larger than the backlog: every session still gets its
    /// `match_found`, and one with no match gets nothing.
    #[tokio::test]
    async fn a_storm_past_the_backlog_loses_no_ask() {
        let store = Arc::new(MemoryShared::default());
        let ticket = Ticket {
            account: "a".into(),
            username: "a".into(),
            queue: "q".into(),
            node: "n".into(),
            conn: 1,
            seq: 0,
            joined_ms: 1,
            tries: 0,
            left: false,
            grace_secs: 0,
            away_until_ms: None,
        };
        store.join(&ticket, 0).await.unwrap();
        store.take("q", 1, "m", "n", 60, &[]).await.unwrap();
        assert!(store.start("m", "s", &[("a".into(), "found".into())], 60).await.unwrap());

        let (resends, asks) = channel();
        let sessions = BACKLOG + 100;
        let mut inboxes = Vec::new();
        for _ in 0..sessions {
            let (tx, rx) = outbox::channel(4);
            resends.ask("a".into(), tx);
            inboxes.push(rx);
        }
        let (tx, mut without_match) = outbox::channel(4);
        resends.ask("b".into(), tx);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(asks, store, 60, shutdown.clone()));
        for inbox in &mut inboxes {
            match inbox.recv().await {
                Ok(Outgoing::Frame(frame)) => assert_eq!(frame.to_text().unwrap(), "found"),
                other => panic!("expected match_found, got {other:?}"),
            }
        }
        let nothing = tokio::time::timeout(Duration::from_millis(200), without_match.recv()).await;
        assert!(nothing.is_err(), "a session without a match was sent {nothing:?}");
        shutdown.cancel();
        task.await.unwrap();
    }
}
