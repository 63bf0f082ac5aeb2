//! Fair shares of the hash pool between clients: one address, or one network of
//! many addresses, cannot fill the pool and shut everyone else out of password login.
//!
//! - [`Lines`]: each key (an address, or a network) has at most a few logins in
//!   progress at once on this node; its further logins wait in arrival order,
//!   holding nothing. A login lines up for its address, then for its network.
//! - [`Workers`]: a free hash worker goes to the networks with a hash waiting in
//!   turn (round robin), so a login from a network with nothing in flight waits at
//!   most about one hash per other active network, however many the others queued.
//!
//! Both hand a released place straight to the next waiter, as a guard sent through a
//! oneshot channel: a waiter that gives up (its connection closed) drops the guard,
//! which passes the place on again, so no place is ever lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Per-key lines of logins in progress.
pub struct Lines {
    per_key: usize,
    lines: Mutex<HashMap<String, Line>>,
}

#[derive(Default)]
struct Line {
    held: usize,
    waiting: VecDeque<oneshot::Sender<InProgress>>,
}

/// One login in progress for a key; the next in its line goes on when dropped.
pub struct InProgress {
    /// `None` once its place has been passed on.
    lines: Option<Arc<Lines>>,
    key: String,
}

impl InProgress {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Lines {
    pub fn new(per_key: usize) -> Arc<Lines> {
        Arc::new(Lines { per_key: per_key.max(1), lines: Mutex::default() })
    }

    /// Waits until `key` has fewer than `per_key` logins in progress.
    pub async fn enter(self: &Arc<Self>, key: String) -> InProgress {
        let waiting = {
            let mut lines = self.lines.lock().unwrap();
            let line = lines.entry(key.clone()).or_default();
            if line.held < self.per_key {
                line.held += 1;
                return InProgress { lines: Some(self.clone()), key };
            }
            let (tx, rx) = oneshot::channel();
            line.waiting.push_back(tx);
            rx
        };
        waiting.await.expect("a line's waiters are answered before it is removed")
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let Some(owner) = self.lines.take() else { return };
        let mut lines = owner.lines.lock().unwrap();
        let line = lines.get_mut(&self.key).expect("a held place's line exists");
        while let Some(next) = line.waiting.pop_front() {
            let handed = InProgress { lines: Some(owner.clone()), key: self.key.clone() };
            match next.send(handed) {
                Ok(()) => return,
                // That waiter gave up: the place is still this one's to pass on.
                Err(mut unsent) => unsent.lines = None,
            }
        }
        line.held -= 1;
        if line.held == 0 {
            lines.remove(&self.key);
        }
    }
}

/// Hash workers handed to waiting keys (networks) in turn.
pub struct Workers {
    state: Mutex<Turns>,
}

struct Turns {
    free: usize,
    /// Keys with a hash waiting, in the order they get the next worker.
    ring: VecDeque<String>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Worker>>>,
}

/// A hash worker held; the next address in turn gets it when dropped.
pub struct Worker {
    /// `None` once it has been passed on.
    workers: Option<Arc<Workers>>,
}

impl Workers {
    pub fn new(count: usize) -> Arc<Workers> {
        Arc::new(Workers {
            state: Mutex::new(Turns { free: count.max(1), ring: VecDeque::new(), waiting: HashMap::new() }),
        })
    }

    /// Waits for a worker on behalf of `key`.
    pub async fn acquire(self: &Arc<Self>, key: &str) -> Worker {
        let waiting = {
            let mut turns = self.state.lock().unwrap();
            if turns.free > 0 && turns.ring.is_empty() {
                turns.free -= 1;
                return Worker { workers: Some(self.clone()) };
            }
            let (tx, rx) = oneshot::channel();
            let queue = turns.waiting.entry(key.to_owned()).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                turns.ring.push_back(key.to_owned());
            }
            rx
        };
        waiting.await.expect("waiters are answered before they are removed")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let Some(owner) = self.workers.take() else { return };
        let mut turns = owner.state.lock().unwrap();
        while let Some(key) = turns.ring.pop_front() {
            let queue = turns.waiting.get_mut(&key).expect("a key in the ring has waiters");
            let next = queue.pop_front().expect("a key in the ring has waiters");
            if queue.is_empty() {
                turns.waiting.remove(&key);
            } else {
                turns.ring.push_back(key);
            }
            match next.send(Worker { workers: Some(owner.clone()) }) {
                Ok(()) => return,
                Err(mut unsent) => unsent.workers = None,
            }
        }
        turns.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_address_holds_at_most_its_places_and_the_rest_wait_in_order() {
        let lines = Lines::new(2);
        let a1 = lines.enter("a".into()).await;
        let _a2 = lines.enter("a".into()).await;
        // Another address is not held up by a's full line.
        let _b = tokio::time::timeout(Duration::from_secs(1), lines.enter("b".into())).await.unwrap();
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (lines, order_tx) = (lines.clone(), order_tx.clone());
            tokio::spawn(async move {
                let held = lines.enter("a".into()).await;
                order_tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(held);
            });
            tokio::task::yield_now().await;
        }
        assert!(order.try_recv().is_err(), "a third login of a started while two were in progress");
        drop(a1);
        let got: Vec<i32> =
            [order.recv().await, order.recv().await, order.recv().await].into_iter().flatten().collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_place() {
        let lines = Lines::new(1);
        let held = lines.enter("a".into()).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), lines.enter("a".into())).await;
        assert!(gave_up.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), lines.enter("a".into())).await;
        assert!(again.is_ok(), "the place was lost with the waiter that gave up");
        drop(again);
        assert!(lines.lines.lock().unwrap().is_empty(), "an idle address is forgotten");
    }

    #[tokio::test]
    async fn workers_go_to_waiting_addresses_in_turn() {
        let workers = Workers::new(1);
        let first = workers.acquire("busy").await;
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        // The busy address queues five hashes, then a quiet address queues one.
        for (i, address) in ["busy", "busy", "busy", "busy", "busy", "quiet"].into_iter().enumerate() {
            let (workers, order_tx) = (workers.clone(), order_tx.clone());
            tokio::spawn(async move {
                let worker = workers.acquire(address).await;
                order_tx.send((i, address)).unwrap();
                drop(worker);
            });
            tokio::task::yield_now().await;
        }
        drop(first);
        let mut served = Vec::new();
        for _ in 0..6 {
            served.push(order.recv().await.unwrap().1);
        }
        // The quiet address is served second: after one hash of the busy one.
        assert_eq!(served, ["busy", "quiet", "busy", "busy", "busy", "busy"]);
        let turns = workers.state.lock().unwrap();
        assert_eq!((turns.free, turns.ring.len(), turns.waiting.len()), (1, 0, 0));
    }
}
