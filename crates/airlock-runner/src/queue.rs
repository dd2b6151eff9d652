//! Flow control for what a client sends into a channel.
//!
//! russh (0.65) grants the client more channel window as soon as data
//! *arrives*, not when it is consumed, and its only backpressure is to stop
//! its whole session loop while a channel's message queue is full (russh
//! issue #387; a consumption-gated fix, PR #730, was not merged). A stopped
//! session loop also stops reading the CHANNEL_WINDOW_ADJUSTs that our own
//! output waits for. So any consumer that *waits* for room before taking
//! more client data closes a cycle as soon as what it feeds can only go on
//! once our output has been sent: `ssh host cat < big` (`cat` stops reading
//! stdin while its stdout pipe is full; the stdout pump waits for window; the
//! window adjust sits unread behind the stopped loop), a pty, an `-L` target
//! that echoes. That was a permanent stall (tests/exec_echo.rs), the same
//! class as the psftp upload stall of sftp/mod.rs.
//!
//! The design that makes the class impossible: **channel readers never
//! wait.** Each chunk goes into an unbounded [`ChannelQueue`] at once, and
//! the bytes not yet consumed are counted per channel in the connection's
//! [`Backlog`]. Flow control then works through the one lever russh gives,
//! `Handler::adjust_window`, which sets the window of the *next* adjustment
//! (of any channel of the connection): the full window while every channel
//! is below [`Backlog::high`] unconsumed bytes, and a token window of
//! [`TOKEN_WINDOW`] bytes while one is above it. A client whose window runs
//! out then gets two bytes per round trip until the consumer has caught up,
//! so memory stays bounded (about `high` plus one window per channel, plus
//! the trickle), and the session loop keeps reading window adjusts, so our
//! output — and with it the consumer — always moves.
//!
//! The price: the target is connection-wide in russh, so while one channel
//! is behind, the others of the same connection also trickle (slowly, never
//! stopped, which the old design did: it stopped the whole connection). Each
//! OpenSSH/PuTTY/rsync transfer uses its own connection, so this only shows
//! with several busy channels on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// The window granted while a channel is behind (russh adjusts when the
/// client's window is below half the target, so 2 is the least that still
/// grants: one more adjustment each time the client has used it up).
pub const TOKEN_WINDOW: u32 = 2;

/// Unconsumed bytes per channel above which the connection is throttled,
/// at least this much (and at least two windows).
const MIN_HIGH: usize = 32 * 1024 * 1024;

/// One connection's account of client data not yet consumed.
#[derive(Debug, Clone)]
pub struct Backlog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Channels at or above `high` unconsumed bytes.
    over: AtomicUsize,
    high: usize,
    window: u32,
}

impl Backlog {
    /// The account for a connection whose channels get `window` bytes of
    /// window when nothing is behind.
    pub fn new(window: u32) -> Self {
        let high = MIN_HIGH.max(2 * window as usize);
        Self {
            inner: Arc::new(Inner {
                over: AtomicUsize::new(0),
                high,
                window: window.max(TOKEN_WINDOW),
            }),
        }
    }

    /// The threshold, in unconsumed bytes of one channel, of throttling.
    pub fn high(&self) -> usize {
        self.inner.high
    }

    /// The window the next adjustment should grant (for
    /// `Handler::adjust_window`).
    pub fn target_window(&self) -> u32 {
        if self.inner.over.load(Ordering::Acquire) > 0 {
            TOKEN_WINDOW
        } else {
            self.inner.window
        }
    }

    /// Whether some channel of the connection is behind.
    pub fn throttled(&self) -> bool {
        self.inner.over.load(Ordering::Acquire) > 0
    }

