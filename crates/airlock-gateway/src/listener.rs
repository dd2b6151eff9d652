//! The accept loop: HTTP/1.1 connections with a header-read timeout and caps
//! on concurrent connections, overall and per client address (slowloris and
//! connection floods).
//!
//! A connection counts from accept until its socket closes — also after an
//! upgrade, so open tunnels count. A connection over a cap is answered with
//! a short 503 (problem+json) and closed; it never waits in a queue.
//!
//! With a TLS configuration every connection is HTTPS: the handshake runs in
//! the connection's own task, after the caps admitted it, and must finish
//! within the header-read timeout (a client that never completes it holds
//! its place no longer than one that never sends headers). A refusal over a
//! cap is then a plain close: writing a 503 would need a handshake first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_proto::problem::Problem;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::store::Limit;

/// HTTP connection limits of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers — the first
    /// request and every later one on a kept-alive connection (idle
    /// connections are closed after this too).
    pub header_read_timeout: Duration,
    /// Concurrent connections overall (open tunnels included).
    pub max_connections: Limit,
    /// Concurrent connections from one client address. Behind a reverse
    /// proxy every connection comes from the proxy: raise or lift this.
    pub max_connections_per_ip: Limit,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: Limit::Max(4096),
            max_connections_per_ip: Limit::Max(256),
        }
    }
}

/// How long shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(30);

/// Refusals answered at once at most (more are just closed).
const MAX_REFUSING: usize = 64;

/// Counts connections against the caps.
#[derive(Debug)]
struct Caps {
    global: Option<Arc<Semaphore>>,
    per_ip: Option<u64>,
    by_ip: Arc<Mutex<HashMap<IpAddr, u64>>>,
}

/// A connection's place under the caps, given back on drop.
#[derive(Debug)]
struct ConnPermit {
    _global: Option<OwnedSemaphorePermit>,
    ip: IpAddr,
    by_ip: Option<Arc<Mutex<HashMap<IpAddr, u64>>>>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(by_ip) = &self.by_ip
            && let Ok(mut m) = by_ip.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was refused.
enum Refusal {
    Global,
    PerIp(u64),
}

impl Caps {
    fn new(limits: &HttpLimits) -> Self {
        let global = limits.max_connections.max().map(|n| {
            let n = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(n))
        });
        Self {
            global,
            per_ip: limits.max_connections_per_ip.max(),
            by_ip: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let global = match &self.global {
            Some(sem) => Some(
                sem.clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Global)?,
            ),
            None => None,
        };
        let by_ip = match self.per_ip {
            Some(max) => {
                let mut m = self.by_ip.lock().map_err(|_| Refusal::PerIp(max))?;
                let n = m.entry(ip).or_insert(0);
                if *n >= max {
                    if *n == 0 {
                        m.remove(&ip);
                    }
                    return Err(Refusal::PerIp(max));
                }
                *n += 1;
                Some(self.by_ip.clone())
            }
            None => None,
        };
        Ok(ConnPermit {
            _global: global,
            ip,
            by_ip,
        })
    }
}

/// A TCP stream that holds its connection permit until it is dropped (so
/// upgraded connections — tunnels — keep counting; under TLS the TLS
/// stream owns it).
struct Counted {
    tcp: TcpStream,
    _permit: ConnPermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Answers a refused connection with a 503 and closes it, reading (and
/// discarding) what the client already sent for a moment so the answer is
/// not lost to a reset. Bounded in time.
async fn refuse(mut tcp: TcpStream, msg: &str, hint: &str) {
    let problem = Problem::new("service-unavailable", "Service unavailable")
        .msg(msg)
        .hint(hint);
    let body = serde_json::to_string(&problem).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            let n = tcp.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests
/// finish (at most [`DRAIN`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let caps = Caps::new(&limits);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let tracker = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a connection reset before
                    // accept: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match caps.admit(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                let (msg, hint) = match refusal {
                    Refusal::Global => (
                        "the gateway has too many open connections".to_owned(),
                        "try again in a moment",
                    ),
                    Refusal::PerIp(max) => (
                        format!("too many open connections from your address (at most {max})"),
                        "close connections you no longer use, then try again",
                    ),
                };
                tracing::debug!(%peer, %msg, "connection refused");
                if acceptor.is_some() {
                    // No 503 without a handshake, and a handshake is work
                    // the caps exist to bound: just close.
                    drop(tcp);
                    continue;
                }
                if let Ok(p) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(tcp, &msg, hint).await;
                        drop(p);
                    });
                }
                continue;
            }
        };
        // Tunnels carry interactive SSH: no Nagle delays on any connection.
        let _ = tcp.set_nodelay(true);
        let counted = Counted {
            tcp,
            _permit: permit,
        };
        let svc = app.clone();
        let conn_id = crate::audit::ConnId::fresh();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(conn_id.clone());
            svc.clone().oneshot(req.map(axum::body::Body::new))
        });
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_read_timeout;
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let io = match acceptor {
                None => Either::Left(counted),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(counted));
                    let done = tokio::select! {
                        r = handshake => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match done {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("some connections were still open after the shutdown drain");
    }
    Ok(())
}
