//! A poll that is skipped until its source has woken the task.
//!
//! A connection's task waits on several sources at once (the socket, its queue, the
//! shutdown signal) and is woken by any of them, most often by its queue: a chat
//! delivery. Polling every source again on every wake-up costs a socket read attempt
//! (tungstenite's read path down to the registration's readiness check) and a turn of
//! the shutdown token's waiter lock each time, ~2,000 instructions per delivery
//! (bench/callgrind.sh). A [`Gate`] hands its source a waker of its own, which notes
//! that the source woke before it wakes the task: a source that last said `Pending`
//! is polled again only once it has woken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pub struct Gate {
    signal: Arc<Signal>,
    /// `signal` as a waker, made once: the source sees the same waker on every poll,
    /// so it keeps the one it has instead of replacing it.
    waker: Waker,
    /// The source's last poll said `Pending` (and so holds `waker`).
    waiting: bool,
}

struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for Gate {
    fn default() -> Gate {
        let signal = Arc::new(Signal { woken: AtomicBool::new(false), task: AtomicWaker::new() });
        Gate { waker: Waker::from(signal.clone()), signal, waiting: false }
    }
}

impl Gate {
    /// `poll`s the source, unless it is still waiting since its last `Pending` and has
    /// not woken since: then `Pending` at once. A source that was ready is polled
    /// again next time (it may have more ready without waking anyone).
    pub fn poll<T>(&mut self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        self.signal.task.register(cx.waker());
        // Cleared before the poll: a wake-up during it counts for the next one.
        let woken = self.signal.woken.swap(false, Ordering::AcqRel);
        if self.waiting && !woken {
            return Poll::Pending;
        }
        let polled = poll(&mut Context::from_waker(&self.waker));
        self.waiting = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    /// A source that counts its polls and is ready once `ready` is set (and woken).
    #[derive(Default)]
    struct Source {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: AtomicWaker,
    }

    impl Source {
        fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.waker.register(cx.waker());
            if self.ready.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }

        fn fire(&self) {
            self.ready.store(true, Ordering::Release);
            self.waker.wake();
        }
    }

    #[test]
    fn a_waiting_source_is_polled_again_only_once_it_woke() {
        let source = Source::default();
        let mut gate = Gate::default();
        let task = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&task);
        for _ in 0..5 {
            assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        }
        assert_eq!(source.polls.load(Ordering::Relaxed), 1, "re-polled without a wake-up");
        source.fire();
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_ready());
        // Ready says nothing about what comes next: polled again at once.
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        assert_eq!(source.polls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_wake_up_reaches_the_task_that_waits() {
        let source = Arc::new(Source::default());
        let fire = {
            let source = source.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                source.fire();
            })
        };
        let mut gate = Gate::default();
        tokio::time::timeout(std::time::Duration::from_secs(10), poll_fn(|cx| gate.poll(cx, |cx| source.poll(cx))))
            .await
            .expect("the gate's waker never woke the task");
        fire.await.unwrap();
    }
}
