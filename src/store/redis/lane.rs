//! The fast lane: a plain-TCP Redis connection of the node's own for the commands
//! every `token_auth` and `set_username` sends (one `MGET`, one `SETEX`) and the
//! directory's joins and leaves (`SADD`, `SREM`).
//!
//! The `redis` crate's multiplexed connection pays, per command, a packed copy of
//! it, a boxed future, a oneshot channel, a message to its driver task and a parse
//! into owned `Value`s (a `Vec` per reply and per string): about 12,000 instructions
//! and 8 allocations of the 32,000 and 18 a `token_auth` cost (issue #20). Here a
//! command is written straight into the connection's outgoing buffer, its reply is
//! copied into a reusable slot, and the caller reads the strings it needs out of it:
//! nothing is allocated once the connection has served its first commands.
//!
//! Commands are pipelined in order: the link's one task (`drive`) sends what callers
//! queued and hands each complete reply to the oldest waiting slot. A caller that
//! stops waiting (its 500 ms are up, or it was dropped) leaves its slot to be filled
//! and recycled by the task. When the connection breaks, every waiting caller gets
//! an I/O error and the next call connects anew (`RedisStore::lane_link`).
//!
//! Only for one server or a Sentinel master over plain TCP, speaking RESP2; Cluster
//! and TLS keep the `redis` crate's path for every command. The Redis version is
//! checked on the shared connection (`conn.rs`), which every node opens at start
//! for its heartbeat.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use redis::{RedisError, RedisResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long a caller waits for its reply (as the `redis` client's response timeout).
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Spare slots kept for reuse; more are made while more commands are in flight.
const SPARE_SLOTS: usize = 1024;
/// A spare slot's reply buffer is dropped when a reply made it larger than this.
const KEPT_REPLY_BYTES: usize = 4096;

/// One connection and its task (`drive`).
pub(super) struct Link {
    queue: Mutex<Queue>,
    /// Wakes the connection's task: commands were queued, or the link closed.
    wake: Notify,
    /// Stops the task even in the middle of a write (set with `broken`).
    closing: Notify,
    broken: AtomicBool,
}

#[derive(Default)]
struct Queue {
    /// Commands queued by callers, not yet written.
    out: Vec<u8>,
    /// Slots waiting for their reply, oldest first (the order the commands were queued).
    waiting: VecDeque<Arc<Slot>>,
    spare: Vec<Arc<Slot>>,
    broken: bool,
}

#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    /// The raw reply (RESP), once `done`.
    reply: Vec<u8>,
    done: Option<Result<(), io::ErrorKind>>,
    waker: Option<Waker>,
    /// The caller stopped waiting: whoever finishes the slot recycles it.
    abandoned: bool,
}