    /// A queue for one channel's data, accounted here.
    pub fn queue<T>(&self) -> (ChannelQueue<T>, ChannelDrain<T>) {
        let count = Arc::new(Count {
            bytes: AtomicUsize::new(0),
            inner: self.inner.clone(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        (ChannelQueue { tx, count }, ChannelDrain { rx })
    }
}

/// The unconsumed bytes of one channel.
#[derive(Debug)]
struct Count {
    bytes: AtomicUsize,
    inner: Arc<Inner>,
}

impl Count {
    fn add(&self, n: usize) {
        // Each read-modify-write sees a distinct previous value, so the
        // crossings of `high` are counted exactly once each way.
        let prev = self.bytes.fetch_add(n, Ordering::AcqRel);
        let high = self.inner.high;
        if prev < high && prev + n >= high {
            self.inner.over.fetch_add(1, Ordering::AcqRel);
            tracing::debug!("a channel is {high} bytes behind: token window");
        }
    }

    fn sub(&self, n: usize) {
        let prev = self.bytes.fetch_sub(n, Ordering::AcqRel);
        let high = self.inner.high;
        if prev >= high && prev - n < high {
            self.inner.over.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("the channel caught up");
        }
    }
}

/// A queued item's share of the account; released when dropped, however the
/// item leaves the queue (taken, or dropped with the queue), so the account
/// cannot leak and leave a connection throttled.
#[derive(Debug)]
struct Debt {
    count: Arc<Count>,
    n: usize,
}

impl Drop for Debt {
    fn drop(&mut self) {
        self.count.sub(self.n);
    }
}

/// Sending half: never waits.
#[derive(Debug)]
pub struct ChannelQueue<T> {
    tx: mpsc::UnboundedSender<(T, Debt)>,
    count: Arc<Count>,
}

/// Receiving half.
#[derive(Debug)]
pub struct ChannelDrain<T> {
    rx: mpsc::UnboundedReceiver<(T, Debt)>,
}

impl<T> ChannelQueue<T> {
    /// Queue `item` weighing `size` bytes; gives it back when the receiver
    /// is gone.
    pub fn push(&self, item: T, size: usize) -> Result<(), T> {
        self.count.add(size);
        let debt = Debt {
            count: self.count.clone(),
            n: size,
        };
        self.tx.send((item, debt)).map_err(|e| e.0.0)
    }

    /// Bytes of this channel not consumed yet.
    pub fn pending(&self) -> usize {
        self.count.bytes.load(Ordering::Acquire)
    }
}

impl<T> ChannelDrain<T> {
    /// The next item; it counts as consumed from here on (the consumer
    /// holds at most this one item beyond the account).
    pub async fn recv(&mut self) -> Option<T> {
        let (item, _debt) = self.rx.recv().await?;
        Some(item)
    }

    /// The items as a stream.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(self, |mut d| async move { d.recv().await.map(|b| (b, d)) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn throttles_above_high_and_recovers() {
        let b = Backlog::new(1024);
        assert_eq!(b.target_window(), 1024);
        let high = b.high();
        let (tx, mut rx) = b.queue::<Vec<u8>>();
        tx.push(vec![0; 10], high - 1).unwrap();
        assert_eq!(b.target_window(), 1024);
        tx.push(vec![0; 10], 1).unwrap();
        assert_eq!(b.target_window(), TOKEN_WINDOW);
        // Never waits, even far above the threshold.
        tx.push(vec![0; 10], high).unwrap();
        assert_eq!(tx.pending(), 2 * high);
        rx.recv().await.unwrap();
        assert!(b.throttled());
        rx.recv().await.unwrap();
        assert!(b.throttled(), "still {} pending", tx.pending());
        rx.recv().await.unwrap();
        assert!(!b.throttled());
        assert_eq!(tx.pending(), 0);
    }

    #[tokio::test]
    async fn dropping_the_receiver_releases_the_account() {
        let b = Backlog::new(1024);
        let (tx, rx) = b.queue::<u8>();
        tx.push(1, b.high()).unwrap();
        assert!(b.throttled());
        drop(rx);
        assert!(!b.throttled());
        // Pushing to a closed queue gives the item back and keeps the
        // account at zero.
        assert_eq!(tx.push(7, b.high()), Err(7));
        assert_eq!(tx.pending(), 0);
        assert!(!b.throttled());
    }

    #[tokio::test]
    async fn one_channel_behind_throttles_the_connection() {
        let b = Backlog::new(4096);
        let (a, _ra) = b.queue::<u8>();
        let (c, mut rc) = b.queue::<u8>();
        a.push(1, 10).unwrap();
        c.push(2, b.high() + 5).unwrap();
        assert_eq!(b.target_window(), TOKEN_WINDOW);
        rc.recv().await.unwrap();
        assert_eq!(b.target_window(), 4096);
    }

    #[test]
    fn high_is_at_least_two_windows() {
        assert_eq!(Backlog::new(64 << 20).high(), 128 << 20);
        assert_eq!(Backlog::new(1).high(), MIN_HIGH);
    }
}
