//! `eow@openssh.com` ("end of write") detection.
//!
//! When `ssh host cmd | head -1` stops reading, OpenSSH's client sends an
//! `eow@openssh.com` channel request and then waits for the server to close
//! the channel; OpenSSH's sshd closes the command's stdout so it dies of
//! SIGPIPE. russh 0.65 rejects unknown channel requests without a hook and only
//! logs `unknown channel request eow@openssh.com` (docs/ssh-server-notes.md N7).
//!
//! This module recovers the signal: the connection's TCP stream is wrapped so
//! that every read on it records the connection id in a thread-local; russh
//! processes a packet synchronously in the same poll as the read that
//! completed it, so when the warning is logged the thread-local names the
//! connection. A tracing [`Layer`] watches for that warning and notifies the
//! connection's (single) running non-pty exec channel.

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
static NEXT_REG: AtomicU64 = AtomicU64::new(1);

type Registry = HashMap<u64, Vec<(u64, Arc<Notify>)>>;
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// A fresh connection id.
pub fn new_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// A stream that tags the current thread with its connection id on every read.
#[derive(Debug)]
pub struct TaggedStream<S> {
    inner: S,
    id: u64,
}

impl<S> TaggedStream<S> {
    /// Wrap `inner` for connection `id`.
    pub fn new(inner: S, id: u64) -> Self {
        TaggedStream { inner, id }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TaggedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        CURRENT.with(|c| c.set(self.id));
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TaggedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Registration of a channel interested in eow; removed on drop.
#[derive(Debug)]
pub struct Registration {
    conn: u64,
    reg: u64,
    /// Notified when the client sent `eow@openssh.com`.
    pub notify: Arc<Notify>,
}

/// Register a running exec channel of connection `conn`.
pub fn register(conn: u64) -> Registration {
    let reg = NEXT_REG.fetch_add(1, Ordering::Relaxed);
    let notify = Arc::new(Notify::new());
    if let Ok(mut r) = REGISTRY.lock() {
        r.entry(conn).or_default().push((reg, notify.clone()));
    }
    Registration { conn, reg, notify }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut r) = REGISTRY.lock()
            && let Some(v) = r.get_mut(&self.conn)
        {
            v.retain(|(id, _)| *id != self.reg);
            if v.is_empty() {
                r.remove(&self.conn);
            }
        }
    }
}

fn fire(conn: u64) {
    let Ok(r) = REGISTRY.lock() else { return };
    match r.get(&conn).map(Vec::as_slice) {
        Some([(_, n)]) => n.notify_one(),
        Some(v) if v.len() > 1 => {
            tracing::debug!(
                "eow@openssh.com on connection {conn} with several exec channels: ignored"
            );
        }
        _ => {}
    }
}

/// The tracing layer that turns russh's "unknown channel request
/// eow@openssh.com" warning into a notification.
#[derive(Debug, Default, Clone, Copy)]
pub struct EowLayer;

/// The layer (add it to the subscriber next to the formatting layer).
pub fn layer() -> EowLayer {
    EowLayer
}

struct MessageIs(bool);

impl Visit for MessageIs {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && value.contains("unknown channel request eow@openssh.com") {
            self.0 = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message"
            && format!("{value:?}").contains("unknown channel request eow@openssh.com")
        {
            self.0 = true;
        }
    }
}

impl<S: Subscriber> Layer<S> for EowLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::WARN {
            return;
        }
        let mut v = MessageIs(false);
        event.record(&mut v);
        if v.0 {
            let conn = CURRENT.with(Cell::get);
            if conn != 0 {
                fire(conn);
            }
        }
    }
}