impl Link {
    /// Connects to `host:port` (within `timeout`) and starts the link's tasks; then
    /// authenticates and selects `db` when the URL asks for it.
    pub(super) async fn connect(
        host: &str,
        port: u16,
        settings: &redis::RedisConnectionInfo,
        timeout: Duration,
    ) -> RedisResult<Arc<Link>> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let link = Arc::new(Link {
            queue: Mutex::default(),
            wake: Notify::new(),
            closing: Notify::new(),
            broken: AtomicBool::new(false),
        });
        tokio::spawn(drive(link.clone(), reader, writer));
        let set_up = async {
            if let Some(password) = settings.password() {
                let auth: Vec<&[u8]> = match settings.username() {
                    Some(user) => vec![b"AUTH", user.as_bytes(), password.as_bytes()],
                    None => vec![b"AUTH", password.as_bytes()],
                };
                link.call(&auth, expect_ok).await?;
            }
            if settings.db() != 0 {
                let db = settings.db().to_string();
                link.call(&[b"SELECT", db.as_bytes()], expect_ok).await?;
            }
            Ok(())
        };
        if let Err(e) = set_up.await {
            // Refused (a wrong password, a database out of range): the task and socket go.
            link.close(io::ErrorKind::ConnectionAborted);
            return Err(e);
        }
        Ok(link)
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Sends the command `args` and reads its reply with `parse` (given the raw RESP
    /// of a reply that is not an error). Gives up after [`REPLY_TIMEOUT`].
    pub(super) async fn call<T>(&self, args: &[&[u8]], parse: impl FnOnce(&[u8]) -> RedisResult<T>) -> RedisResult<T> {
        let slot = self.send(args)?;
        let mut wait = Wait { slot, finished: false };
        match tokio::time::timeout(REPLY_TIMEOUT, &mut wait).await {
            Ok(Ok(())) => {}
            Ok(Err(kind)) => return Err(io::Error::from(kind).into()),
            Err(_) => return Err(io::Error::from(io::ErrorKind::TimedOut).into()),
        }
        let result = {
            let state = wait.slot.0.lock().unwrap();
            match state.reply.first() {
                Some(b'-') => Err(server_error(&state.reply)),
                _ => parse(&state.reply),
            }
        };
        self.recycle(&wait.slot);
        result
    }

    /// Queues the command and the slot its reply goes to, in one step (so the order
    /// of replies is the order of `waiting`).
    fn send(&self, args: &[&[u8]]) -> RedisResult<Arc<Slot>> {
        let mut queue = self.queue.lock().unwrap();
        if queue.broken {
            return Err(io::Error::from(io::ErrorKind::NotConnected).into());
        }
        let slot = queue.spare.pop().unwrap_or_default();
        let first = queue.out.is_empty();
        encode(&mut queue.out, args);
        queue.waiting.push_back(slot.clone());
        drop(queue);
        // The task empties `out` whenever it takes it: a non-empty `out` has been
        // announced already. Commands queued meanwhile go out in one write.
        if first {
            self.wake.notify_one();
        }
        Ok(slot)
    }

    /// Puts a finished slot back for the next command.
    fn recycle(&self, slot: &Arc<Slot>) {
        {
            let mut state = slot.0.lock().unwrap();
            state.reply.clear();
            // A spare slot keeps room for a usual reply, not for the largest one seen.
            if state.reply.capacity() > KEPT_REPLY_BYTES {
                state.reply = Vec::new();
            }
            state.done = None;
            state.abandoned = false;
        }
        let mut queue = self.queue.lock().unwrap();
        if queue.spare.len() < SPARE_SLOTS {
            queue.spare.push(slot.clone());
        }
    }

    /// Hands the oldest waiting slot its reply; false when no command waits for one.
    fn deliver(&self, reply: &[u8]) -> bool {
        let Some(slot) = self.queue.lock().unwrap().waiting.pop_front() else {
            return false;
        };
        let mut state = slot.0.lock().unwrap();
        state.reply.extend_from_slice(reply);
        state.done = Some(Ok(()));
        if state.abandoned {
            drop(state);
            self.recycle(&slot);
        } else if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        true
    }

    /// Marks the link broken: every waiting caller gets `kind`, new calls fail at
    /// once, the task stops and drops the socket.
    pub(super) fn close(&self, kind: io::ErrorKind) {
        let waiting = {
            let mut queue = self.queue.lock().unwrap();
            queue.broken = true;
            queue.out.clear();
            std::mem::take(&mut queue.waiting)
        };
        self.broken.store(true, Ordering::Relaxed);
        // The task drops the socket (both halves) when it sees this.
        self.closing.notify_one();
        for slot in waiting {
            let mut state = slot.0.lock().unwrap();
            state.done = Some(Err(kind));
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }
    }
}

/// A caller waiting for its slot; dropped before the reply came, it leaves the slot
/// to the link's task.
struct Wait {
    slot: Arc<Slot>,
    finished: bool,
}

impl Future for &mut Wait {
    type Output = Result<(), io::ErrorKind>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.0.lock().unwrap();
        match state.done {
            Some(done) => {
                drop(state);
                self.finished = true;
                Poll::Ready(done)
            }
            None => {
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.slot.0.lock().unwrap();
            state.abandoned = true;
            state.waker = None;
        }
    }
}

/// The link's one task, as the `redis` crate's driver: writes what callers queued (all
/// of it in one write, after the tasks ready meanwhile have had their turn) and hands
/// each reply read to the oldest waiting caller. One task for both directions: a
/// wake-up to read replies also sends what was queued meanwhile. Ends when the link
/// closes; dropping the socket closes the connection.
async fn drive(link: Arc<Link>, mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf) {
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut output = Vec::new();
    let kind = loop {
        if !link.queue.lock().unwrap().out.is_empty() {
            // Commands are queued: the other tasks that are ready to run (connections
            // whose frames arrived in the same poll of the sockets) queue theirs first,
            // and one write carries them all. A write is a system call that, on
            // loopback, also runs Redis's side of TCP: written at once, ~2 commands
            // went per write; after a yield, ~25 (token_auth × 64 side by side: 1.53 ->
            // 1.04 sendto per op, +33 % ops/s, lower p99; bench/analysis.md).
            tokio::task::yield_now().await;
        }
        {
            let mut queue = link.queue.lock().unwrap();
            if queue.broken {
                return;
            }
            std::mem::swap(&mut queue.out, &mut output);
        }
        if !output.is_empty() {
            let written = tokio::select! {
                written = writer.write_all(&output) => written,
                _ = link.closing.notified() => return,
            };
            if let Err(e) = written {
                break e.kind();
            }
            output.clear();
            continue;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        tokio::select! {
            _ = link.wake.notified() => continue,
            _ = link.closing.notified() => return,
            read = reader.read_buf(&mut input) => match read {
                Ok(0) => break io::ErrorKind::UnexpectedEof,
                Ok(_) => {}
                Err(e) => break e.kind(),
            },
        }
        let mut start = 0;
        loop {
            match reply_len(&input[start..]) {
                Ok(Some(len)) => {
                    if !link.deliver(&input[start..start + len]) {
                        // A reply nobody asked for: the stream cannot be trusted.
                        link.close(io::ErrorKind::InvalidData);
                        return;
                    }
                    start += len;
                }
                Ok(None) => break,
                Err(()) => {
                    link.close(io::ErrorKind::InvalidData);
                    return;
                }
            }
        }
        input.drain(..start);
    };
    link.close(kind);
}

/// Appends `args` as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut number = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(number.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(number.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of the complete reply at the start of `buf` (RESP2), `None` while it
/// is incomplete, `Err` when `buf` is not RESP2.
fn reply_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(line_end) = find_crlf(buf) else {
        return Ok(None);
    };
    let after_line = line_end + 2;
    match buf.first() {
        Some(b'+' | b'-' | b':') => Ok(Some(after_line)),
        Some(b'$') => match parse_int(&buf[1..line_end])? {
            -1 => Ok(Some(after_line)),
            n => {
                let end = after_line + n as usize + 2;
                if buf.len() < end {
                    Ok(None)
                } else if &buf[end - 2..end] != b"\r\n" {
                    Err(())
                } else {
                    Ok(Some(end))
                }
            }
        },
        Some(b'*') => {
            let count = parse_int(&buf[1..line_end])?;
            let mut at = after_line;
            for _ in 0..count.max(0) {
                match reply_len(&buf[at..])? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(()),
    }
}

/// Where the first line of `buf` ends (its `\r\n`), if it is all there.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|pair| pair == b"\r\n")
}

/// A RESP length: digits, or `-1`.
fn parse_int(digits: &[u8]) -> Result<i64, ()> {
    match digits {
        b"-1" => Ok(-1),
        [] => Err(()),
        _ if digits.len() > 18 => Err(()),
        _ => digits
            .iter()
            .try_fold(0i64, |n, &d| if d.is_ascii_digit() { Ok(n * 10 + i64::from(d - b'0')) } else { Err(()) }),
    }
}

/// A server's error reply as the `redis` crate reports it (kind included, so that a
/// demoted master's `READONLY` is recognized).
fn server_error(reply: &[u8]) -> RedisError {
    match redis::parse_redis_value(reply).and_then(|v| v.extract_error()) {
        Err(e) => e,
        Ok(_) => unexpected(),
    }
}

fn unexpected() -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, "unexpected reply"))
}

/// `+OK`.
pub(super) fn expect_ok(reply: &[u8]) -> RedisResult<()> {
    if reply == b"+OK\r\n" {
        Ok(())
    } else {
        Err(unexpected())
    }
}

/// An integer reply (`SADD`, `SREM`), whatever its value.
pub(super) fn expect_integer(reply: &[u8]) -> RedisResult<()> {
    match reply {
        [b':', digits @ .., b'\r', b'\n'] if parse_int(digits).is_ok() => Ok(()),
        _ => Err(unexpected()),
    }
}

/// The `N` bulk strings (each or nil) of an array reply, borrowed from it.
pub(super) fn bulks<const N: usize>(reply: &[u8]) -> RedisResult<[Option<&str>; N]> {
    let mut out = [None; N];
    let header = find_crlf(reply).ok_or_else(unexpected)?;
    if reply[0] != b'*' || parse_int(&reply[1..header]) != Ok(N as i64) {
        return Err(unexpected());
    }
    let rest = &reply[header + 2..];
    let mut at = 0;
    for item in out.iter_mut() {
        let bytes = &rest[at..];
        let len = reply_len(bytes).ok().flatten().ok_or_else(unexpected)?;
        *item = match bytes {
            [b'$', b'-', b'1', ..] => None,
            [b'$', ..] => {
                let start = find_crlf(bytes).ok_or_else(unexpected)? + 2;
                Some(std::str::from_utf8(&bytes[start..len - 2]).map_err(|_| unexpected())?)
            }
            _ => return Err(unexpected()),
        };
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_measured_whole_or_not_at_all() {
        assert_eq!(reply_len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(reply_len(b"+OK\r"), Ok(None));
        assert_eq!(reply_len(b"$-1\r\n+OK"), Ok(Some(5)));
        assert_eq!(reply_len(b"$3\r\nab\r\r\n"), Ok(Some(9)));
        assert_eq!(reply_len(b"$3\r\nab"), Ok(None));
        let mget = b"*2\r\n$5\r\na\r\nbc\r\n$-1\r\n";
        assert_eq!(reply_len(mget), Ok(Some(mget.len())));
        for cut in 0..mget.len() {
            assert_eq!(reply_len(&mget[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(reply_len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(reply_len(b"$3\r\nabcXY"), Err(()));
        assert_eq!(reply_len(b"%1\r\n"), Err(()));
        assert_eq!(reply_len(b"$x\r\n"), Err(()));
    }

    #[test]
    fn bulk_strings_are_read_out_of_an_array_reply() {
        assert_eq!(bulks::<2>(b"*2\r\n$5\r\na\r\nbc\r\n$-1\r\n").unwrap(), [Some("a\r\nbc"), None]);
        assert_eq!(bulks::<2>(b"*2\r\n$0\r\n\r\n$1\r\nx\r\n").unwrap(), [Some(""), Some("x")]);
        assert!(bulks::<2>(b"*1\r\n$1\r\nx\r\n").is_err());
        assert!(bulks::<2>(b"*2\r\n:1\r\n$1\r\nx\r\n").is_err());
    }

    #[test]
    fn commands_are_written_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SETEX", b"k", b"10", b"a b"]);
        assert_eq!(out, b"*4\r\n$5\r\nSETEX\r\n$1\r\nk\r\n$2\r\n10\r\n$3\r\na b\r\n");
    }

    #[test]
    fn simple_replies_are_checked() {
        assert!(expect_ok(b"+OK\r\n").is_ok());
        assert!(expect_ok(b"+QUEUED\r\n").is_err());
        assert!(expect_integer(b":0\r\n").is_ok());
        assert!(expect_integer(b":12\r\n").is_ok());
        assert!(expect_integer(b":x\r\n").is_err());
        assert!(expect_integer(b"$-1\r\n").is_err());
    }

    #[test]
    fn an_error_reply_keeps_its_kind() {
        let e = server_error(b"-READONLY You can't write against a read only replica.\r\n");
        assert_eq!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly));
    }
}
